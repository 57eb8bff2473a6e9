"""The seed-style MCP agent: a deployed MLflow ChatAgent (`agents/mcp_agent/agent.py`) that calls Deputy's managed MCP
servers with `databricks_mcp.DatabricksMCPClient` and the END USER's on-behalf-of token
(`WorkspaceClient(credentials_strategy=ModelServingUserCredentials())`), and answers with what the tool returned.

The agent is logged with MLflow's `UserAuthPolicy`, declaring the scopes the SQL and functions MCP servers need;
Deputy narrows each invocation's token to them. alice and bob ask the same endpoint the same question and each gets
the rows a row filter leaves them; carol, who may not read the table, gets the refusal; an agent logged without the
`mcp.*` scopes is refused by the MCP server. The audit log shows each tool call as the user, with the agent's
service principal as the actor.
"""

import json
from pathlib import Path

import pytest
import requests
from agent_helpers import ask, deploy, json_answer, let_users_query, log_agent, run_sql, service_principal, set_obo
from mcp_helpers import audit_events, last_seq
from databricks.sdk.service import iam

AGENT = Path(__file__).parent / "agents" / "mcp_agent" / "agent.py"
CATALOG, SCHEMA = "mcp_agent_demo", "hr"
TABLE = f"{CATALOG}.{SCHEMA}.notes"
ALICE, BOB, CAROL = "mcpagent-alice@example.com", "mcpagent-bob@example.com", "mcpagent-carol@example.com"
NOTES = [("alice-1", ALICE), ("alice-2", ALICE), ("bob-1", BOB), ("carol-1", CAROL)]
SQL_SCOPES = ["mcp.sql", "sql.statement-execution", "sql.warehouses"]
FUNCTION_SCOPES = ["mcp.functions", "catalog.functions", "sql.statement-execution"]
SCOPES = sorted(set(SQL_SCOPES + FUNCTION_SCOPES))
SQL_TOOL = "execute_sql_read_only"
QUESTION = f"sql: SELECT note, owner FROM {TABLE} ORDER BY note"
TIMEOUT_SECONDS = 120

@pytest.fixture(scope="module")
def world(server, admin, tmp_path_factory):
    """alice, bob and carol with notes behind a row filter (each sees their own), a function that stamps a note with
    its caller, a warehouse they may use, and the MCP agent deployed from its MLmodel, which they may query."""
    warehouse = admin.warehouses.create(name="mcp-agent-warehouse").result().id
    tokens = {}
    for name in (ALICE, BOB, CAROL):
        user = admin.users.create(user_name=name)
        tokens[name] = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
    rows = ", ".join(f"('{note}', '{owner}')" for note, owner in NOTES)
    for statement in [
        f"CREATE CATALOG {CATALOG}",
        f"CREATE SCHEMA {CATALOG}.{SCHEMA}",
        f"CREATE TABLE {TABLE} (note STRING, owner STRING)",
        f"INSERT INTO {TABLE} VALUES {rows}",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.mine(owner STRING) RETURNS BOOLEAN RETURN owner = current_user()",
        f"ALTER TABLE {TABLE} SET ROW FILTER {CATALOG}.{SCHEMA}.mine ON (owner)",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.stamp(note STRING) RETURNS STRING "
        "COMMENT 'Stamps a note with its caller' RETURN concat(upper(note), ':', current_user())",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `{ALICE}`",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `{BOB}`",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `{CAROL}`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `{ALICE}`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `{BOB}`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `{CAROL}`",
        f"GRANT SELECT ON TABLE {TABLE} TO `{ALICE}`",
        f"GRANT SELECT ON TABLE {TABLE} TO `{BOB}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.stamp TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {CATALOG}.{SCHEMA}.stamp TO `{BOB}`",
    ]:
        run_sql(admin, warehouse, statement)
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[
            iam.AccessControlRequest(user_name=name, permission_level=iam.PermissionLevel.CAN_USE)
            for name in (ALICE, BOB, CAROL)
        ],
    )
    models = tmp_path_factory.mktemp("mcp-agent")
    deployed = deploy(server, "mcp-agent", log_agent(models / "model", AGENT, SCOPES))
    let_users_query(server, deployed["id"])
    # The same code, logged without the MCP servers' scopes.
    narrow = deploy(server, "mcp-agent-narrow", log_agent(models / "narrow", AGENT, ["sql.statement-execution", "sql.warehouses"]))
    let_users_query(server, narrow["id"])
    set_obo(server, True)
    return {"warehouse": warehouse, "tokens": tokens}


def ask_agent(server, world, user, question, endpoint="mcp-agent"):
    return json_answer(ask(server, world["tokens"][user], endpoint, question, timeout=TIMEOUT_SECONDS))


def test_the_mlmodel_declares_the_mcp_servers_scopes(server, world):
    response = requests.get(
        server.url("/api/2.0/serving-endpoints/mcp-agent"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    agent = response.json()["config"]["served_entities"][0]["deputy_agent"]
    declared = json.dumps(agent)
    assert all(scope in declared for scope in SCOPES), agent


def test_each_user_gets_their_own_rows_from_the_sql_server_through_the_agent(server, world):
    answers = {user: ask_agent(server, world, user, QUESTION) for user in (ALICE, BOB)}
    for user, answer in answers.items():
        assert "mcp_error" not in answer, answer
        assert answer["server_url"] == server.url("/api/2.0/mcp/sql"), answer
        assert SQL_TOOL in answer["tools"], answer
        assert answer["is_error"] is False, answer
        assert answer["result"]["columns"] == ["note", "owner"], answer
    assert answers[ALICE]["result"]["rows"] == [["alice-1", ALICE], ["alice-2", ALICE]], answers[ALICE]
    assert answers[BOB]["result"]["rows"] == [["bob-1", BOB]], answers[BOB]


def test_a_user_without_select_gets_the_refusal_not_rows(server, world):
    carol = ask_agent(server, world, CAROL, QUESTION)
    # The tool is listed (she may use the warehouse); the query fails as her own SQL would: the table is hidden.
    assert SQL_TOOL in carol["tools"] and carol["is_error"] is True, carol
    assert "TABLE_OR_VIEW_NOT_FOUND" in carol["result"], carol
    text = json.dumps(carol)
    assert "alice-1" not in text and "bob-1" not in text and "carol-1" not in text, carol


def test_a_function_tool_runs_as_the_user_through_the_agent(server, world):
    question = f'function {CATALOG}.{SCHEMA}.stamp {{"note": "hello"}}'
    tool = f"{CATALOG}__{SCHEMA}__stamp"
    for user in (ALICE, BOB):
        answer = ask_agent(server, world, user, question)
        assert "mcp_error" not in answer and answer["is_error"] is False, answer
        assert answer["server_url"] == server.url(f"/api/2.0/mcp/functions/{CATALOG}/{SCHEMA}"), answer
        assert answer["tools"] == [tool], answer
        assert f"HELLO:{user}" in json.dumps(answer["result"]), answer
    # carol holds no EXECUTE: she sees no tool and the call is refused.
    carol = ask_agent(server, world, CAROL, question)
    assert carol["tools"] == [] and "result" not in carol, carol
    assert "no tool" in carol["mcp_error"] and tool in carol["mcp_error"], carol


def test_an_agent_without_the_mcp_scopes_is_refused_by_the_server(server, world):
    """The narrowed token lacks `mcp.sql`: the SQL server answers 403 `insufficient_scope` (the MCP client then tries
    to re-authorize, which an agent cannot, and fails), and no tool runs."""
    after = last_seq(server)
    answer = ask_agent(server, world, ALICE, QUESTION, endpoint="mcp-agent-narrow")
    assert "mcp_error" in answer and "result" not in answer, answer
    assert "alice-1" not in json.dumps(answer), answer
    events = [event for event in audit_events(server, after) if event["user_name"] == ALICE]
    [exchange] = [event for event in events if event["api"] == "serving.on-behalf-of-token"]
    assert exchange["endpoint"] == "mcp-agent-narrow" and "mcp.sql" not in exchange["scope"].split(), exchange
    posts = [event for event in events if event["securable"] == "/api/2.0/mcp/sql"]
    assert posts and not any(event["allowed"] for event in posts), events
    assert all("mcp.sql" in event["reason"] for event in posts), [event["reason"] for event in posts]
    assert not [event for event in events if event["api"] == "mcp tools/call"], events


def test_the_audit_log_shows_each_users_tool_call_with_the_agent_as_actor(server, world):
    after = last_seq(server)
    for user in (ALICE, BOB):
        assert "mcp_error" not in ask_agent(server, world, user, QUESTION)
    agent = service_principal(server, "mcp-agent")
    events = audit_events(server, after)
    for user in (ALICE, BOB):
        mine = [event for event in events if event["user_name"] == user]
        calls = [event for event in mine if event["api"] == "mcp tools/call"]
        assert len(calls) == 1, mine
        [call] = calls
        assert call["allowed"], call
        assert call["securable"] == f"mcp/sql tool:{SQL_TOOL}", call
        assert call["actors"] == [agent], call
        assert call["endpoint"] == "mcp-agent", call
        # The tool call belongs to the invocation whose on-behalf-of token the agent was handed.
        exchanges = [event for event in mine if event["api"] == "serving.on-behalf-of-token"]
        assert exchanges and exchanges[-1]["allowed"] and exchanges[-1]["endpoint"] == "mcp-agent", mine
        assert call["request_id"] == exchanges[-1]["request_id"], (call, exchanges)
        # The statement the tool ran inside the server is audited as the user, through the agent, too.
        statements = [event for event in mine if event["request_id"] == call["request_id"]
                      and event["api"].startswith("POST /api/2.0/sql/statements")]
        assert statements and statements[0]["allowed"] and statements[0]["actors"] == [agent], mine
    # carol's refused call is audited as refused, with the same actor.
    after = last_seq(server)
    ask_agent(server, world, CAROL, QUESTION)
    refused = [event for event in audit_events(server, after)
               if event["user_name"] == CAROL and event["api"] == "mcp tools/call"]
    assert refused and not any(event["allowed"] for event in refused), refused
    assert all(event["actors"] == [agent] for event in refused), refused
