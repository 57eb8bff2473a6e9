"""SQL statement execution and warehouses with the real databricks-sdk: synchronous and asynchronous statements,
parameters, SQL errors as FAILED statements, and a row filter that follows the end user."""

import time

from databricks.sdk import WorkspaceClient
from databricks.sdk.service import iam, sql


def _warehouse_id(w: WorkspaceClient) -> str:
    warehouses = list(w.warehouses.list())
    assert warehouses, "a default warehouse exists after bootstrap"
    fetched = w.warehouses.get(warehouses[0].id)
    assert fetched.state == sql.State.RUNNING
    return fetched.id


def _run(w: WorkspaceClient, warehouse: str, statement: str, **kwargs) -> sql.StatementResponse:
    return w.statement_execution.execute_statement(statement=statement, warehouse_id=warehouse, wait_timeout="30s", **kwargs)


def test_statements_sync_async_parameters_and_errors(admin):
    warehouse = _warehouse_id(admin)
    for statement in [
        "CREATE CATALOG IF NOT EXISTS sdk",
        "CREATE SCHEMA IF NOT EXISTS sdk.shop",
        "CREATE TABLE sdk.shop.items (id INT, name STRING, price DOUBLE)",
        "INSERT INTO sdk.shop.items VALUES (1, 'pen', 1.5), (2, 'book', 12.0), (3, 'lamp', 30.25)",
    ]:
        response = _run(admin, warehouse, statement)
        assert response.status.state == sql.StatementState.SUCCEEDED, (statement, response.status)

    response = _run(admin, warehouse, "SELECT id, name, price FROM sdk.shop.items ORDER BY id")
    assert response.result.data_array == [["1", "pen", "1.5"], ["2", "book", "12.0"], ["3", "lamp", "30.25"]]
    assert [column.type_name for column in response.manifest.schema.columns] == [
        sql.ColumnInfoTypeName.INT,
        sql.ColumnInfoTypeName.STRING,
        sql.ColumnInfoTypeName.DOUBLE,
    ]

    pending = admin.statement_execution.execute_statement(
        statement="SELECT name FROM sdk.shop.items WHERE price > :limit ORDER BY name",
        warehouse_id=warehouse,
        wait_timeout="0s",
        parameters=[sql.StatementParameterListItem(name="limit", value="10", type="DOUBLE")],
    )
    statement_id = pending.statement_id
    state = pending.status.state
    deadline = time.time() + 30
    while state in (sql.StatementState.PENDING, sql.StatementState.RUNNING) and time.time() < deadline:
        time.sleep(0.1)
        polled = admin.statement_execution.get_statement(statement_id)
        state = polled.status.state
    assert state == sql.StatementState.SUCCEEDED
    assert polled.result.data_array == [["book"], ["lamp"]]

    failed = _run(admin, warehouse, "SELECT * FROM sdk.shop.missing")
    assert failed.status.state == sql.StatementState.FAILED
    assert "cannot be found" in failed.status.error.message


def test_a_row_filter_follows_the_end_user(admin, server):
    warehouse = _warehouse_id(admin)
    user = admin.users.create(user_name="sql-user@example.com")
    token = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=600).token_value
    as_user = WorkspaceClient(host=server.host, token=token, auth_type="pat")
    for statement in [
        "CREATE CATALOG IF NOT EXISTS rls",
        "CREATE SCHEMA IF NOT EXISTS rls.hr",
        "CREATE TABLE rls.hr.staff (name STRING, owner STRING)",
        "INSERT INTO rls.hr.staff VALUES ('a', 'sql-user@example.com'), ('b', 'someone@example.com')",
        "CREATE FUNCTION rls.hr.mine(owner STRING) RETURNS BOOLEAN RETURN owner = current_user()",
        "ALTER TABLE rls.hr.staff SET ROW FILTER rls.hr.mine ON (owner)",
        "GRANT USE CATALOG ON CATALOG rls TO `sql-user@example.com`",
        "GRANT USE SCHEMA ON SCHEMA rls.hr TO `sql-user@example.com`",
        "GRANT SELECT ON TABLE rls.hr.staff TO `sql-user@example.com`",
    ]:
        assert _run(admin, warehouse, statement).status.state == sql.StatementState.SUCCEEDED, statement
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[
            iam.AccessControlRequest(user_name="sql-user@example.com", permission_level=iam.PermissionLevel.CAN_USE)
        ],
    )
    mine = _run(as_user, warehouse, "SELECT name FROM rls.hr.staff")
    assert mine.status.state == sql.StatementState.SUCCEEDED, mine.status
    assert mine.result.data_array == [["a"]]
    everyone = _run(admin, warehouse, "SELECT COUNT(*) FROM rls.hr.staff")
    assert everyone.result.data_array == [["0"]], "the admin is not the owner named in any row"
