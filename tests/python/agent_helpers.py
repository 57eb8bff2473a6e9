"""What the agent tests share: running SQL as admin, logging an agent with MLflow, deploying it, switching
on-behalf-of, asking an agent, the service principal an agent acts as, and the seed's RAG scenario."""

import json
import os
import subprocess
import sys
from pathlib import Path

import requests
from databricks.sdk.service import sql
from databricks.sdk.service import vectorsearch as vs

RAG_AGENT_DIR = Path(__file__).resolve().parents[2] / "python" / "examples" / "rag_agent"
RAG_INDEX = "demo.docs.documents_index"
RAG_QUESTION = "What are we launching next quarter?"
# (id, title, department, body): `everyone`'s documents are readable by all, the others by the department's group.
RAG_DOCUMENTS = [
    (1, "Holiday calendar", "everyone", "The office is closed on the first Monday of May."),
    (2, "Falcon launch plan", "engineering", "Project Falcon, our new search engine, launches next quarter."),
    (3, "Falcon architecture", "engineering", "Falcon shards the index across twelve storage nodes."),
    (4, "Acme renewal", "sales", "Acme renews its contract next quarter for two million dollars."),
    (5, "Pricing change", "sales", "List prices rise by five percent next quarter."),
]


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


def rag_scenario(server, admin, model_dir, index_readers, endpoint="rag-agent"):
    """The seed's RAG scenario on `server` (`admin` is the bootstrap admin's WorkspaceClient): a documents table with
    a row filter (public documents, plus those of the reader's department group, all for `admins`), a delta-sync
    vector index over it embedded by the built-in model, SELECT on the index for `index_readers` (principal names
    that exist now), and the seed's RAG agent logged into `model_dir`, deployed as `endpoint`, queryable by `users`,
    with on-behalf-of access on. The built-in models must be installed (`deputy models install`)."""
    warehouse = admin.warehouses.create(name="rag-warehouse").result().id
    rows = ", ".join(f"({i}, '{title}', '{dept}', '{body}')" for i, title, dept, body in RAG_DOCUMENTS)
    for statement in [
        "CREATE CATALOG demo",
        "CREATE SCHEMA demo.docs",
        "CREATE TABLE demo.docs.documents (id INT, title STRING, department STRING, body STRING)",
        f"INSERT INTO demo.docs.documents VALUES {rows}",
        "CREATE FUNCTION demo.docs.readable(department STRING) RETURNS BOOLEAN "
        "RETURN department = 'everyone' OR is_account_group_member(department) OR is_account_group_member('admins')",
        "ALTER TABLE demo.docs.documents SET ROW FILTER demo.docs.readable ON (department)",
        "GRANT USE CATALOG ON CATALOG demo TO `users`",
        "GRANT USE SCHEMA ON SCHEMA demo.docs TO `users`",
    ]:
        run_sql(admin, warehouse, statement)
    admin.vector_search_endpoints.create_endpoint_and_wait(name="demo-docs", endpoint_type=vs.EndpointType.STANDARD)
    admin.vector_search_indexes.create_index(
        name=RAG_INDEX,
        endpoint_name="demo-docs",
        primary_key="id",
        index_type=vs.VectorIndexType.DELTA_SYNC,
        delta_sync_index_spec=vs.DeltaSyncVectorIndexSpecRequest(
            source_table="demo.docs.documents",
            pipeline_type=vs.PipelineType.TRIGGERED,
            embedding_source_columns=[
                vs.EmbeddingSourceColumn(name="body", embedding_model_endpoint_name="deputy-embed-minilm")
            ],
        ),
    )
    for reader in index_readers:
        run_sql(admin, warehouse, f"GRANT SELECT ON TABLE {RAG_INDEX} TO `{reader}`")

    # Logging a ChatAgent runs it once on an example (MLflow validates the output), so it is logged as the admin.
    environment = {**os.environ, "DATABRICKS_HOST": server.host, "DATABRICKS_TOKEN": server.admin_token}
    logged = subprocess.run(
        [sys.executable, str(RAG_AGENT_DIR / "log_agent.py"), str(model_dir)],
        env=environment, capture_output=True, text=True, timeout=300,
    )
    assert logged.returncode == 0, logged.stderr
    assert "vectorsearch.vector-search-indexes" in (Path(model_dir) / "MLmodel").read_text()
    deployed = deploy(server, endpoint, model_dir)
    let_users_query(server, deployed["id"])
    set_obo(server, True)
    return deployed
