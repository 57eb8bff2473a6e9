"""What the agent tests share: running SQL as admin, logging an agent with MLflow, deploying it, switching
on-behalf-of, asking an agent, the service principal an agent acts as."""

import json
import subprocess
import sys

import requests
from databricks.sdk.service import sql


def run_sql(w, warehouse, statement):
    result = w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse, wait_timeout="30s")
    assert result.status.state == sql.StatementState.SUCCEEDED, (statement, result.status)
    return result


# Logs an agent as an MLflow model directory whose MLmodel declares the user API scopes (argv: output, code, scopes).
LOG_AGENT = """
import sys
import mlflow
from mlflow.models.auth_policy import AuthPolicy, SystemAuthPolicy, UserAuthPolicy
mlflow.pyfunc.save_model(
    path=sys.argv[1],
    python_model=sys.argv[2],
    pip_requirements=[],
    auth_policy=AuthPolicy(
        user_auth_policy=UserAuthPolicy(api_scopes=sys.argv[3:]),
        system_auth_policy=SystemAuthPolicy(resources=[]),
    ),
)
"""


def log_agent(directory, code, scopes):
    """The models-from-code agent `code` logged into `directory` with MLflow's `UserAuthPolicy(api_scopes=scopes)`."""
    logged = subprocess.run(
        [sys.executable, "-c", LOG_AGENT, str(directory), str(code), *scopes],
        capture_output=True, text=True, timeout=300,
    )
    assert logged.returncode == 0, logged.stderr
    mlmodel = (directory / "MLmodel").read_text()
    assert "api_scopes" in mlmodel and all(scope in mlmodel for scope in scopes), mlmodel
    return directory


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


def serving_endpoint(server, name):
    """A serving endpoint as the admin reads it."""
    response = requests.get(
        server.url(f"/api/2.0/serving-endpoints/{name}"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        timeout=10,
    )
    response.raise_for_status()
    return response.json()


def service_principal(server, endpoint):
    """The service principal a deployed agent acts as (the actor of its on-behalf-of calls)."""
    return serving_endpoint(server, endpoint)["config"]["served_entities"][0]["deputy_agent"]["service_principal"]


def set_obo(server, enabled):
    response = requests.patch(
        server.url("/api/2.0/deputy/settings"),
        headers={"Authorization": f"Bearer {server.admin_token}"},
        json={"obo-enabled": enabled},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    assert response.json()["obo-enabled"] is enabled


def ask(server, token, endpoint, question, timeout=120, custom_inputs=None):
    body = {"messages": [{"role": "user", "content": question}]}
    if custom_inputs is not None:
        body["custom_inputs"] = custom_inputs
    return requests.post(
        server.url(f"/serving-endpoints/{endpoint}/invocations"),
        headers={"Authorization": f"Bearer {token}"},
        json=body,
        timeout=timeout,
    )


def json_answer(response):
    """The content of the last message, for agents that answer with a JSON object."""
    assert response.status_code == 200, response.text
    return json.loads(response.json()["messages"][-1]["content"])
