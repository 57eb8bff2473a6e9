"""Agents behind serving endpoints, invoked on behalf of their users, with the real databricks-sdk inside the agent
(ModelServingUserCredentials) and outside it (serving_endpoints.query), plus a Rust agent built on the Rust SDK.
"""

import concurrent.futures
import json
import os
from pathlib import Path

import pytest
import requests
from agent_helpers import (
    ask,
    deploy,
    json_answer,
    let_users_query,
    run_sql,
    service_principal,
    serving_endpoint,
    set_obo,
)
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import iam, serving

AGENTS = Path(__file__).parent / "agents"
DECLARED = ["sql.statement-execution", "sql.warehouses", "iam.scim", "serving.serving-endpoints"]


@pytest.fixture(scope="module")
def world(server, admin):
    """alice and bob with their own notes behind a row filter, both allowed to query the agent endpoint."""
    # A warehouse of its own: the agents' users get CAN_USE on it without touching the default warehouse.
    warehouse = admin.warehouses.create(name="agents-warehouse").result().id
    users = {}
    for name in ["alice@example.com", "bob@example.com", "carol@example.com"]:
        user = admin.users.create(user_name=name)
        token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
        users[name] = token
    for statement in [
        "CREATE CATALOG agents_demo",
        "CREATE SCHEMA agents_demo.hr",
        "CREATE TABLE agents_demo.hr.notes (note STRING, owner STRING)",
        "INSERT INTO agents_demo.hr.notes VALUES ('alice-1', 'alice@example.com'), ('alice-2', 'alice@example.com'),"
        " ('bob-1', 'bob@example.com'), ('carol-1', 'carol@example.com')",
        "CREATE FUNCTION agents_demo.hr.mine(owner STRING) RETURNS BOOLEAN RETURN owner = current_user()",
        "ALTER TABLE agents_demo.hr.notes SET ROW FILTER agents_demo.hr.mine ON (owner)",
        "GRANT USE CATALOG ON CATALOG agents_demo TO `users`",
        "GRANT USE SCHEMA ON SCHEMA agents_demo.hr TO `users`",
        "GRANT SELECT ON TABLE agents_demo.hr.notes TO `alice@example.com`",
        "GRANT SELECT ON TABLE agents_demo.hr.notes TO `bob@example.com`",
    ]:
        run_sql(admin, warehouse, statement)
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[iam.AccessControlRequest(group_name="users", permission_level=iam.PermissionLevel.CAN_USE)],
    )
    deployed = deploy(server, "notes-agent", AGENTS / "sql_agent.py", DECLARED, [f"sql_warehouse:{warehouse}"])
    admin.permissions.update(
        request_object_type="serving-endpoints",
        request_object_id=deployed["id"],
        access_control_list=[iam.AccessControlRequest(group_name="users", permission_level=iam.PermissionLevel.CAN_QUERY)],
    )
    set_obo(server, True)
    return {"warehouse": warehouse, "tokens": users, "endpoint": deployed}


def test_each_user_gets_their_own_rows_through_the_agent(server, world):
    alice = json_answer(ask(server, world["tokens"]["alice@example.com"], "notes-agent", "my notes?"))
    bob = json_answer(ask(server, world["tokens"]["bob@example.com"], "notes-agent", "my notes?"))
    assert alice["user"] == "alice@example.com" and alice["context_user"] == "alice@example.com"
    assert alice["rows"] == ["alice-1", "alice-2"]
    assert bob["user"] == "bob@example.com"
    assert bob["rows"] == ["bob-1"]
    # carol may query the agent but has no SELECT on the table: the agent reports the refusal, as carol.
    carol = json_answer(ask(server, world["tokens"]["carol@example.com"], "notes-agent", "my notes?"))
    assert carol["user"] == "carol@example.com"
    assert "TABLE_OR_VIEW_NOT_FOUND" in carol["rows_error"], carol  # hidden from her, as in her own SQL
    # A plain WorkspaceClient() inside the agent is the endpoint's own service principal.
    assert alice["system"] == "agent:notes-agent"


def test_a_uc_function_called_by_the_agent_runs_with_the_users_grants_and_row_filter(server, admin, world):
    """Direct on-behalf-of access to UC functions: the agent, holding only `sql.statement-execution` (no UC API
    scope), calls a UC SQL function over the filtered table as the user; EXECUTE is the user's own, the row filter
    keeps the user's rows, and `current_user()` inside the function is the user, not the agent."""
    for statement in [
        "CREATE FUNCTION agents_demo.hr.stamp(note STRING) RETURNS STRING RETURN concat(upper(note), ':', current_user())",
        "GRANT EXECUTE ON FUNCTION agents_demo.hr.stamp TO `alice@example.com`",
    ]:
        run_sql(admin, world["warehouse"], statement)
    question = "sql: SELECT agents_demo.hr.stamp(note) FROM agents_demo.hr.notes ORDER BY note"
    alice = json_answer(ask(server, world["tokens"]["alice@example.com"], "notes-agent", question))
    assert alice["sql_rows"] == [["ALICE-1:alice@example.com"], ["ALICE-2:alice@example.com"]], alice
    # bob may read his notes but holds no EXECUTE: through the agent the function does not exist for him.
    bob = json_answer(ask(server, world["tokens"]["bob@example.com"], "notes-agent", question))
    assert "sql_rows" not in bob and "stamp" in bob["sql_error"].lower(), bob
    direct = json_answer(ask(server, world["tokens"]["bob@example.com"], "notes-agent", "sql: SELECT note FROM agents_demo.hr.notes"))
    assert direct["sql_rows"] == [["bob-1"]], direct


def test_an_api_outside_the_declared_scopes_is_refused_naming_the_scope(server, world):
    alice = json_answer(ask(server, world["tokens"]["alice@example.com"], "notes-agent", "catalogs?"))
    assert "PermissionDenied" in alice["catalogs"], alice
    assert "catalog.catalogs" in alice["catalogs"], alice


def test_the_deployed_endpoint_through_the_sdk(server, admin, world):
    endpoint = admin.serving_endpoints.get("notes-agent")
    assert endpoint.state.ready.value == "READY"
    assert endpoint.id == world["endpoint"]["id"]
    assert "notes-agent" in [e.name for e in admin.serving_endpoints.list()]
    alice = WorkspaceClient(host=server.host, token=world["tokens"]["alice@example.com"], auth_type="pat")
    reply = alice.serving_endpoints.query(
        name="notes-agent", messages=[serving.ChatMessage(role=serving.ChatMessageRole.USER, content="hi")]
    )
    assert json.loads(reply.choices[0].message.content)["rows"] == ["alice-1", "alice-2"]


def test_agent_chains_only_shrink_scopes_and_grow_the_act_chain(server, world):
    # The inner agent declares fewer scopes; asking it through the outer one hands down the intersection.
    deploy(server, "inner-agent", AGENTS / "sql_agent.py", ["iam.scim", "serving.serving-endpoints"])
    let_users_query(server, _endpoint_id(server, 'inner-agent'))
    outer = json_answer(ask(server, world["tokens"]["alice@example.com"], "notes-agent", "ask inner-agent"))
    inner = json.loads(outer["inner"]["choices"][0]["message"]["content"])
    info = inner["token_info"]
    assert info["principal"] == "alice@example.com"
    assert set(info["scopes"]) <= {"iam.scim", "serving.serving-endpoints"}
    assert set(info["scopes"]) <= set(DECLARED)
    sp = {name: service_principal(server, name) for name in ["notes-agent", "inner-agent"]}
    assert info["actor_chain"] == [sp["inner-agent"], sp["notes-agent"]], info
    assert inner["system"] == "agent:inner-agent"


def _endpoint_id(server, name):
    return serving_endpoint(server, name)["id"]


def test_the_audit_log_names_user_agent_and_decision(server, world):
    json_answer(ask(server, world["tokens"]["bob@example.com"], "notes-agent", "audit me"))
    response = requests.get(
        server.url("/api/2.0/deputy/audit?limit=1000"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    events = [e for e in response.json()["events"] if e["user_name"] == "bob@example.com"]
    exchanges = [e for e in events if e["api"] == "serving.on-behalf-of-token"]
    assert exchanges and exchanges[-1]["endpoint"] == "notes-agent" and exchanges[-1]["allowed"]
    request_id = exchanges[-1]["request_id"]
    calls = [e for e in events if e["request_id"] == request_id and e["api"].startswith("POST /api/2.0/sql/statements")]
    assert calls and calls[0]["allowed"] and calls[0]["endpoint"] == "notes-agent", events
    denied = [e for e in events if not e["allowed"] and "catalog.catalogs" in e["reason"]]
    assert denied, "the refused catalogs call is audited with its reason"
    # Everyone reads their own part of the audit log; only admins read others'.
    alice = {"Authorization": f"Bearer {world['tokens']['alice@example.com']}"}
    own = requests.get(server.url("/api/2.0/deputy/audit"), headers=alice, params={"limit": 1000}, timeout=10)
    assert own.status_code == 200, own.text
    assert {event["user_name"] for event in own.json()["events"]} == {"alice@example.com"}
    refused = requests.get(server.url("/api/2.0/deputy/audit"), headers=alice,
                           params={"user_name": "bob@example.com"}, timeout=10)
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"


def test_a_crashing_agent_gets_an_error_and_a_new_worker(server, world):
    token = world["tokens"]["alice@example.com"]
    crashed = ask(server, token, "notes-agent", "crash")
    assert crashed.status_code == 500
    assert crashed.json()["error_code"] == "INTERNAL_ERROR"
    assert json_answer(ask(server, token, "notes-agent", "again"))["rows"] == ["alice-1", "alice-2"]


def test_concurrent_invocations_never_see_another_users_token_or_rows(server, admin, world):
    names = [f"iso{i}@example.com" for i in range(20)]
    tokens = {}
    warehouse = world["warehouse"]
    for name in names:
        user = admin.users.create(user_name=name)
        tokens[name] = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600).token_value
    values = ", ".join(f"('{name}-note', '{name}')" for name in names)
    run_sql(admin, warehouse, f"INSERT INTO agents_demo.hr.notes VALUES {values}")
    for name in names[::2]:  # half of them may read their notes, half may not
        run_sql(admin, warehouse, f"GRANT SELECT ON TABLE agents_demo.hr.notes TO `{name}`")

    def ask_once(index):
        name = names[index % len(names)]
        response = ask(server, tokens[name], "notes-agent", f"question {index}")
        return name, json_answer(response)

    with concurrent.futures.ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(ask_once, range(1000)))
    leaks = 0
    for name, answer in results:
        readable = names.index(name) % 2 == 0
        if answer["user"] != name or answer["context_user"] != name:
            leaks += 1
        elif readable and answer.get("rows") != [f"{name}-note"]:
            leaks += 1
        elif not readable and "rows" in answer:
            leaks += 1
    assert leaks == 0, f"{leaks} of {len(results)} answers saw another user's identity or rows"


def test_a_rust_agent_acts_for_the_user(server, world):
    binary = Path(os.environ["DEPUTY_BIN"]).parent / "examples" / "whoami_agent"
    assert binary.is_file(), f"build it with `cargo build -p deputy-sdk --example whoami_agent` ({binary})"
    deployed = deploy(server, "whoami", binary, ["iam.scim", "catalog.catalogs"])
    let_users_query(server, deployed['id'])
    response = ask(server, world["tokens"]["alice@example.com"], "whoami", "who am I?")
    assert response.status_code == 200, response.text
    text = response.json()["messages"][-1]["content"]
    assert "You are alice@example.com" in text and "agents_demo" in text and "I am agent:whoami" in text, text


def test_with_obo_disabled_the_user_client_fails_as_documented(server, world):
    set_obo(server, False)
    try:
        answer = json_answer(ask(server, world["tokens"]["alice@example.com"], "notes-agent", "my notes?"))
    finally:
        set_obo(server, True)
    assert "user" not in answer
    assert "user_credentials" in answer["user_client_error"] or "Invokers Token" in answer["user_client_error"], answer


def test_deploy_refuses_unknown_scopes_and_resources_the_deployer_lacks(server, world):
    response = requests.post(
        server.url("/api/2.0/deputy/agents"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={"name": "bad-scopes", "source_path": str(AGENTS / "sql_agent.py"), "user_scopes": ["sql.everything"]},
        timeout=60,
    )
    assert response.status_code == 400 and "sql.everything" in response.json()["message"]
    request = {
        "name": "carols-agent",
        "source_path": str(AGENTS / "sql_agent.py"),
        "user_scopes": ["iam.scim"],
        "system_resources": ["table:agents_demo.hr.notes"],
    }
    # The agent is a program on the server's disk: only admins deploy.
    carol = world["tokens"]["carol@example.com"]
    response = requests.post(
        server.url("/api/2.0/deputy/agents"), headers={"Authorization": f"Bearer {carol}"}, json=request, timeout=60
    )
    assert response.status_code == 403, response.text
    assert "admins" in response.json()["message"]
    # An admin token narrowed to serving cannot hand the agent a table: the deployer must hold what it grants.
    narrowed = requests.post(
        server.url("/oidc/v1/token"),
        data={
            "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
            "subject_token": server.admin_token,
            "subject_token_type": "urn:databricks:params:oauth:token-type:personal-access-token",
            "scope": "serving.serving-endpoints",
        },
        timeout=10,
    ).json()["access_token"]
    response = requests.post(
        server.url("/api/2.0/deputy/agents"), headers={"Authorization": f"Bearer {narrowed}"}, json=request, timeout=60
    )
    assert response.status_code == 403, response.text
    assert "agents_demo.hr.notes" in response.json()["message"]


def _consents(server, token, method="GET", path="", body=None):
    return requests.request(
        method, server.url("/api/2.0/deputy/consents" + path),
        headers={"Authorization": f"Bearer {token}"}, json=body, timeout=30,
    )


def _settings(server, change):
    response = requests.patch(
        server.url("/api/2.0/deputy/settings"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json=change,
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_with_consent_required_an_agent_acts_only_within_what_the_user_consented_to(server, world):
    alice = world["tokens"]["alice@example.com"]
    assert _settings(server, {"consent-required": True})["consent-required"] is True
    try:
        refused = ask(server, alice, "notes-agent", "my notes?")
        assert refused.status_code == 403, refused.text
        assert "has not consented" in refused.json()["message"] and "sql.statement-execution" in refused.json()["message"]

        given = _consents(server, alice, "POST", body={"endpoint_name": "notes-agent"})
        assert given.status_code == 200, given.text
        assert set(given.json()["scopes"]) == set(DECLARED)
        assert json_answer(ask(server, alice, "notes-agent", "my notes?"))["rows"] == ["alice-1", "alice-2"]
        listed = _consents(server, alice).json()["consents"]
        assert [c["endpoint_name"] for c in listed] == ["notes-agent"]

        # An agent cannot consent for its user: a delegated token (naming an actor) is refused.
        delegated = requests.post(
            server.url("/oidc/v1/token"),
            data={
                "grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                "subject_token": alice,
                "subject_token_type": "urn:databricks:params:oauth:token-type:personal-access-token",
                "actor_token": server.admin_token,
                "actor_token_type": "urn:databricks:params:oauth:token-type:personal-access-token",
            },
            timeout=30,
        )
        assert delegated.status_code == 200, delegated.text
        by_agent = _consents(server, delegated.json()["access_token"], "POST", body={"endpoint_name": "notes-agent"})
        assert by_agent.status_code == 403 and "not by an agent" in by_agent.json()["message"], by_agent.text

        # Redeployed with a scope alice did not consent to: refused again until she consents anew.
        deploy(server, "notes-agent", AGENTS / "sql_agent.py", DECLARED + ["catalog.catalogs"],
               [f"sql_warehouse:{world['warehouse']}"])
        widened = ask(server, alice, "notes-agent", "my notes?")
        assert widened.status_code == 403 and "now declares" in widened.json()["message"], widened.text

        withdrawn = _consents(server, alice, "DELETE", "/notes-agent")
        assert withdrawn.status_code == 200, withdrawn.text
        assert _consents(server, alice, "DELETE", "/notes-agent").status_code == 404
    finally:
        _settings(server, {"consent-required": False})
        deploy(server, "notes-agent", AGENTS / "sql_agent.py", DECLARED, [f"sql_warehouse:{world['warehouse']}"])
    assert json_answer(ask(server, alice, "notes-agent", "my notes?"))["rows"] == ["alice-1", "alice-2"]
