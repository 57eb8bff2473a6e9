"""The seed's example end to end: the RAG ChatAgent of python/examples/rag_agent (the vector index queried inside
predict with the user's client), logged with MLflow's `UserAuthPolicy`, deployed,
and asked the same question by users who may read different documents.

The documents table has a row filter (public documents, plus those of the reader's department); the delta-sync index
over it is filtered by that row filter for whoever queries it, so each user's answer is grounded in their own
documents. The built-in models answer (embeddings and chat), so `deputy models install` must have run. The last test
invokes databricks-langchain's `VectorSearchRetrieverTool` directly, outside any agent, with each user's own client.
"""

import pytest
from agent_helpers import RAG_INDEX as INDEX
from agent_helpers import RAG_QUESTION as QUESTION
from agent_helpers import ask, rag_scenario, set_obo
from databricks.sdk.service import iam


@pytest.fixture(scope="module")
def rag(server, admin, tmp_path_factory):
    tokens = {}
    for name, group in [("ann@example.com", "engineering"), ("ben@example.com", "sales"), ("cid@example.com", None)]:
        user = admin.users.create(user_name=name)
        tokens[name] = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
        if group:
            admin.groups.create(display_name=group, members=[iam.ComplexValue(value=user.id)])
    # ann and ben may query the index; cid may query the agent but not the index.
    rag_scenario(server, admin, tmp_path_factory.mktemp("rag") / "model", ["ann@example.com", "ben@example.com"])
    return tokens


def _reply(server, token):
    response = ask(server, token, "rag-agent", QUESTION, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["messages"][-1]["content"], body["custom_outputs"]


def test_each_user_gets_an_answer_grounded_in_their_own_documents(server, rag):
    ann_answer, ann = _reply(server, rag["ann@example.com"])
    ben_answer, ben = _reply(server, rag["ben@example.com"])
    assert ann["user"] == "ann@example.com" and ben["user"] == "ben@example.com"
    assert ann["sources"] and ben["sources"]
    assert set(ann["sources"]) <= {"Holiday calendar", "Falcon launch plan", "Falcon architecture"}, ann
    assert set(ben["sources"]) <= {"Holiday calendar", "Acme renewal", "Pricing change"}, ben
    assert "Falcon launch plan" in ann["sources"] and "Acme renewal" in ben["sources"]
    assert ann_answer and ben_answer


def test_a_user_without_select_on_the_index_gets_the_best_effort_answer(server, rag):
    answer, cid = _reply(server, rag["cid@example.com"])
    assert cid["user"] == "cid@example.com"
    assert cid["sources"] == []
    assert "PermissionDenied" in cid["skipped_search"] or "PERMISSION_DENIED" in cid["skipped_search"], cid
    assert answer


def test_with_obo_disabled_the_user_client_fails_as_documented(server, rag):
    set_obo(server, False)
    try:
        response = ask(server, rag["ann@example.com"], "rag-agent", QUESTION)
    finally:
        set_obo(server, True)
    # The seed's agent does not catch the user client's failure, so the request fails with the runtime's error.
    assert response.status_code >= 400, response.text
    assert "credentials" in response.text.lower() or "token" in response.text.lower(), response.text


def test_the_retriever_tool_invoked_directly_as_each_user(server, rag):
    from databricks.sdk import WorkspaceClient
    from databricks_langchain import VectorSearchRetrieverTool

    def tool_for(user):
        client = WorkspaceClient(host=server.host, token=rag[user], auth_type="pat")
        return VectorSearchRetrieverTool(index_name=INDEX, columns=["id", "title"], num_results=5, workspace_client=client)

    ann = tool_for("ann@example.com").invoke({"query": QUESTION})
    ben = tool_for("ben@example.com").invoke({"query": QUESTION})
    assert "Falcon launch plan" in ann and "Acme renewal" not in ann and "Pricing change" not in ann
    assert "Acme renewal" in ben and "Falcon" not in ben
    with pytest.raises(Exception) as refused:
        tool_for("cid@example.com")
    assert "PERMISSION_DENIED" in str(refused.value) or "PermissionDenied" in type(refused.value).__name__
