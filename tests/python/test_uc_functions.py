"""Unity Catalog SQL functions that read tables, with the real `unitycatalog-ai` client (`DatabricksFunctionClient`
on a SQL warehouse), the statement API, and a deployed agent whose tools are the functions (`UCFunctionToolkit`).

An orders table has a row filter (each user sees the orders they own) and a masked `customer` column (clear for the
account managers, alice's group; `A***` for everyone else). Over it: a scalar function whose body is a scalar
subquery and a table function. The rights are Unity Catalog's, definer's rights: the caller needs EXECUTE on the
function (and USE CATALOG / USE SCHEMA), the function's owner needs SELECT on the table, the caller does not; the row
filter and the mask are applied for the CALLER (`current_user()`, `is_account_group_member()`). So alice and bob call
the same functions and each gets their own orders, bob with masked customers; neither may read the table directly;
carol, without EXECUTE, is refused; a function whose owner has no SELECT on the table fails until the owner gets it.
A deployed agent calls the same functions as its user, through the toolkit, with the user's on-behalf-of token; a
declarative agent does the same with a `function:` tool.
"""

import json
from datetime import timedelta
from pathlib import Path

import pytest
from agent_helpers import ask, deploy, json_answer, let_users_query, log_agent, run_sql, service_principal, set_obo
from databricks.sdk import WorkspaceClient
from databricks.sdk.service import catalog, iam, serving, sql
from mcp_helpers import audit_events, last_seq, tool_caller
from unitycatalog.ai.core.databricks import DatabricksFunctionClient

# unitycatalog-ai warns about functions and parameters without a COMMENT (descriptions for a model); no model here.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The following parameters do not have descriptions"),
    pytest.mark.filterwarnings("ignore:The function .* does not have a description"),
]

CATALOG, SCHEMA = "uc_fn_demo", "sales"
ORDERS = f"{CATALOG}.{SCHEMA}.orders"
TOTAL = f"{CATALOG}.{SCHEMA}.total_for"  # scalar: a scalar subquery over the orders
TOP_CUSTOMER = f"{CATALOG}.{SCHEMA}.top_customer"  # scalar over the masked column
TOTAL_OVER = f"{CATALOG}.{SCHEMA}.total_over"  # scalar with a STRING and an INT parameter
ORDERS_IN = f"{CATALOG}.{SCHEMA}.orders_in"  # table function
BY_REGION = f"{CATALOG}.{SCHEMA}.by_region"  # table function whose parameter is shadowed by a column
ALICE, BOB, CAROL, DANA = (f"ucf-{name}@example.com" for name in ("alice", "bob", "carol", "dana"))
MANAGERS = "ucf-account-managers"
ORDER_ROWS = [
    (1, "west", ALICE, 100, "Acme"),
    (2, "west", ALICE, 250, "Globex"),
    (3, "east", ALICE, 40, "Initech"),
    (4, "west", BOB, 70, "Umbrella"),
    (5, "east", BOB, 300, "Hooli"),
    (6, "west", CAROL, 999, "Stark"),
    (7, "west", DANA, 5000, "Wayne"),
]
ORDERS_IN_BODY = f"SELECT id, customer, amount FROM {ORDERS} WHERE region = area ORDER BY id"
TOTAL_BODY = f"(SELECT CAST(sum(amount) AS INT) FROM {ORDERS} WHERE region = area)"
AGENT = Path(__file__).parent / "agents" / "uc_function_agent.py"
AGENT_SCOPES = ["catalog.functions", "sql.statement-execution"]
TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def world(server, admin):
    """The users and their tokens, the filtered and masked orders, the functions (EXECUTE for alice and bob, nothing
    for carol), no SELECT on the table for anyone but its owner, and a warehouse all of them may use."""
    warehouse = admin.warehouses.create(name="uc-functions-warehouse").result(timeout=timedelta(seconds=60)).id
    tokens, ids = {}, {}
    for name in (ALICE, BOB, CAROL, DANA):
        user = admin.users.create(user_name=name)
        ids[name] = user.id
        created = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=3600)
        tokens[name] = created.token_value
    admin.groups.create(display_name=MANAGERS, members=[iam.ComplexValue(value=ids[ALICE])])
    rows = ", ".join(f"({i}, '{region}', '{owner}', {amount}, '{customer}')"
                     for i, region, owner, amount, customer in ORDER_ROWS)
    statements = [
        f"CREATE CATALOG {CATALOG}",
        f"CREATE SCHEMA {CATALOG}.{SCHEMA}",
        f"CREATE TABLE {ORDERS} (id INT, region STRING, owner STRING, amount INT, customer STRING)",
        f"INSERT INTO {ORDERS} VALUES {rows}",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.mine(owner STRING) RETURNS BOOLEAN RETURN owner = current_user()",
        f"ALTER TABLE {ORDERS} SET ROW FILTER {CATALOG}.{SCHEMA}.mine ON (owner)",
        f"CREATE FUNCTION {CATALOG}.{SCHEMA}.hide_customer(customer STRING) RETURNS STRING "
        f"RETURN CASE WHEN is_account_group_member('{MANAGERS}') THEN customer "
        "ELSE concat(substr(customer, 1, 1), '***') END",
        f"ALTER TABLE {ORDERS} ALTER COLUMN customer SET MASK {CATALOG}.{SCHEMA}.hide_customer",
        f"CREATE FUNCTION {TOTAL}(area STRING) RETURNS INT COMMENT 'The total amount of my orders in a region' "
        f"RETURN {TOTAL_BODY}",
        f"CREATE FUNCTION {TOP_CUSTOMER}(area STRING) RETURNS STRING "
        f"RETURN (SELECT max(customer) FROM {ORDERS} WHERE region = area)",
        f"CREATE FUNCTION {TOTAL_OVER}(area STRING, min_amount INT) RETURNS INT "
        f"RETURN (SELECT CAST(sum(amount) AS INT) FROM {ORDERS} WHERE region = area AND amount >= min_amount)",
        f"CREATE FUNCTION {ORDERS_IN}(area STRING) RETURNS TABLE (id INT, customer STRING, amount INT) "
        f"COMMENT 'My orders in a region' RETURN {ORDERS_IN_BODY}",
        f"CREATE FUNCTION {BY_REGION}(region STRING) RETURNS TABLE (id INT) "
        f"RETURN SELECT id FROM {ORDERS} WHERE region = region ORDER BY id",
        f"GRANT USE CATALOG ON CATALOG {CATALOG} TO `users`",
        f"GRANT USE SCHEMA ON SCHEMA {CATALOG}.{SCHEMA} TO `users`",
    ]
    statements += [
        f"GRANT EXECUTE ON FUNCTION {function} TO `{user}`"
        for function in (TOTAL, TOP_CUSTOMER, TOTAL_OVER, ORDERS_IN, BY_REGION)
        for user in (ALICE, BOB)
    ]
    for text in statements:
        run_sql(admin, warehouse, text)
    admin.permissions.update(
        request_object_type="warehouses",
        request_object_id=warehouse,
        access_control_list=[
            iam.AccessControlRequest(group_name="users", permission_level=iam.PermissionLevel.CAN_USE),
        ],
    )
    clients = {name: WorkspaceClient(host=server.host, token=token, auth_type="pat") for name, token in tokens.items()}
    return {"warehouse": warehouse, "tokens": tokens, "clients": clients}


def function_client(world, user):
    """unitycatalog-ai's client for `user`, executing on the world's warehouse."""
    return DatabricksFunctionClient(client=world["clients"][user], warehouse_id=world["warehouse"])


def statement(w, warehouse, text, **parameters):
    """Runs `text` with named parameters (a value, or (value, type)) and returns the response, failed or not."""
    items = [
        sql.StatementParameterListItem(name=name, value=value[0], type=value[1])
        if isinstance(value, tuple)
        else sql.StatementParameterListItem(name=name, value=value)
        for name, value in parameters.items()
    ]
    return w.statement_execution.execute_statement(
        statement=text, warehouse_id=warehouse, wait_timeout="30s", parameters=items or None
    )


def rows_of(response):
    assert response.status.state == sql.StatementState.SUCCEEDED, response.status
    return response.result.data_array or []


def error_of(response):
    assert response.status.state == sql.StatementState.FAILED, (response.status, response.result)
    return response.status.error.message


def scalar(world, user, function, **arguments):
    result = function_client(world, user).execute_function(function, arguments)
    assert result.error is None, result.error
    assert result.format == "SCALAR", result
    return result.value


def table(world, user, function, **arguments):
    result = function_client(world, user).execute_function(function, arguments)
    assert result.error is None, result.error
    assert result.format == "CSV", result
    return result.value


# --- metadata ------------------------------------------------------------------------------------------------------


def test_get_function_describes_the_table_function(world):
    info = function_client(world, ALICE).get_function(ORDERS_IN)
    assert info.full_name == ORDERS_IN
    assert info.data_type == catalog.ColumnTypeName.TABLE_TYPE
    assert info.routine_body == catalog.FunctionInfoRoutineBody.SQL
    assert info.routine_definition == ORDERS_IN_BODY
    assert info.comment == "My orders in a region"
    assert info.full_data_type, info
    assert all(column in info.full_data_type.lower() for column in ("id", "customer", "amount")), info.full_data_type
    assert [(p.name, p.type_text, p.type_name, p.position) for p in info.input_params.parameters] == [
        ("area", "string", catalog.ColumnTypeName.STRING, 0),
    ]
    assert info.return_params is not None, info
    assert [(p.name, p.type_text, p.type_name, p.position) for p in info.return_params.parameters] == [
        ("id", "int", catalog.ColumnTypeName.INT, 0),
        ("customer", "string", catalog.ColumnTypeName.STRING, 1),
        ("amount", "int", catalog.ColumnTypeName.INT, 2),
    ]


def test_get_function_describes_the_scalar_function_with_a_subquery(world):
    info = function_client(world, BOB).get_function(TOTAL)
    assert info.full_name == TOTAL
    assert info.data_type == catalog.ColumnTypeName.INT
    assert info.full_data_type == "int"
    assert info.routine_body == catalog.FunctionInfoRoutineBody.SQL
    assert info.routine_definition == TOTAL_BODY
    assert [(p.name, p.type_text, p.type_name, p.position) for p in info.input_params.parameters] == [
        ("area", "string", catalog.ColumnTypeName.STRING, 0),
    ]
    assert not (info.return_params and info.return_params.parameters), info.return_params


def test_get_function_gives_the_type_json_the_toolkits_need(world):
    """`UCFunctionToolkit` (LangChain and OpenAI alike) builds a tool's argument schema from each input parameter's
    `type_json`, Spark's JSON form of the field (`{"name": ..., "type": "string", "nullable": true, "metadata": {}}`),
    and refuses a parameter without one."""
    info = function_client(world, ALICE).get_function(TOTAL_OVER)
    types = [p.type_json and json.loads(p.type_json) for p in info.input_params.parameters]
    assert all(types), info.input_params
    assert [(t["name"], t["type"], t["nullable"]) for t in types] in (
        [("area", "string", True), ("min_amount", "integer", True)],  # Databricks (Spark's name for INT)
        [("area", "string", True), ("min_amount", "int", True)],  # also understood by the toolkits
    ), types


# --- calls through unitycatalog-ai ---------------------------------------------------------------------------------


def test_each_caller_gets_the_scalar_over_their_own_rows(world):
    """The row filter runs for the caller: alice and bob get different sums from the same call; the owner (admin,
    who owns no order) would get none, and carol's and dana's orders count for nobody else."""
    assert scalar(world, ALICE, TOTAL, area="west") == "350"
    assert scalar(world, ALICE, TOTAL, area="east") == "40"
    assert scalar(world, BOB, TOTAL, area="west") == "70"
    assert scalar(world, BOB, TOTAL, area="east") == "300"
    assert scalar(world, BOB, TOTAL, area="north") is None


def test_the_mask_applies_for_the_caller_inside_a_scalar_subquery(world):
    # alice is an account manager and sees customers; bob sees the mask; the owner (admin) is not a manager.
    assert scalar(world, ALICE, TOP_CUSTOMER, area="west") == "Globex"
    assert scalar(world, BOB, TOP_CUSTOMER, area="west") == "U***"
    assert scalar(world, BOB, TOP_CUSTOMER, area="east") == "H***"


def test_each_caller_gets_the_table_functions_rows_with_their_mask(world):
    assert table(world, ALICE, ORDERS_IN, area="west") == "id,customer,amount\n1,Acme,100\n2,Globex,250\n"
    assert table(world, ALICE, ORDERS_IN, area="east") == "id,customer,amount\n3,Initech,40\n"
    assert table(world, BOB, ORDERS_IN, area="west") == "id,customer,amount\n4,U***,70\n"
    assert table(world, BOB, ORDERS_IN, area="east") == "id,customer,amount\n5,H***,300\n"
    assert table(world, BOB, ORDERS_IN, area="north") == "id,customer,amount\n"


def test_an_int_argument_from_unitycatalog_ai(world):
    """unitycatalog-ai sends an INT argument as a JSON number (`{"name": "min_amount", "value": 200, "type": "int"}`)
    in `SELECT IDENTIFIER(:function_name)(:area,:min_amount)`."""
    assert scalar(world, ALICE, TOTAL_OVER, area="west", min_amount=200) == "250"
    assert scalar(world, BOB, TOTAL_OVER, area="west", min_amount=50) == "70"


def test_the_callers_need_no_select_on_the_table(world):
    """Neither alice nor bob may read the orders themselves; the functions read them with their owner's SELECT."""
    for user in (ALICE, BOB):
        message = error_of(statement(world["clients"][user], world["warehouse"], f"SELECT * FROM {ORDERS}"))
        assert "TABLE_OR_VIEW_NOT_FOUND" in message, message
    assert scalar(world, ALICE, TOTAL, area="west") == "350"


def test_a_caller_without_execute_is_refused(world):
    """carol may use the catalog, the schema and the warehouse, and owns an order, but holds no EXECUTE."""
    client = function_client(world, CAROL)
    for function, arguments in ((TOTAL, {"area": "west"}), (ORDERS_IN, {"area": "west"})):
        # unitycatalog-ai reads the function first: the catalog answers 403 naming the missing privilege.
        with pytest.raises(PermissionError) as refused:
            client.execute_function(function, arguments)
        message = str(refused.value)
        assert "EXECUTE" in message and function in message, message
    # In SQL the schema is visible to her, so the refusal names the privilege and the function.
    for function, text in ((TOTAL, f"SELECT {TOTAL}('west')"), (ORDERS_IN, f"SELECT * FROM {ORDERS_IN}('west')")):
        message = error_of(statement(world["clients"][CAROL], world["warehouse"], text))
        assert "EXECUTE" in message and function in message, message
        assert "999" not in message and "Stark" not in message, message


# --- the statement API ---------------------------------------------------------------------------------------------


def test_the_statement_api_calls_the_table_function_with_a_parameter(world):
    query = f"SELECT * FROM {ORDERS_IN}(:area)"
    alice = statement(world["clients"][ALICE], world["warehouse"], query, area="west")
    assert rows_of(alice) == [["1", "Acme", "100"], ["2", "Globex", "250"]]
    assert [(c.name, c.type_name) for c in alice.manifest.schema.columns] == [
        ("id", sql.ColumnInfoTypeName.INT),
        ("customer", sql.ColumnInfoTypeName.STRING),
        ("amount", sql.ColumnInfoTypeName.INT),
    ]
    bob = statement(world["clients"][BOB], world["warehouse"], query, area=("west", "STRING"))
    assert rows_of(bob) == [["4", "U***", "70"]]
    # The table function in a larger query: joined, filtered and aggregated like a table.
    count = statement(world["clients"][ALICE], world["warehouse"],
                      f"SELECT count(*), sum(amount) FROM {ORDERS_IN}(:area) WHERE amount > 150", area="west")
    assert rows_of(count) == [["1", "250"]]


def test_the_statement_api_calls_a_scalar_function_by_identifier(world):
    """unitycatalog-ai's scalar call: `SELECT IDENTIFIER(:function_name)(:a, :b)`."""
    query = "SELECT IDENTIFIER(:function_name)(:area, :min_amount)"
    for user, minimum, expected in ((ALICE, "200", "250"), (BOB, "50", "70"), (BOB, "500", None)):
        response = statement(world["clients"][user], world["warehouse"], query,
                             function_name=TOTAL_OVER, area=("west", "STRING"), min_amount=(minimum, "INT"))
        assert rows_of(response) == [[expected]], (user, minimum)


def test_the_owner_is_not_the_one_the_row_filter_sees(admin, world):
    """The admin owns the functions and owns no order: the filter, applied for the admin as the caller, leaves none."""
    response = statement(admin, world["warehouse"], f"SELECT {TOTAL}('west')")
    assert rows_of(response) == [[None]]
    assert rows_of(statement(admin, world["warehouse"], f"SELECT * FROM {ORDERS_IN}('west')")) == []


def test_a_column_of_the_same_name_wins_over_a_parameter(world):
    """In `WHERE region = region` both sides are the column (as in Databricks): every row the caller may see."""
    response = statement(world["clients"][ALICE], world["warehouse"], f"SELECT * FROM {BY_REGION}('nowhere')")
    assert rows_of(response) == [["1"], ["2"], ["3"]]


# --- definer's rights: the owner's SELECT ---------------------------------------------------------------------------


def test_the_function_reads_with_its_owners_select_and_the_callers_filter(admin, world):
    """dana owns a function over the orders but may not read them: calling it fails for alice. Once dana has SELECT,
    alice gets her own orders: the filter is for the caller, not for dana (whose order of 5000 never shows)."""
    function = f"{CATALOG}.{SCHEMA}.danas_total"
    for text in [
        f"CREATE FUNCTION {function}(area STRING) RETURNS INT RETURN {TOTAL_BODY}",
        f"GRANT EXECUTE ON FUNCTION {function} TO `{ALICE}`",
        f"GRANT EXECUTE ON FUNCTION {function} TO `{BOB}`",
    ]:
        run_sql(admin, world["warehouse"], text)
    assert admin.functions.update(function, owner=DANA).owner == DANA
    refused = function_client(world, ALICE).execute_function(function, {"area": "west"})
    assert refused.value is None and refused.error, refused
    assert "SELECT" in refused.error or ORDERS in refused.error, refused.error
    run_sql(admin, world["warehouse"], f"GRANT SELECT ON TABLE {ORDERS} TO `{DANA}`")
    assert scalar(world, ALICE, function, area="west") == "350"
    assert scalar(world, BOB, function, area="west") == "70"
    # dana's SELECT is hers alone: alice still may not read the table.
    message = error_of(statement(world["clients"][ALICE], world["warehouse"], f"SELECT * FROM {ORDERS}"))
    assert "TABLE_OR_VIEW_NOT_FOUND" in message, message


# --- a deployed agent with the functions as tools ------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent(server, admin, world, tmp_path_factory):
    """The toolkit agent logged with MLflow's UserAuthPolicy (the scopes unitycatalog-ai's calls need), deployed, and
    queryable by every user; its configuration is the functions and the warehouse."""
    model = log_agent(tmp_path_factory.mktemp("uc-function-agent") / "model", AGENT, AGENT_SCOPES)
    deployed = deploy(server, "uc-function-agent", model)
    let_users_query(server, deployed["id"])
    set_obo(server, True)
    return {"functions": [TOTAL, ORDERS_IN], "warehouse_id": world["warehouse"]}


def ask_agent(server, world, agent, user, question):
    return json_answer(ask(server, world["tokens"][user], "uc-function-agent", question,
                           timeout=TIMEOUT_SECONDS, custom_inputs=agent))


def tool_name(function):
    return function.replace(".", "__")


def test_the_agent_answers_each_user_from_their_own_rows_with_the_table_function(server, world, agent):
    tools = sorted(tool_name(function) for function in (TOTAL, ORDERS_IN))
    question = f'{tool_name(ORDERS_IN)} {{"area": "west"}}'
    expected = {ALICE: "id,customer,amount\n1,Acme,100\n2,Globex,250\n", BOB: "id,customer,amount\n4,U***,70\n"}
    for user, rows in expected.items():
        answer = ask_agent(server, world, agent, user, question)
        assert answer["user"] == user and answer["tools"] == tools, answer
        assert answer.get("result") == {"format": "CSV", "value": rows, "truncated": False}, answer


def test_the_agent_answers_each_user_from_their_own_rows_with_the_scalar_function(server, world, agent):
    question = f'{tool_name(TOTAL)} {{"area": "west"}}'
    for user, total in ((ALICE, "350"), (BOB, "70")):
        answer = ask_agent(server, world, agent, user, question)
        assert answer["user"] == user, answer
        assert answer.get("result") == {"format": "SCALAR", "value": total, "truncated": False}, answer


def test_the_agent_gets_no_tool_for_a_user_without_execute(server, world, agent):
    answer = ask_agent(server, world, agent, CAROL, f'{tool_name(TOTAL)} {{"area": "west"}}')
    assert "result" not in answer, answer
    # On Databricks the toolkit skips a function the user may not execute (a 403); a 404 stops it.
    assert answer.get("tools") == [] or TOTAL in answer.get("toolkit_error", ""), answer
    assert "999" not in json.dumps(answer), answer


def test_the_agents_statements_run_as_the_user_with_the_agent_as_actor(server, world, agent):
    after = last_seq(server)
    answer = ask_agent(server, world, agent, BOB, f'{tool_name(ORDERS_IN)} {{"area": "east"}}')
    assert answer.get("result", {}).get("value") == "id,customer,amount\n5,H***,300\n", answer
    actor = service_principal(server, "uc-function-agent")
    events = [event for event in audit_events(server, after) if event["user_name"] == BOB]
    statements = [event for event in events if event["api"].startswith("POST /api/2.0/sql/statements")]
    assert statements, events
    assert all(event["allowed"] and event["actors"] == [actor] for event in statements), statements
    assert all(event["endpoint"] == "uc-function-agent" for event in statements), statements


# --- a declarative agent with a `function:` tool ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def declarative(server, admin, world, tmp_path_factory):
    """A declarative agent whose tool is the scalar function, thinking with a tool-calling test double (no LLM here):
    the user's message says which call the double asks for. A user who may not use the tool runs without it."""
    with tool_caller() as model_url:
        external = serving.ExternalModel(
            provider=serving.ExternalModelProvider.OPENAI,
            name="ucf-tool-caller",
            task="llm/v1/chat",
            openai_config=serving.OpenAiConfig(openai_api_base=model_url, openai_api_key_plaintext="sk-test-double"),
        )
        admin.serving_endpoints.create(
            name="ucf-tool-caller",
            config=serving.EndpointCoreConfigInput(
                name="ucf-tool-caller",
                served_entities=[serving.ServedEntityInput(name="ucf-tool-caller", external_model=external)],
            ),
        )
        definition = tmp_path_factory.mktemp("ucf-declarative") / "agent.yaml"
        definition.write_text(
            "model: ucf-tool-caller\n"
            "instructions: You answer questions about the user's own orders.\n"
            "on_missing_access: skip\n"
            "user_scopes: [sql.statement-execution]\n"
            "tools:\n"
            f"  - function: {{name: {TOTAL}, warehouse_id: '{world['warehouse']}', "
            "description: The total amount of my orders in a region.}\n"
        )
        deployed = deploy(server, "ucf-declarative", definition)
        let_users_query(server, deployed["id"])
        set_obo(server, True)
        yield deployed


def ask_declarative(server, world, user, arguments):
    question = json.dumps({"tool": tool_name(TOTAL), "arguments": arguments})
    response = ask(server, world["tokens"][user], "ucf-declarative", question, timeout=TIMEOUT_SECONDS)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_declarative_function_tool_answers_each_user_from_their_own_rows(server, world, declarative):
    for user, expected in ((ALICE, "350"), (BOB, "70")):
        answer = ask_declarative(server, world, user, {"area": "west"})
        assert answer["custom_outputs"]["tools"] == [tool_name(TOTAL)], answer["custom_outputs"]
        assert answer["custom_outputs"]["skipped_tools"] == [], answer["custom_outputs"]
        [result] = [message for message in answer["messages"] if message["role"] == "tool"]
        assert json.loads(result["content"])["rows"] == [[expected]], (user, result)


def test_the_declarative_function_tool_is_skipped_for_a_user_without_execute(server, world, declarative):
    answer = ask_declarative(server, world, CAROL, {"area": "west"})
    [skipped] = answer["custom_outputs"]["skipped_tools"]
    assert skipped["tool"] == tool_name(TOTAL) and "EXECUTE" in skipped["reason"], skipped
    assert answer["custom_outputs"]["tools"] == [], answer["custom_outputs"]
    assert "999" not in json.dumps(answer), answer
