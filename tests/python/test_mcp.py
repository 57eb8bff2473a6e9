"""Deputy's managed MCP servers with real clients: the official `mcp` SDK over streamable HTTP and
`databricks_mcp.DatabricksMCPClient`.

On the session's server: alice (group mcp-engineering), bob (mcp-sales) and carol (no department, no grants), each with
a personal access token; a documents table whose row filter shows everyone's documents plus those of the reader's
department and whose `code` column is masked outside engineering; two delta-sync vector indexes over it (alice may
read both, bob one); two UC SQL functions (alice may execute both, bob one); a Genie space over the table whose model
is a test double. Each user lists the tools their grants allow and gets their own rows from the same call; carol
lists nothing and a call by name is refused.

On a server of its own (the bootstrap admin's local password is a workspace-wide sign-in setting): the MCP
authorization profile. An unauthenticated request gets 401 naming the protected resource metadata; the SDK's
`OAuthClientProvider` then registers itself, sends the person through Deputy's sign-in and consent (played here with
`requests`), and gets a token bound to that one MCP server, which every other server and the REST API refuse; a
token without the server's scopes gets 403 `insufficient_scope`, and the SDK's step-up re-authorization fixes it.
"""

import base64
import hashlib
import json
import os
import re
import secrets
import time
import urllib.parse
from datetime import timedelta
from pathlib import Path

import anyio
import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import iam, serving, sql
from databricks.sdk.service import vectorsearch as vs

from conftest import running_deputy
from mcp_helpers import (
    Browser,
    MemoryTokenStorage,
    assert_refused,
    audit_events,
    call,
    data_of,
    in_session,
    in_thread,
    raw_post,
    sql_writer,
    text_of,
    tools,
)

CATALOG, SCHEMA = "mcp_demo", "docs"
TABLE = f"{CATALOG}.{SCHEMA}.documents"
DOCS_INDEX, TITLES_INDEX = f"{CATALOG}.{SCHEMA}.documents_index", f"{CATALOG}.{SCHEMA}.titles_index"
ALICE, BOB, CAROL = "mcp-alice@example.com", "mcp-bob@example.com", "mcp-carol@example.com"
ENGINEERING, SALES = "mcp-engineering", "mcp-sales"
DOCUMENTS = [
    (1, "Holiday calendar", "everyone", "The office is closed on the first Monday of May.", "H-100"),
    (2, "Falcon launch plan", ENGINEERING, "Project Falcon, our new search engine, launches next quarter.", "F-200"),
    (3, "Falcon architecture", ENGINEERING, "Falcon shards the index across twelve storage nodes.", "F-300"),
    (4, "Acme renewal", SALES, "Acme renews its contract next quarter for two million dollars.", "A-400"),
    (5, "Pricing change", SALES, "List prices rise by five percent next quarter.", "P-500"),
    (6, "Beta customers", SALES, "Three customers join the beta next quarter.", "B-600"),
]
VISIBLE = {
    ALICE: {title for _, title, dept, _, _ in DOCUMENTS if dept in ("everyone", ENGINEERING)},
    BOB: {title for _, title, dept, _, _ in DOCUMENTS if dept in ("everyone", SALES)},
}
CODES = {title: code for _, title, _, _, code in DOCUMENTS}
TITLES = {i: title for i, title, _, _, _ in DOCUMENTS}
MASKED = "masked"
QUESTION = "What are we launching next quarter?"
COUNT_QUESTION = "How many documents are there?"
COUNT_SQL = f"SELECT COUNT(*) AS n FROM {TABLE}"
SQL_TOOL = "execute_sql_read_only"
TIMEOUT_SECONDS = 60


def tool_name(full_name):
    return full_name.replace(".", "__")


def run_sql(w, warehouse, statement):
    response = w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse, wait_timeout="30s")
    assert response.status.state == sql.StatementState.SUCCEEDED, (statement, response.status)
    return response


def wait_until_ready(admin, index):
    deadline = time.monotonic() + TIMEOUT_SECONDS
    while True:
        status = admin.vector_search_indexes.get_index(index).status
        if status.ready and status.indexed_row_count == len(DOCUMENTS):
            return
        assert time.monotonic() < deadline, f"{index} not ready: {status}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(server, admin):
    """The users, their tokens and everything they may (or may not) use; see the module's docstring."""
    warehouse = admin.warehouses.create(name="mcp-warehouse").result(timeout=timedelta(seconds=TIMEOUT_SECONDS)).id
    tokens, ids = {}, {}
    for name in (ALICE, BOB, CAROL):
        user = admin.users.create(user_name=name)
        ids[name] = user.id
        tokens[name] = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
    admin.groups.create(display_name=ENGINEERING, members=[iam.ComplexValue(value=ids[ALICE])])
    admin.groups.create(display_name=SALES, members=[iam.ComplexValue(value=ids[BOB])])
    rows = ", ".join(f"({i}, '{title}', '{dept}', '{body}', '{code}')" for i, title, dept, body, code in DOCUMENTS)
    for statement in [
        f"CREATE CATALOG {CATALOG}",
        f"CREATE SCHEMA {CATALOG}.{SCHEMA}",
        f"CREATE TABLE {TABLE} (id INT, title STRING, department STRING, body STRING, code STRING)",
        f"INSERT INTO {TABLE} VALUES {rows}",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.readable(department STRING) RETURNS BOOLEAN "
        "RETURN department = 'everyone' OR is_account_group_member(department) OR is_account_group_member('admins')",
        f"ALTER TABLE {TABLE} SET ROW FILTER {CATALOG}.{SCHEMA}.readable ON (department)",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.hide_code(code STRING) RETURNS STRING "
        f"RETURN CASE WHEN is_account_group_member('{ENGINEERING}') OR is_account_group_member('admins') "
        f"THEN code ELSE '{MASKED}' END",
        f"ALTER TABLE {TABLE} ALTER COLUMN code SET MASK {CATALOG}.{SCHEMA}.hide_code",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.stamp(note STRING) RETURNS STRING "
        "COMMENT 'Stamps a note with the caller' RETURN concat(upper(note), ':', current_user())",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.member_of(team STRING) RETURNS BOOLEAN "
        "COMMENT 'Whether the caller is in a team' RETURN is_account_group_member(team)",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.documents_of(dept STRING) "
        "RETURNS TABLE (title STRING, code STRING) COMMENT 'The documents of a department' "
        f"RETURN SELECT title, code FROM {TABLE} WHERE department = dept ORDER BY id",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `users`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `users`",
        f"GRANT SELECT ON TABLE {TABLE} TO `{ALICE}`",
        f"GRANT SELECT ON TABLE {TABLE} TO `{BOB}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.stamp TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.stamp TO `{BOB}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.member_of TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.documents_of TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.documents_of TO `{BOB}`",
    ]:
        run_sql(admin, warehouse, statement)
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[
            iam.AccessControlRequest(user_name=name, permission_level=iam.PermissionLevel.CAN_USE) for name in (ALICE, BOB)
        ],
    )
    with sql_writer({COUNT_QUESTION: COUNT_SQL}) as model_url:
        external = serving.ExternalModel(
            provider=serving.ExternalModelProvider.OPENAI,
            name="mcp-sql-writer",
            task="llm/v1/chat",
            openai_config=serving.OpenAiConfig(openai_api_base=model_url, openai_api_key_plaintext="sk-test-double"),
        )
        admin.serving_endpoints.create(
            name="mcp-genie-sql-writer",
            config=serving.EndpointCoreConfigInput(
                name="mcp-genie-sql-writer",
                served_entities=[serving.ServedEntityInput(name="mcp-sql-writer", external_model=external)],
            ),
        )
        serialized = {
            "version": 1,
            "data_sources": {"tables": [{"identifier": TABLE}]},
            "instructions": {"example_question_sqls": [{"question": [COUNT_QUESTION], "sql": [COUNT_SQL]}]},
            "deputy": {"serving_endpoint_name": "mcp-genie-sql-writer"},
        }
        space = admin.genie.create_space(
            warehouse_id=warehouse, serialized_space=json.dumps(serialized), title="Documents", description="Our documents"
        )
        admin.permissions.update(
            request_object_type="genie",
            request_object_id=space.space_id,
            access_control_list=[
                iam.AccessControlRequest(user_name=name, permission_level=iam.PermissionLevel.CAN_RUN) for name in (ALICE, BOB)
            ],
        )
        yield {"warehouse": warehouse, "tokens": tokens, "space_id": space.space_id}


@pytest.fixture(scope="module")
def indexes(admin, world):
    """Two delta-sync indexes over the documents, embedded by the built-in model: alice may read both, bob one."""
    if not (Path(os.environ.get("DEPUTY_MODEL_CACHE") or Path.home() / ".cache/deputy/models") / "all-minilm-l6-v2").is_dir():
        pytest.skip("the built-in embedding model is not installed (`deputy models install`)")
    admin.vector_search_endpoints.create_endpoint_and_wait(
        name="mcp-vs", endpoint_type=vs.EndpointType.STANDARD, timeout=timedelta(seconds=TIMEOUT_SECONDS))
    for index, column in ((DOCS_INDEX, "body"), (TITLES_INDEX, "title")):
        admin.vector_search_indexes.create_index(
            name=index,
            endpoint_name="mcp-vs",
            primary_key="id",
            index_type=vs.VectorIndexType.DELTA_SYNC,
            delta_sync_index_spec=vs.DeltaSyncVectorIndexSpecRequest(
                source_table=TABLE,
                pipeline_type=vs.PipelineType.TRIGGERED,
                embedding_source_columns=[vs.EmbeddingSourceColumn(name=column, embedding_model_endpoint_name="deputy-embed-minilm")],
            ),
        )
        wait_until_ready(admin, index)
    for statement in [
        f"GRANT SELECT ON TABLE {DOCS_INDEX} TO `{ALICE}`",
        f"GRANT SELECT ON TABLE {DOCS_INDEX} TO `{BOB}`",
        f"GRANT SELECT ON TABLE {TITLES_INDEX} TO `{ALICE}`",
    ]:
        run_sql(admin, world["warehouse"], statement)
    return [DOCS_INDEX, TITLES_INDEX]


def mcp_url(server, path):
    return server.url(f"/api/2.0/mcp/{path}")


# --- vector search -------------------------------------------------------------------------------------------------


def test_vector_search_lists_the_indexes_each_user_may_read(server, world, indexes):
    url = mcp_url(server, f"vector-search/{CATALOG}/{SCHEMA}")
    alice = tools(url, world["tokens"][ALICE])
    bob = tools(url, world["tokens"][BOB])
    assert set(alice) == {tool_name(DOCS_INDEX), tool_name(TITLES_INDEX)}
    assert set(bob) == {tool_name(DOCS_INDEX)}
    schema = alice[tool_name(DOCS_INDEX)].inputSchema
    assert "query" in schema["properties"] and "query" in schema.get("required", []), schema
    assert tools(url, world["tokens"][CAROL]) == {}
    # A server for one index offers only that one, and only to those who may read it.
    one = f"{url}/titles_index"
    assert set(tools(one, world["tokens"][ALICE])) == {tool_name(TITLES_INDEX)}
    assert tools(one, world["tokens"][BOB]) == {}


def test_vector_search_answers_each_user_with_the_rows_the_row_filter_admits(server, world, indexes):
    url = mcp_url(server, f"vector-search/{CATALOG}/{SCHEMA}")
    arguments = {"query": QUESTION, "num_results": 10}
    seen = {}
    for user in (ALICE, BOB):
        rows = data_of(url, world["tokens"][user], tool_name(DOCS_INDEX), arguments)
        assert isinstance(rows, list) and rows, rows
        assert all("score" in row and "id" in row for row in rows), rows
        seen[user] = {TITLES[int(row["id"])] for row in rows}
        assert seen[user] <= VISIBLE[user], (user, rows)
    assert "Falcon launch plan" in seen[ALICE] and "Acme renewal" in seen[BOB], seen
    # `filters` narrow within what the row filter admits.
    filtered = data_of(url, world["tokens"][BOB], tool_name(DOCS_INDEX),
                       {"query": QUESTION, "num_results": 10, "filters": {"department": "everyone"}})
    assert [int(row["id"]) for row in filtered] == [1], filtered


def test_vector_search_answers_the_rows_columns_with_the_mask_applied(server, world, indexes):
    """A hit is the row (its columns and score), not only its key: a model cannot read an id. The masked column shows
    each user what SQL shows them."""
    url = mcp_url(server, f"vector-search/{CATALOG}/{SCHEMA}")
    arguments = {"query": QUESTION, "num_results": 10}
    alice = data_of(url, world["tokens"][ALICE], tool_name(DOCS_INDEX), arguments)
    bob = data_of(url, world["tokens"][BOB], tool_name(DOCS_INDEX), arguments)
    for row in alice + bob:
        assert {"id", "title", "department", "body", "code", "score"} <= set(row), row
        assert row["title"] == TITLES[int(row["id"])], row
    assert [row["code"] for row in alice] == [CODES[row["title"]] for row in alice], alice
    leaked = [row for row in bob if row["code"] != MASKED]
    assert not leaked, f"the mask on `code` does not hold for bob: {leaked}"


def test_a_user_without_select_lists_no_index_and_a_call_by_name_is_refused(server, world, indexes):
    url = mcp_url(server, f"vector-search/{CATALOG}/{SCHEMA}")
    refusal = assert_refused(url, world["tokens"][CAROL], tool_name(DOCS_INDEX), {"query": QUESTION})
    assert "Holiday" not in refusal and "Falcon" not in refusal, refusal
    # bob may read one index, not the other.
    refusal = assert_refused(url, world["tokens"][BOB], tool_name(TITLES_INDEX), {"query": QUESTION})
    assert "Acme" not in refusal, refusal


# --- UC functions --------------------------------------------------------------------------------------------------


def test_functions_lists_what_each_user_may_execute(server, world):
    url = mcp_url(server, f"functions/{CATALOG}/{SCHEMA}")
    stamp, member_of = tool_name(f"{CATALOG}.{SCHEMA}.stamp"), tool_name(f"{CATALOG}.{SCHEMA}.member_of")
    documents_of = tool_name(f"{CATALOG}.{SCHEMA}.documents_of")
    alice = tools(url, world["tokens"][ALICE])
    assert set(alice) == {stamp, member_of, documents_of}, \
        "the policies' functions (readable, hide_code) are not alice's to execute"
    assert set(tools(url, world["tokens"][BOB])) == {stamp, documents_of}
    assert tools(url, world["tokens"][CAROL]) == {}
    assert set(tools(f"{url}/member_of", world["tokens"][ALICE])) == {member_of}
    assert tools(f"{url}/member_of", world["tokens"][BOB]) == {}
    schema = alice[stamp].inputSchema
    assert set(schema["properties"]) == {"note"} and schema.get("required") == ["note"], schema
    assert "caller" in (alice[stamp].description or ""), alice[stamp]


def test_a_function_runs_as_its_caller_and_unexecutable_ones_are_refused(server, world):
    url = mcp_url(server, f"functions/{CATALOG}/{SCHEMA}")
    stamp, member_of = tool_name(f"{CATALOG}.{SCHEMA}.stamp"), tool_name(f"{CATALOG}.{SCHEMA}.member_of")
    for user in (ALICE, BOB):
        result, error = call(url, world["tokens"][user], stamp, {"note": "hello"})
        assert error is None and not result.isError, (error, result)
        assert f"HELLO:{user}" in text_of(result)
    result, error = call(url, world["tokens"][ALICE], member_of, {"team": ENGINEERING})
    assert error is None and not result.isError, (error, result)
    assert "true" in text_of(result).lower()
    assert_refused(url, world["tokens"][BOB], member_of, {"team": SALES})
    refusal = assert_refused(url, world["tokens"][CAROL], stamp, {"note": "hello"})
    assert "HELLO" not in refusal, refusal


def test_a_table_function_answers_each_caller_with_their_rows(server, world):
    """`documents_of` reads the table with its owner's rights; the row filter and the mask still answer for the caller,
    though neither alice nor bob could tell the function's owner from themselves."""
    url = mcp_url(server, f"functions/{CATALOG}/{SCHEMA}")
    documents_of = tool_name(f"{CATALOG}.{SCHEMA}.documents_of")
    answers = {}
    for user in (ALICE, BOB):
        for dept in ("everyone", ENGINEERING, SALES):
            result, error = call(url, world["tokens"][user], documents_of, {"dept": dept})
            assert error is None and not result.isError, (user, dept, error, result)
            answers[user, dept] = text_of(result)
    assert "Holiday calendar" in answers[ALICE, "everyone"] and "H-100" in answers[ALICE, "everyone"]
    assert "Holiday calendar" in answers[BOB, "everyone"] and "H-100" not in answers[BOB, "everyone"]
    assert MASKED in answers[BOB, "everyone"]
    assert "Falcon launch plan" in answers[ALICE, ENGINEERING] and "F-200" in answers[ALICE, ENGINEERING]
    assert "Falcon" not in answers[BOB, ENGINEERING], answers[BOB, ENGINEERING]
    assert "Acme" not in answers[ALICE, SALES], answers[ALICE, SALES]
    assert "Acme renewal" in answers[BOB, SALES] and "A-400" not in answers[BOB, SALES]
    assert_refused(url, world["tokens"][CAROL], documents_of, {"dept": "everyone"})


# --- SQL -----------------------------------------------------------------------------------------------------------


def test_sql_answers_each_user_with_their_rows_and_masked_values(server, world):
    url = mcp_url(server, "sql")
    listed = tools(url, world["tokens"][ALICE])
    assert SQL_TOOL in listed
    assert "query" in listed[SQL_TOOL].inputSchema["properties"]
    query = {"query": f"SELECT id, title, code FROM {TABLE} ORDER BY id"}
    answers = {}
    for user in (ALICE, BOB):
        data = data_of(url, world["tokens"][user], SQL_TOOL, query)
        assert data["columns"] == ["id", "title", "code"], data
        answers[user] = [[str(value) for value in row] for row in data["rows"]]
    assert answers[ALICE] == [[str(i), title, code] for i, title, dept, _, code in DOCUMENTS
                              if dept in ("everyone", ENGINEERING)], answers
    assert answers[BOB] == [[str(i), title, MASKED] for i, title, dept, _, _ in DOCUMENTS
                            if dept in ("everyone", SALES)], answers


def test_sql_refuses_writes_even_from_the_tables_owner(server, admin, world):
    url = mcp_url(server, "sql")
    assert data_of(url, server.admin_token, SQL_TOOL, {"query": f"SELECT COUNT(*) AS n FROM {TABLE}"})["rows"] == [
        [str(len(DOCUMENTS))]]
    for statement in [
        f"INSERT INTO {TABLE} VALUES (7, 'Injected', 'everyone', 'x', 'X-700')",
        f"DELETE FROM {TABLE}",
        f"DROP TABLE {TABLE}",
        f"SELECT 1; DELETE FROM {TABLE}",
        f"GRANT SELECT ON TABLE {TABLE} TO `{CAROL}`",
    ]:
        assert_refused(url, server.admin_token, SQL_TOOL, {"query": statement})
    count = run_sql(admin, world["warehouse"], f"SELECT COUNT(*) FROM {TABLE}").result.data_array
    assert count == [[str(len(DOCUMENTS))]]
    # carol holds no SELECT: the table does not exist for her.
    refusal = assert_refused(url, world["tokens"][CAROL], SQL_TOOL, {"query": f"SELECT title FROM {TABLE}"})
    assert "Holiday" not in refusal


# --- Genie ---------------------------------------------------------------------------------------------------------


def scalars(value):
    """Every scalar inside a JSON value, as text."""
    if isinstance(value, dict):
        return [text for item in value.values() for text in scalars(item)]
    if isinstance(value, list):
        return [text for item in value for text in scalars(item)]
    return [str(value)]


def ask_genie(url, token, space_id):
    """query_space, then poll_response until the message is done; returns the last answer's JSON."""

    async def work(session):
        result = await session.call_tool(f"query_space_{space_id}", {"query": COUNT_QUESTION})
        assert not result.isError, text_of(result)
        answer = json.loads(text_of(result))
        assert answer["conversation_id"] and answer["message_id"], answer
        deadline = time.monotonic() + TIMEOUT_SECONDS
        while answer["status"] not in ("COMPLETED", "FAILED", "CANCELLED"):
            assert time.monotonic() < deadline, answer
            await anyio.sleep(0.3)
            polled = await session.call_tool(
                f"poll_response_{space_id}",
                {"conversation_id": answer["conversation_id"], "message_id": answer["message_id"]},
            )
            assert not polled.isError, text_of(polled)
            answer = json.loads(text_of(polled))
        return answer

    return in_session(url, work, token=token, timeout=TIMEOUT_SECONDS + 30)


def test_genie_tools_answer_each_user_with_their_rights(server, world):
    space_id = world["space_id"]
    url = mcp_url(server, f"genie/{space_id}")
    assert set(tools(url, world["tokens"][ALICE])) == {f"query_space_{space_id}", f"poll_response_{space_id}"}
    answers = {user: ask_genie(url, world["tokens"][user], space_id) for user in (ALICE, BOB)}
    for user, answer in answers.items():
        assert answer["status"] == "COMPLETED", answer
    expected = {ALICE: str(len(VISIBLE[ALICE])), BOB: str(len(VISIBLE[BOB]))}
    assert expected[ALICE] in scalars(answers[ALICE]) and expected[BOB] not in scalars(answers[ALICE]), answers
    assert expected[BOB] in scalars(answers[BOB]) and expected[ALICE] not in scalars(answers[BOB]), answers
    # carol may not run the space.
    assert tools(url, world["tokens"][CAROL]) == {}
    assert_refused(url, world["tokens"][CAROL], f"query_space_{space_id}", {"query": COUNT_QUESTION})


# --- databricks-mcp and the audit ----------------------------------------------------------------------------------


def test_databricks_mcp_client_lists_and_calls_a_tool(server, world):
    from databricks_mcp import DatabricksMCPClient

    alice = WorkspaceClient(host=server.host, token=world["tokens"][ALICE], auth_type="pat")
    functions = DatabricksMCPClient(mcp_url(server, f"functions/{CATALOG}/{SCHEMA}"), alice)
    listed = in_thread(functions.list_tools, TIMEOUT_SECONDS)
    assert {tool.name for tool in listed} == {
        tool_name(f"{CATALOG}.{SCHEMA}.{name}") for name in ("stamp", "member_of", "documents_of")
    }
    result = in_thread(lambda: functions.call_tool(tool_name(f"{CATALOG}.{SCHEMA}.stamp"), {"note": "via sdk"}), TIMEOUT_SECONDS)
    assert not result.isError and f"VIA SDK:{ALICE}" in text_of(result), result
    # The resources an agent logged with these tools declares: the functions, by their full names.
    resources = in_thread(functions.get_databricks_resources, TIMEOUT_SECONDS)
    assert sorted(resource.name for resource in resources) == [
        f"{CATALOG}.{SCHEMA}.{name}" for name in ("documents_of", "member_of", "stamp")
    ]


def test_databricks_mcp_client_searches_an_index(server, world, indexes):
    from databricks_mcp import DatabricksMCPClient

    bob = WorkspaceClient(host=server.host, token=world["tokens"][BOB], auth_type="pat")
    client = DatabricksMCPClient(mcp_url(server, f"vector-search/{CATALOG}/{SCHEMA}"), bob)
    resources = in_thread(client.get_databricks_resources, TIMEOUT_SECONDS)
    assert [resource.name for resource in resources] == [DOCS_INDEX]
    rows = in_thread(lambda: client.call_tool(tool_name(DOCS_INDEX), {"query": QUESTION, "num_results": 3}), TIMEOUT_SECONDS)
    assert not rows.isError, text_of(rows)
    found = {TITLES[int(row["id"])] for row in json.loads(text_of(rows))}
    assert found and found <= VISIBLE[BOB], found


def test_tool_calls_are_audited_with_the_caller(server, world):
    before = audit_events(server)
    after = before[-1]["seq"] if before else 0
    url = mcp_url(server, f"functions/{CATALOG}/{SCHEMA}")
    result, _ = call(url, world["tokens"][BOB], tool_name(f"{CATALOG}.{SCHEMA}.stamp"), {"note": "audit me"})
    assert result is not None and not result.isError
    refusal = assert_refused(url, world["tokens"][CAROL], tool_name(f"{CATALOG}.{SCHEMA}.stamp"), {"note": "audit me"})
    assert refusal
    calls = [event for event in audit_events(server, after) if "tools/call" in (event.get("api") or "")]
    assert any(event["user_name"] == BOB and event["allowed"] and "mcp_demo__docs__stamp" in event["securable"]
               for event in calls), calls
    assert any(event["user_name"] == CAROL and not event["allowed"] for event in calls), calls


# --- the wire and the authorization profile, on the session's server -----------------------------------------------


def test_the_transport_answers_json_to_posts_and_405_to_get_and_delete(server, world):
    url = mcp_url(server, "sql")
    initialized = raw_post(url, world["tokens"][ALICE])
    assert initialized.status_code == 200, initialized.text
    assert initialized.headers["Content-Type"].startswith("application/json")
    assert initialized.json()["result"]["protocolVersion"] == "2025-06-18"
    assert "tools" in initialized.json()["result"]["capabilities"]
    listed = raw_post(url, world["tokens"][ALICE], {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
                      headers={"MCP-Protocol-Version": "2025-06-18"})
    assert listed.status_code == 200 and listed.headers["Content-Type"].startswith("application/json"), listed.text
    assert SQL_TOOL in [tool["name"] for tool in listed.json()["result"]["tools"]]
    for method in ("GET", "DELETE"):
        answer = requests.request(method, url, timeout=10, headers={
            "Authorization": f"Bearer {world['tokens'][ALICE]}", "Accept": "text/event-stream"})
        assert answer.status_code == 405, (method, answer.status_code, answer.text)


def test_an_unauthenticated_request_names_the_protected_resource_metadata(server):
    for path in ("sql", f"vector-search/{CATALOG}/{SCHEMA}"):
        url = mcp_url(server, path)
        refused = raw_post(url)
        assert refused.status_code == 401, refused.text
        challenge = refused.headers.get("WWW-Authenticate", "")
        assert challenge.startswith("Bearer") and "resource_metadata=" in challenge, challenge
        metadata_url = challenge.split('resource_metadata="', 1)[1].split('"', 1)[0]
        assert metadata_url == server.url(f"/.well-known/oauth-protected-resource/api/2.0/mcp/{path}")
        metadata = requests.get(metadata_url, timeout=10)
        assert metadata.status_code == 200, metadata.text
        metadata = metadata.json()
        assert metadata["resource"] == url
        assert metadata["authorization_servers"] == [server.url("/oidc")]
        assert metadata["bearer_methods_supported"] == ["header"]
    assert {"mcp.sql", "sql.statement-execution", "sql.warehouses"} <= set(
        requests.get(server.url("/.well-known/oauth-protected-resource/api/2.0/mcp/sql"), timeout=10).json()["scopes_supported"])


def authorization_server_metadata(server):
    """RFC 8414 metadata of the issuer `{base}/oidc`, at the path RFC 8414 derives from it."""
    metadata = requests.get(server.url("/.well-known/oauth-authorization-server/oidc"), timeout=10)
    assert metadata.status_code == 200, metadata.text
    return metadata.json()


def test_the_authorization_server_metadata_offers_registration_and_pkce(server):
    metadata = authorization_server_metadata(server)
    assert metadata["issuer"] == server.url("/oidc")
    assert metadata["registration_endpoint"] == server.url("/oidc/v1/register")
    assert metadata["authorization_endpoint"] == server.url("/oidc/v1/authorize")
    assert metadata["token_endpoint"] == server.url("/oidc/v1/token")
    assert "S256" in metadata["code_challenge_methods_supported"]
    assert "none" in metadata["token_endpoint_auth_methods_supported"]
    assert {"mcp.sql", "mcp.vectorsearch", "mcp.functions", "mcp.genie"} <= set(metadata["scopes_supported"])


# --- OAuth with the SDK's provider, on a server of its own ---------------------------------------------------------

ADMIN_PASSWORD = "correct horse battery staple"
REDIRECT_URI = "http://127.0.0.1:9/mcp-callback"  # nothing listens: the browser stops at the redirect
SQL_SCOPES = {"mcp.sql", "sql.statement-execution", "sql.warehouses"}


def jwt_claims(token):
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


@pytest.fixture(scope="module")
def oauth_server(tmp_path_factory):
    with running_deputy(tmp_path_factory) as own:
        response = requests.put(own.url("/api/2.0/deputy/local-password"), json={"password": ADMIN_PASSWORD},
                                headers={"Authorization": f"Bearer {own.admin_token}"}, timeout=10)
        assert response.status_code == 200, response.text
        yield own


def oauth_provider(server, storage, browser, client_name, path="sql", auth_method="none"):
    from mcp.client.auth import OAuthClientProvider
    from mcp.shared.auth import OAuthClientMetadata

    metadata = OAuthClientMetadata(
        client_name=client_name,
        redirect_uris=[REDIRECT_URI],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        token_endpoint_auth_method=auth_method,
    )
    return OAuthClientProvider(
        server_url=mcp_url(server, path),
        client_metadata=metadata,
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
        timeout=TIMEOUT_SECONDS,
    )


async def whoami_over_sql(session):
    names = [tool.name for tool in (await session.list_tools()).tools]
    result = await session.call_tool(SQL_TOOL, {"query": "SELECT current_user() AS me"})
    return names, result


@pytest.fixture(scope="module")
def signed_in(oauth_server):
    """The SDK's provider, from nothing: 401, discovery, dynamic registration, sign-in and consent, token."""
    storage = MemoryTokenStorage()
    browser = Browser(oauth_server.host, "admin", ADMIN_PASSWORD, REDIRECT_URI)
    responses = []
    provider = oauth_provider(oauth_server, storage, browser, "MCP test client")
    names, result = in_session(mcp_url(oauth_server, "sql"), whoami_over_sql, auth=provider, responses=responses)
    return {"names": names, "result": result, "storage": storage, "browser": browser, "responses": responses}


def test_the_sdk_oauth_provider_registers_signs_in_and_then_lists_and_calls_tools(oauth_server, signed_in):
    assert SQL_TOOL in signed_in["names"]
    result = signed_in["result"]
    assert not result.isError, text_of(result)
    assert [[str(value) for value in row] for row in json.loads(text_of(result))["rows"]] == [["admin"]]
    seen = [(r.request.method, r.request.url.path, r.status_code) for r in signed_in["responses"]]
    assert seen[0] == ("POST", "/api/2.0/mcp/sql", 401), seen
    assert ("POST", "/oidc/v1/register", 201) in seen or ("POST", "/oidc/v1/register", 200) in seen, seen
    assert signed_in["storage"].client_info.client_id
    [authorize] = signed_in["browser"].authorize_urls
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(authorize).query))
    assert authorize.startswith(oauth_server.url("/oidc/v1/authorize?"))
    assert query["resource"] == mcp_url(oauth_server, "sql")
    assert SQL_SCOPES <= set(query["scope"].split()), query
    [consent] = signed_in["browser"].consent_pages
    assert "MCP test client" in consent
    for scope in SQL_SCOPES:
        assert scope in consent, scope
    claims = jwt_claims(signed_in["storage"].tokens.access_token)
    assert claims["aud"] in (mcp_url(oauth_server, "sql"), [mcp_url(oauth_server, "sql")]), claims


def test_a_confidential_client_registers_and_signs_in_through_the_sdk(oauth_server):
    """Dynamic registration of a confidential client (`client_secret_post`), at the functions server."""
    storage = MemoryTokenStorage()
    browser = Browser(oauth_server.host, "admin", ADMIN_PASSWORD, REDIRECT_URI)
    provider = oauth_provider(oauth_server, storage, browser, "Confidential MCP client", path="functions/main/default",
                              auth_method="client_secret_post")

    async def work(session):
        return (await session.list_tools()).tools

    assert in_session(mcp_url(oauth_server, "functions/main/default"), work, auth=provider) == []
    assert storage.client_info.client_secret, storage.client_info
    [consent] = browser.consent_pages
    assert "Confidential MCP client" in consent and "mcp.functions" in consent
    claims = jwt_claims(storage.tokens.access_token)
    assert claims["aud"] in (mcp_url(oauth_server, "functions/main/default"),
                             [mcp_url(oauth_server, "functions/main/default")]), claims


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def sign_in_for(server, client_id, scope, resource, redirect_uri=REDIRECT_URI):
    """An authorization-code flow played by hand (the bootstrap admin's password, consent when asked): the token
    endpoint's answer and the browser."""
    verifier, challenge = pkce()
    browser = Browser(server.host, "admin", ADMIN_PASSWORD, redirect_uri)
    resource = {"resource": resource} if resource else {}
    answer = browser.play(server.url("/oidc/v1/authorize?") + urllib.parse.urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": scope,
        "state": "by-hand", "code_challenge": challenge, "code_challenge_method": "S256", **resource}))
    assert "code" in answer, answer
    tokens = requests.post(server.url("/oidc/v1/token"), timeout=10, data={
        "grant_type": "authorization_code", "code": answer["code"], "redirect_uri": redirect_uri,
        "client_id": client_id, "code_verifier": verifier, **resource})
    assert tokens.status_code == 200, tokens.text
    return tokens.json(), browser


def assert_bound_to_the_sql_server(server, token):
    """The token works at the SQL server, and nowhere else: not at another MCP server, not at the REST API."""
    assert raw_post(mcp_url(server, "sql"), token).status_code == 200
    for path in ("genie/01f0c0ffee0000000000000000000000", "vector-search/main/default", "functions/main/default"):
        refused = raw_post(mcp_url(server, path), token)
        assert refused.status_code == 401, (path, refused.status_code, refused.text)
        assert "resource_metadata=" in refused.headers.get("WWW-Authenticate", ""), refused.headers
    for path in ("/api/2.0/preview/scim/v2/Me", "/api/2.0/sql/warehouses"):
        refused = requests.get(server.url(path), headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert refused.status_code == 401, (path, refused.status_code, refused.text)
    statement = requests.post(server.url("/api/2.0/sql/statements"), headers={"Authorization": f"Bearer {token}"},
                              json={"statement": "SELECT 1", "warehouse_id": "any"}, timeout=10)
    assert statement.status_code == 401, statement.text


def test_a_token_bound_to_the_sql_server_is_refused_everywhere_else(oauth_server):
    """With the trusted public client `databricks-cli` (no registration, no consent) and RFC 8707 `resource`."""
    sql_url = mcp_url(oauth_server, "sql")
    tokens, _ = sign_in_for(oauth_server, "databricks-cli", " ".join(sorted(SQL_SCOPES)), sql_url,
                            redirect_uri="http://127.0.0.1:9/")
    claims = jwt_claims(tokens["access_token"])
    assert claims["aud"] in (sql_url, [sql_url]), claims
    assert_bound_to_the_sql_server(oauth_server, tokens["access_token"])


def test_a_token_for_the_workspace_works_at_every_mcp_server_and_the_rest_api(oauth_server):
    """Without `resource`, a sign-in token is the REST API's, and every MCP server takes it as it takes a PAT."""
    tokens, _ = sign_in_for(oauth_server, "databricks-cli", "all-apis", None, redirect_uri="http://127.0.0.1:9/")
    token = tokens["access_token"]
    for path in ("sql", "vector-search/main/default", "functions/main/default"):
        accepted = raw_post(mcp_url(oauth_server, path), token)
        assert accepted.status_code == 200, (path, accepted.status_code, accepted.text)
    me = requests.get(oauth_server.url("/api/2.0/preview/scim/v2/Me"), headers={"Authorization": f"Bearer {token}"},
                      timeout=10)
    assert me.status_code == 200 and me.json()["userName"] == "admin", me.text


def test_the_sdk_providers_token_is_bound_to_the_server_it_signed_in_to(oauth_server, signed_in):
    assert_bound_to_the_sql_server(oauth_server, signed_in["storage"].tokens.access_token)


def assert_insufficient_scope(server, token):
    refused = raw_post(mcp_url(server, "sql"), token)
    assert refused.status_code == 403, refused.text
    challenge = refused.headers.get("WWW-Authenticate", "")
    assert challenge.startswith("Bearer") and 'error="insufficient_scope"' in challenge, challenge
    asked = re.search(r'(?:^|[ ,])scope="([^"]*)"', challenge)
    assert asked and set(asked.group(1).split()) == SQL_SCOPES, challenge


def test_a_token_without_the_servers_scopes_gets_403_naming_them(oauth_server):
    sql_url = mcp_url(oauth_server, "sql")
    narrow, _ = sign_in_for(oauth_server, "databricks-cli", "mcp.sql", sql_url, redirect_uri="http://127.0.0.1:9/")
    assert narrow["scope"].split() == ["mcp.sql"], narrow
    assert_insufficient_scope(oauth_server, narrow["access_token"])


def test_the_sdk_steps_up_to_the_scopes_the_challenge_names(oauth_server):
    """A dynamically registered client holding a token with one of the server's scopes: the SDK gets 403
    `insufficient_scope`, re-authorizes with the scopes the challenge names, the person consents, and the retry works."""
    from mcp.shared.auth import OAuthClientInformationFull, OAuthToken

    sql_url = mcp_url(oauth_server, "sql")
    registered = requests.post(oauth_server.url("/oidc/v1/register"), timeout=10, json={
        "client_name": "Step-up client", "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code"],
        "response_types": ["code"], "token_endpoint_auth_method": "none", "scope": " ".join(sorted(SQL_SCOPES))})
    assert registered.status_code in (200, 201), registered.text
    client = registered.json()
    narrow, first = sign_in_for(oauth_server, client["client_id"], "mcp.sql", sql_url)
    assert narrow["scope"].split() == ["mcp.sql"], narrow
    assert len(first.consent_pages) == 1 and "Step-up client" in first.consent_pages[0]
    assert_insufficient_scope(oauth_server, narrow["access_token"])

    storage = MemoryTokenStorage(
        tokens=OAuthToken(access_token=narrow["access_token"], token_type="Bearer", scope=narrow["scope"],
                          expires_in=narrow.get("expires_in")),
        client_info=OAuthClientInformationFull.model_validate(client),
    )
    stepping = Browser(oauth_server.host, "admin", ADMIN_PASSWORD, REDIRECT_URI)
    responses = []
    provider = oauth_provider(oauth_server, storage, stepping, "Step-up client")
    names, result = in_session(sql_url, whoami_over_sql, auth=provider, responses=responses)
    assert SQL_TOOL in names and not result.isError, text_of(result)
    assert (responses[0].request.url.path, responses[0].status_code) == ("/api/2.0/mcp/sql", 403)
    [authorize] = stepping.authorize_urls
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlparse(authorize).query))
    assert set(query["scope"].split()) == SQL_SCOPES and query["resource"] == sql_url, query
    [consent] = stepping.consent_pages
    assert "sql.statement-execution" in consent and "sql.warehouses" in consent, consent
    assert set(storage.tokens.scope.split()) >= SQL_SCOPES, storage.tokens
    assert storage.tokens.access_token != narrow["access_token"]
