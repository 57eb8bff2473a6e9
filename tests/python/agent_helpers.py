"""What the agent tests share: running SQL as admin, deploying an agent, switching on-behalf-of, asking an agent."""

import json

import requests
from databricks.sdk.service import sql


def run_sql(w, warehouse, statement):
    result = w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse, wait_timeout="30s")
    assert result.status.state == sql.StatementState.SUCCEEDED, (statement, result.status)
    return result


def deploy(server, name, path, scopes=(), resources=(), workers=2):
    response = requests.post(
        server.url("/api/2.0/deputy/agents"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={
            "name": name,
            "source_path": str(path),
            "user_scopes": list(scopes),
            "system_resources": list(resources),
            "workers": workers,
        },
        timeout=300,
    )
    assert response.status_code == 200, response.text
    return response.json()


def let_users_query(server, endpoint_id):
    requests.put(
        server.url(f"/api/2.0/permissions/serving-endpoints/{endpoint_id}"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={"access_control_list": [{"group_name": "users", "permission_level": "CAN_QUERY"}]},
        timeout=10,
    ).raise_for_status()


def set_obo(server, enabled):
    response = requests.patch(
        server.url("/api/2.0/deputy/settings"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={"obo-enabled": enabled},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["obo-enabled"] is enabled


def ask(server, token, endpoint, question, timeout=120):
    return requests.post(
        server.url(f"/serving-endpoints/{endpoint}/invocations"),
        headers={"Authorization": f"Bearer {token}"},
        json={"messages": [{"role": "user", "content": question}]},
        timeout=timeout,
    )


def json_answer(response):
    """The content of the last message, for agents that answer with a JSON object."""
    assert response.status_code == 200, response.text
    return json.loads(response.json()["messages"][-1]["content"])
