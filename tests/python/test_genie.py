"""Genie with the real `databricks-sdk` (`w.genie`) and `databricks_ai_bridge.genie.Genie`: the same question asked by
alice and bob gets different numbers because of a row filter; a user without SELECT gets a FAILED message that says
why; a user without CAN_RUN gets 403; databricks-langchain's `GenieAgent` inside a deployed agent answers each user
with their own numbers.

The model behind the space is a test double: a tiny OpenAI-compatible HTTP server on 127.0.0.1 written here, which
answers each question with the SQL it was configured with (a broken SQL first for one of them, to exercise the
repair loop) and records every prompt.
"""

import http.server
import json
import threading
from pathlib import Path

import pytest
import requests
from agent_helpers import deploy, let_users_query, set_obo
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import NotFound, OperationFailed, PermissionDenied
from databricks.sdk.service import iam, serving, sql

TOTAL = "What is the total amount of orders?"
TOTAL_SQL = "SELECT SUM(amount) AS total FROM genie_demo.sales.orders"
REPAIRED = "How many EU orders are there?"
USERS = ["alice", "bob", "carol", "dave"]


class _SqlWriter(http.server.BaseHTTPRequestHandler):
    """OpenAI-compatible chat completions: the n-th call about a question gets its n-th SQL (the last repeats)."""

    answers = {
        TOTAL: [TOTAL_SQL],
        REPAIRED: [
            "SELECT COUNT(*) AS n FROM genie_demo.sales.no_such_table",
            "SELECT COUNT(*) AS n FROM genie_demo.sales.orders WHERE region = 'EU'",
        ],
    }
    calls: dict = {}
    prompts: list = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _SqlWriter.prompts.append(body["messages"])
        last = body["messages"][-1]["content"]
        question = next(q for q in self.answers if q in last)
        n = _SqlWriter.calls.get(question, 0)
        _SqlWriter.calls[question] = n + 1
        choices = self.answers[question]
        sql_text = choices[min(n, len(choices) - 1)]
        payload = json.dumps({
            "id": "test-double", "object": "chat.completion", "created": 1, "model": body.get("model", "x"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": sql_text}, "finish_reason": "stop"}],
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture(scope="module")
def sql_writer():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SqlWriter)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()


def _run(w: WorkspaceClient, warehouse: str, statement: str):
    response = w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse, wait_timeout="30s")
    assert response.status.state == sql.StatementState.SUCCEEDED, (statement, response.status)
    return response


@pytest.fixture(scope="module")
def genie(server, admin, sql_writer):
    """A space over a row-filtered orders table; alice, bob and carol may run it, dave only view it."""
    # A warehouse of its own: its users get CAN_USE on it without touching the default warehouse other tests check.
    warehouse = admin.warehouses.create(name="genie-warehouse").result().id
    clients = {}
    for name in USERS:
        user = admin.users.create(user_name=f"genie-{name}@example.com")
        token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=600).token_value
        clients[name] = WorkspaceClient(host=server.host, token=token, auth_type="pat")
    for statement in [
        "CREATE CATALOG genie_demo",
        "CREATE SCHEMA genie_demo.sales",
        "CREATE TABLE genie_demo.sales.orders (id INT, region STRING, amount DOUBLE)",
        "INSERT INTO genie_demo.sales.orders VALUES (1, 'EU', 10.0), (2, 'US', 20.0), (3, 'EU', 30.0)",
        "CREATE FUNCTION genie_demo.sales.eu_unless_alice(region STRING) RETURNS BOOLEAN "
        "RETURN region = 'EU' OR current_user() = 'genie-alice@example.com'",
        "ALTER TABLE genie_demo.sales.orders SET ROW FILTER genie_demo.sales.eu_unless_alice ON (region)",
        "GRANT USE CATALOG ON CATALOG genie_demo TO `users`",
        "GRANT USE SCHEMA ON SCHEMA genie_demo.sales TO `users`",
        "GRANT SELECT ON TABLE genie_demo.sales.orders TO `genie-alice@example.com`",
        "GRANT SELECT ON TABLE genie_demo.sales.orders TO `genie-bob@example.com`",
    ]:
        _run(admin, warehouse, statement)
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[iam.AccessControlRequest(group_name="users", permission_level=iam.PermissionLevel.CAN_USE)],
    )
    external = serving.ExternalModel(
        provider=serving.ExternalModelProvider.OPENAI,
        name="sql-writer",
        task="llm/v1/chat",
        openai_config=serving.OpenAiConfig(openai_api_base=sql_writer, openai_api_key_plaintext="sk-test-double"),
    )
    admin.serving_endpoints.create(
        name="genie-sql-writer",
        config=serving.EndpointCoreConfigInput(
            name="genie-sql-writer",
            served_entities=[serving.ServedEntityInput(name="sql-writer", external_model=external)],
        ),
    )
    # Created through the SDK's own create_space, with the space in Databricks' export form; Deputy's `deputy`
    # section names the model endpoint.
    serialized = {
        "version": 1,
        "data_sources": {"tables": [{"identifier": "genie_demo.sales.orders"}]},
        "instructions": {
            "text_instructions": [{"content": ["Amounts are in euros."]}],
            "example_question_sqls": [
                {"question": [TOTAL], "sql": [TOTAL_SQL]},
                {"question": ["How many orders are there?"], "sql": ["SELECT COUNT(*) FROM genie_demo.sales.orders"]},
            ],
        },
        "deputy": {"serving_endpoint_name": "genie-sql-writer"},
    }
    space = admin.genie.create_space(
        warehouse_id=warehouse, serialized_space=json.dumps(serialized), title="Sales", description="Orders by region"
    )
    acl = [
        iam.AccessControlRequest(user_name=f"genie-{name}@example.com", permission_level=iam.PermissionLevel.CAN_RUN)
        for name in ("alice", "bob", "carol")
    ]
    acl.append(iam.AccessControlRequest(user_name="genie-dave@example.com", permission_level=iam.PermissionLevel.CAN_VIEW))
    admin.permissions.update(request_object_type="genie", request_object_id=space.space_id, access_control_list=acl)
    return {"space_id": space.space_id, "clients": clients}


def _query_result(w: WorkspaceClient, space_id: str, message):
    query = next(a for a in message.attachments if a.query)
    return w.genie.get_message_attachment_query_result(space_id, message.conversation_id, message.message_id, query.attachment_id)


def test_spaces_through_the_sdk(admin, genie):
    space_id = genie["space_id"]
    fetched = admin.genie.get_space(space_id)
    assert (fetched.title, fetched.description) == ("Sales", "Orders by region")
    exported = json.loads(admin.genie.get_space(space_id, include_serialized_space=True).serialized_space)
    assert exported["data_sources"]["tables"] == [{"identifier": "genie_demo.sales.orders"}]
    assert exported["deputy"]["serving_endpoint_name"] == "genie-sql-writer"
    listed = admin.genie.list_spaces()
    assert space_id in [space.space_id for space in listed.spaces]
    dave = genie["clients"]["dave"]
    assert [space.space_id for space in dave.genie.list_spaces().spaces] == [space_id]
    with pytest.raises(PermissionDenied):
        dave.genie.get_space(space_id, include_serialized_space=True)


def test_alice_and_bob_get_their_own_numbers_through_the_sdk(genie):
    space_id = genie["space_id"]
    answers, messages = {}, {}
    for name in ("alice", "bob"):
        w = genie["clients"][name]
        message = w.genie.start_conversation_and_wait(space_id, TOTAL)
        assert message.status.value == "COMPLETED"
        query = next(a.query for a in message.attachments if a.query)
        assert query.query == TOTAL_SQL
        assert query.statement_id
        result = _query_result(w, space_id, message).statement_response
        assert result.status.state == sql.StatementState.SUCCEEDED
        answers[name] = result.result.data_array
        messages[name] = message
        suggested = next(a.suggested_questions for a in message.attachments if a.suggested_questions)
        assert suggested.questions == ["How many orders are there?"]
    assert answers == {"alice": [["60.0"]], "bob": [["40.0"]]}
    # The deprecated result route answers the same.
    bob, message = genie["clients"]["bob"], messages["bob"]
    deprecated = bob.genie.get_message_query_result(space_id, message.conversation_id, message.message_id)
    assert deprecated.statement_response.result.data_array == [["40.0"]]
    conversations = bob.genie.list_conversations(space_id).conversations
    assert len(conversations) == 1 and conversations[0].title == TOTAL


def test_the_repair_loop_and_private_conversations(genie):
    space_id = genie["space_id"]
    alice, bob = genie["clients"]["alice"], genie["clients"]["bob"]
    message = alice.genie.start_conversation_and_wait(space_id, REPAIRED)
    assert message.status.value == "COMPLETED"
    assert _SqlWriter.calls[REPAIRED] == 2, "the failing SQL went back to the model once"
    assert "no_such_table" in _SqlWriter.prompts[-1][-1]["content"]
    assert _query_result(alice, space_id, message).statement_response.result.data_array == [["2"]]
    with pytest.raises(NotFound):
        bob.genie.get_message(space_id, message.conversation_id, message.message_id)
    follow_up = alice.genie.create_message_and_wait(space_id, message.conversation_id, TOTAL)
    assert follow_up.status.value == "COMPLETED"
    assert _query_result(alice, space_id, follow_up).statement_response.result.data_array == [["60.0"]]


def test_ai_bridge_genie_answers_each_user_with_their_rights(genie):
    bridge = pytest.importorskip("databricks_ai_bridge.genie")
    space_id = genie["space_id"]
    results = {}
    for name in ("alice", "bob"):
        agent = bridge.Genie(space_id, client=genie["clients"][name])
        assert agent.description == "Orders by region"
        response = agent.ask_question(TOTAL)
        assert response.query == TOTAL_SQL
        assert response.conversation_id
        results[name] = str(response.result)
    assert "60.0" in results["alice"] and "40.0" not in results["alice"], results
    assert "40.0" in results["bob"] and "60.0" not in results["bob"], results


def test_without_select_the_message_fails_and_without_can_run_asking_is_refused(server, genie):
    space_id = genie["space_id"]
    carol = genie["clients"]["carol"]
    with pytest.raises(OperationFailed):
        carol.genie.start_conversation_and_wait(space_id, TOTAL)
    conversation = carol.genie.list_conversations(space_id).conversations[0]
    messages = carol.genie.list_conversation_messages(space_id, conversation.conversation_id).messages
    assert messages[0].status.value == "FAILED"
    assert "cannot read any table" in messages[0].error.error
    assert "SELECT" in messages[0].error.error
    dave = genie["clients"]["dave"]
    with pytest.raises(PermissionDenied) as refused:
        dave.genie.start_conversation(space_id, TOTAL)
    assert "CAN_RUN" in str(refused.value)
    response = requests.post(
        server.url(f"/api/2.0/genie/spaces/{space_id}/start-conversation"),
        headers={"Authorization": f"Bearer {dave.config.token}"},
        json={"content": TOTAL},
        timeout=10,
    )
    assert response.status_code == 403
    assert response.json()["error_code"] == "PERMISSION_DENIED"


def test_genie_agent_inside_a_deployed_agent_answers_each_user_with_their_rights(server, genie):
    deployed = deploy(server, "genie-agent", Path(__file__).parent / "agents" / "genie_agent.py", ["dashboards.genie"])
    let_users_query(server, deployed["id"])
    set_obo(server, True)
    answers = {}
    for name in ("alice", "bob"):
        response = requests.post(
            server.url("/serving-endpoints/genie-agent/invocations"),
            headers={"Authorization": f"Bearer {genie['clients'][name].config.token}"},
            json={"messages": [{"role": "user", "content": TOTAL}], "custom_inputs": {"space_id": genie["space_id"]}},
            timeout=300,
        )
        assert response.status_code == 200, response.text
        answers[name] = response.json()["messages"][-1]["content"]
    assert "60.0" in answers["alice"] and "40.0" not in answers["alice"], answers
    assert "40.0" in answers["bob"] and "60.0" not in answers["bob"], answers
