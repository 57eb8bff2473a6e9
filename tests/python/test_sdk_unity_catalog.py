"""The real databricks-sdk against `deputy serve`: Unity Catalog objects (catalogs, schemas, tables, functions,
connections), their grants and effective permissions, workspace-object ACLs on the default warehouse, and what a
non-admin user may see and do."""

import dataclasses
import json
import uuid

import pytest
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    BadRequest,
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
)
from databricks.sdk.service import catalog, iam

UC = "/api/2.1/unity-catalog"


def unique(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def client(server, token: str) -> WorkspaceClient:
    return WorkspaceClient(host=server.host, token=token, auth_type="pat")


def new_user(admin) -> iam.User:
    name = f"{unique('uc-user')}@example.com"
    return admin.users.create(user_name=name, display_name=f"Display {name}")


def user_client(server, admin, user: iam.User) -> WorkspaceClient:
    created = admin.token_management.create_obo_token(application_id=user.id, lifetime_seconds=600)
    assert created.token_value
    return client(server, created.token_value)


def privileges_of(assignments, principal: str) -> set:
    """The privilege names one principal holds in a list of PrivilegeAssignment."""
    return {
        privilege.value if hasattr(privilege, "value") else privilege
        for assignment in assignments or []
        if assignment.principal == principal
        for privilege in assignment.privileges or []
    }


@pytest.fixture
def catalog_name(admin):
    """A fresh catalog owned by the admin, removed (with everything in it) afterwards."""
    name = unique("cat")
    admin.catalogs.create(name=name, comment="test catalog")
    yield name
    try:
        admin.catalogs.delete(name, force=True)
    except NotFound:
        pass


@pytest.fixture
def schema_name(admin, catalog_name):
    schema = admin.schemas.create(name="sales", catalog_name=catalog_name)
    return schema.full_name


# --- catalogs and schemas ----------------------------------------------------------------------------------------


def test_catalog_lifecycle(admin):
    name = unique("cat")
    created = admin.catalogs.create(name=name, comment="first", properties={"team": "data"})
    assert created.name == name
    assert created.full_name == name
    assert created.owner == "admin"
    assert created.comment == "first"
    assert created.properties == {"team": "data"}
    assert created.catalog_type == catalog.CatalogType.MANAGED_CATALOG
    assert created.created_at and created.created_by == "admin"

    fetched = admin.catalogs.get(name)
    assert (fetched.name, fetched.comment, fetched.owner) == (name, "first", "admin")
    # The SDK sends `max_results=0` and pages while `next_page_token` is non-empty.
    assert name in {c.name for c in admin.catalogs.list()}

    updated = admin.catalogs.update(name, comment="second", properties={"team": "ml"})
    assert updated.comment == "second"
    assert updated.properties == {"team": "ml"}
    assert admin.catalogs.get(name).comment == "second"

    renamed = unique("cat")
    assert admin.catalogs.update(name, new_name=renamed).name == renamed
    with pytest.raises(NotFound):
        admin.catalogs.get(name)

    admin.catalogs.delete(renamed)
    with pytest.raises(NotFound):
        admin.catalogs.get(renamed)
    assert renamed not in {c.name for c in admin.catalogs.list()}


def test_catalog_list_pages_with_small_max_results(admin):
    names = {unique("page") for _ in range(3)}
    for name in names:
        admin.catalogs.create(name=name)
    try:
        listed = [c.name for c in admin.catalogs.list(max_results=1)]
        assert names <= set(listed)
        assert len(listed) == len(set(listed)), "a page repeated a catalog"
    finally:
        for name in names:
            admin.catalogs.delete(name)


def test_schema_lifecycle(admin, catalog_name):
    created = admin.schemas.create(name="raw", catalog_name=catalog_name, comment="landing")
    full_name = f"{catalog_name}.raw"
    assert (created.name, created.catalog_name, created.full_name) == ("raw", catalog_name, full_name)
    assert created.owner == "admin"
    assert created.comment == "landing"

    assert admin.schemas.get(full_name).comment == "landing"
    assert [s.full_name for s in admin.schemas.list(catalog_name=catalog_name)] == [full_name]

    assert admin.schemas.update(full_name, comment="bronze").comment == "bronze"
    assert admin.schemas.get(full_name).comment == "bronze"

    admin.schemas.delete(full_name)
    with pytest.raises(NotFound):
        admin.schemas.get(full_name)
    assert list(admin.schemas.list(catalog_name=catalog_name)) == []


def test_deleting_a_non_empty_catalog_needs_force(admin):
    name = unique("cat")
    admin.catalogs.create(name=name)
    admin.schemas.create(name="inner", catalog_name=name)
    with pytest.raises(BadRequest):
        admin.catalogs.delete(name)
    assert admin.schemas.get(f"{name}.inner").name == "inner"
    admin.catalogs.delete(name, force=True)
    with pytest.raises(NotFound):
        admin.catalogs.get(name)


# --- tables --------------------------------------------------------------------------------------------------------


def test_table_lifecycle(admin, schema_name):
    catalog_name, schema = schema_name.split(".")
    full_name = f"{schema_name}.orders"
    created = admin.tables.create(
        name="orders",
        catalog_name=catalog_name,
        schema_name=schema,
        table_type=catalog.TableType.EXTERNAL,
        data_source_format=catalog.DataSourceFormat.DELTA,
        storage_location="/tmp/deputy-tests/orders",
        columns=[
            catalog.ColumnInfo(name="id", type_text="bigint", type_name=catalog.ColumnTypeName.LONG, position=0),
            catalog.ColumnInfo(
                name="region", type_text="string", type_name=catalog.ColumnTypeName.STRING, position=1
            ),
        ],
        properties={"quality": "gold"},
    )
    assert created.full_name == full_name
    assert created.table_type == catalog.TableType.EXTERNAL
    assert created.data_source_format == catalog.DataSourceFormat.DELTA
    assert created.storage_location == "/tmp/deputy-tests/orders"

    table = admin.tables.get(full_name)
    assert (table.name, table.catalog_name, table.schema_name) == ("orders", catalog_name, schema)
    assert table.owner == "admin"
    assert table.table_id
    assert [(c.name, c.type_name, c.position) for c in table.columns] == [
        ("id", catalog.ColumnTypeName.LONG, 0),
        ("region", catalog.ColumnTypeName.STRING, 1),
    ]
    assert table.properties == {"quality": "gold"}

    assert [t.full_name for t in admin.tables.list(catalog_name=catalog_name, schema_name=schema)] == [full_name]
    assert admin.tables.exists(full_name).table_exists is True
    assert admin.tables.exists(f"{schema_name}.missing").table_exists is False

    owner = new_user(admin)
    admin.tables.update(full_name, owner=owner.user_name)
    assert admin.tables.get(full_name).owner == owner.user_name

    admin.tables.delete(full_name)
    with pytest.raises(NotFound):
        admin.tables.get(full_name)
    assert admin.tables.exists(full_name).table_exists is False
    assert list(admin.tables.list(catalog_name=catalog_name, schema_name=schema)) == []


# --- functions -----------------------------------------------------------------------------------------------------


def test_function_lifecycle(admin, schema_name):
    catalog_name, schema = schema_name.split(".")
    full_name = f"{schema_name}.add_one"
    info = catalog.CreateFunction(
        name="add_one",
        catalog_name=catalog_name,
        schema_name=schema,
        input_params=catalog.FunctionParameterInfos(
            parameters=[
                catalog.FunctionParameterInfo(
                    name="x",
                    type_text="int",
                    type_name=catalog.ColumnTypeName.INT,
                    position=0,
                    comment="the number",
                )
            ]
        ),
        data_type=catalog.ColumnTypeName.INT,
        full_data_type="int",
        routine_body=catalog.CreateFunctionRoutineBody.SQL,
        routine_definition="x + 1",
        parameter_style=catalog.CreateFunctionParameterStyle.S,
        is_deterministic=True,
        sql_data_access=catalog.CreateFunctionSqlDataAccess.CONTAINS_SQL,
        is_null_call=False,
        security_type=catalog.CreateFunctionSecurityType.DEFINER,
        specific_name="add_one",
        comment="adds one",
    )
    created = admin.functions.create(function_info=info)
    assert created.full_name == full_name
    assert created.function_id

    function = admin.functions.get(full_name)
    assert (function.name, function.catalog_name, function.schema_name) == ("add_one", catalog_name, schema)
    assert function.data_type == catalog.ColumnTypeName.INT
    assert function.full_data_type == "int"
    assert function.routine_body == catalog.FunctionInfoRoutineBody.SQL
    assert function.routine_definition == "x + 1"
    assert function.comment == "adds one"
    assert function.owner == "admin"
    [parameter] = function.input_params.parameters
    assert (parameter.name, parameter.type_name, parameter.position) == ("x", catalog.ColumnTypeName.INT, 0)
    assert parameter.type_text == "int"
    assert parameter.comment == "the number"

    assert [f.full_name for f in admin.functions.list(catalog_name=catalog_name, schema_name=schema)] == [full_name]

    admin.functions.delete(full_name)
    with pytest.raises(NotFound):
        admin.functions.get(full_name)
    assert list(admin.functions.list(catalog_name=catalog_name, schema_name=schema)) == []


def test_function_properties_are_a_json_string(admin, schema_name):
    """`CreateFunction.properties` is a JSON-encoded string in the SDK, not an object."""
    catalog_name, schema = schema_name.split(".")
    info = catalog.CreateFunction(
        name="tagged",
        catalog_name=catalog_name,
        schema_name=schema,
        input_params=catalog.FunctionParameterInfos(parameters=[]),
        data_type=catalog.ColumnTypeName.STRING,
        full_data_type="string",
        routine_body=catalog.CreateFunctionRoutineBody.SQL,
        routine_definition="'x'",
        parameter_style=catalog.CreateFunctionParameterStyle.S,
        is_deterministic=True,
        sql_data_access=catalog.CreateFunctionSqlDataAccess.CONTAINS_SQL,
        is_null_call=False,
        security_type=catalog.CreateFunctionSecurityType.DEFINER,
        specific_name="tagged",
        properties='{"owner_team": "data"}',
    )
    created = admin.functions.create(function_info=info)
    assert created.full_name == f"{schema_name}.tagged"
    fetched = admin.functions.get(f"{schema_name}.tagged")
    assert isinstance(fetched.properties, str)
    assert json.loads(fetched.properties) == {"owner_team": "data"}
    with pytest.raises(InvalidParameterValue):
        admin.functions.create(
            function_info=dataclasses.replace(info, name="broken", specific_name="broken", properties="not json")
        )


# --- connections ---------------------------------------------------------------------------------------------------


def test_connection_lifecycle_never_returns_the_secret(admin):
    name = unique("conn")
    secret = "s3cr3t-" + uuid.uuid4().hex
    created = admin.connections.create(
        name=name,
        connection_type=catalog.ConnectionType.HTTP,
        options={"host": "https://api.example.com", "base_path": "/v1", "bearer_token": secret},
        comment="upstream",
    )
    try:
        assert created.name == name
        assert created.connection_type == catalog.ConnectionType.HTTP
        assert created.credential_type == catalog.CredentialType.BEARER_TOKEN
        assert created.owner == "admin"
        assert created.options == {"host": "https://api.example.com", "base_path": "/v1"}

        fetched = admin.connections.get(name)
        assert fetched.name == name
        assert fetched.comment == "upstream"
        assert fetched.connection_id == created.connection_id
        assert "bearer_token" not in (fetched.options or {})
        assert secret not in str(fetched.as_dict())
        raw = admin.api_client.do("GET", f"{UC}/connections/{name}")
        assert secret not in str(raw)

        listed = {c.name: c for c in admin.connections.list()}
        assert name in listed
        assert secret not in str(listed[name].as_dict())

        updated = admin.connections.update(
            name, options={"host": "https://api2.example.com", "bearer_token": "rotated-" + secret}
        )
        assert updated.options["host"] == "https://api2.example.com"
        assert "bearer_token" not in updated.options
        assert admin.connections.get(name).options["host"] == "https://api2.example.com"
    finally:
        admin.connections.delete(name)
    with pytest.raises(NotFound):
        admin.connections.get(name)
    assert name not in {c.name for c in admin.connections.list()}


# --- grants --------------------------------------------------------------------------------------------------------


def test_grants_update_get_and_effective(admin, schema_name):
    catalog_name = schema_name.split(".")[0]
    user = new_user(admin)
    response = admin.grants.update(
        "catalog",
        catalog_name,
        changes=[
            catalog.PermissionsChange(
                principal=user.user_name,
                add=[catalog.Privilege.USE_CATALOG, catalog.Privilege.SELECT, catalog.Privilege.MODIFY],
            )
        ],
    )
    assert privileges_of(response.privilege_assignments, user.user_name) == {"USE_CATALOG", "SELECT", "MODIFY"}

    response = admin.grants.update(
        "catalog",
        catalog_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, remove=[catalog.Privilege.MODIFY])],
    )
    assert privileges_of(response.privilege_assignments, user.user_name) == {"USE_CATALOG", "SELECT"}

    direct = admin.grants.get("catalog", catalog_name)
    assert privileges_of(direct.privilege_assignments, user.user_name) == {"USE_CATALOG", "SELECT"}
    assert admin.grants.get("catalog", catalog_name, principal=user.user_name).privilege_assignments[0].principal == (
        user.user_name
    )
    # Direct grants only: nothing is granted on the schema itself.
    assert privileges_of(admin.grants.get("schema", schema_name).privilege_assignments, user.user_name) == set()

    admin.grants.update(
        "schema",
        schema_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, add=[catalog.Privilege.USE_SCHEMA])],
    )
    effective = admin.grants.get_effective("schema", schema_name, principal=user.user_name)
    [assignment] = effective.privilege_assignments
    assert assignment.principal == user.user_name
    by_privilege = {p.privilege: p for p in assignment.privileges}
    assert set(by_privilege) >= {catalog.Privilege.USE_SCHEMA, catalog.Privilege.SELECT}
    # SELECT comes from the catalog, USE_SCHEMA is direct.
    select = by_privilege[catalog.Privilege.SELECT]
    assert select.inherited_from_type == catalog.SecurableType.CATALOG
    assert select.inherited_from_name == catalog_name
    use_schema = by_privilege[catalog.Privilege.USE_SCHEMA]
    assert use_schema.inherited_from_type is None
    assert use_schema.inherited_from_name is None
    # USE_CATALOG applies to catalogs only, so it is not effective on the schema.
    assert catalog.Privilege.USE_CATALOG not in by_privilege

    # Without a principal: everyone with something on the schema or above, including our user.
    everyone = admin.grants.get_effective("schema", schema_name)
    assert user.user_name in {a.principal for a in everyone.privilege_assignments}

    # Securable types are matched case-insensitively; privileges may be spelled as SQL does.
    admin.api_client.do(
        "PATCH",
        f"{UC}/permissions/CATALOG/{catalog_name}",
        body={"changes": [{"principal": user.user_name, "add": ["USE CATALOG", "BROWSE"]}]},
    )
    assert privileges_of(admin.grants.get("CATALOG", catalog_name).privilege_assignments, user.user_name) == {
        "USE_CATALOG",
        "SELECT",
        "BROWSE",
    }


def test_grants_refuse_unknown_privileges_and_principals(admin, catalog_name):
    user = new_user(admin)
    with pytest.raises(InvalidParameterValue):
        admin.api_client.do(
            "PATCH",
            f"{UC}/permissions/catalog/{catalog_name}",
            body={"changes": [{"principal": user.user_name, "add": ["FLY"]}]},
        )
    with pytest.raises(BadRequest):
        admin.grants.update(
            "catalog",
            catalog_name,
            changes=[catalog.PermissionsChange(principal=user.user_name, add=[catalog.Privilege.USE_CONNECTION])],
        )
    with pytest.raises(BadRequest):
        admin.grants.update(
            "catalog",
            catalog_name,
            changes=[catalog.PermissionsChange(principal="nobody@example.com", add=[catalog.Privilege.BROWSE])],
        )
    assert privileges_of(admin.grants.get("catalog", catalog_name).privilege_assignments, user.user_name) == set()


# --- what a non-admin user sees --------------------------------------------------------------------------------------


def test_user_sees_a_catalog_only_after_grants(server, admin, schema_name):
    catalog_name = schema_name.split(".")[0]
    user = new_user(admin)
    w = user_client(server, admin, user)

    with pytest.raises(NotFound):
        w.catalogs.get(catalog_name)
    assert catalog_name not in {c.name for c in w.catalogs.list()}
    with pytest.raises(NotFound):
        w.schemas.get(schema_name)
    with pytest.raises(NotFound):
        w.grants.get("catalog", catalog_name)

    admin.grants.update(
        "catalog",
        catalog_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, add=[catalog.Privilege.USE_CATALOG])],
    )
    assert w.catalogs.get(catalog_name).name == catalog_name
    assert catalog_name in {c.name for c in w.catalogs.list()}

    # The schema needs USE_SCHEMA (or BROWSE) as well.
    with pytest.raises(NotFound):
        w.schemas.get(schema_name)
    admin.grants.update(
        "schema",
        schema_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, add=[catalog.Privilege.USE_SCHEMA])],
    )
    assert w.schemas.get(schema_name).full_name == schema_name
    assert [s.full_name for s in w.schemas.list(catalog_name=catalog_name)] == [schema_name]

    # Revoking takes effect at once.
    admin.grants.update(
        "catalog",
        catalog_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, remove=[catalog.Privilege.USE_CATALOG])],
    )
    with pytest.raises(NotFound):
        w.catalogs.get(catalog_name)


def test_granting_without_ownership_is_denied(server, admin, catalog_name):
    user = new_user(admin)
    other = new_user(admin)
    w = user_client(server, admin, user)
    admin.grants.update(
        "catalog",
        catalog_name,
        changes=[catalog.PermissionsChange(principal=user.user_name, add=[catalog.Privilege.USE_CATALOG])],
    )
    change = [catalog.PermissionsChange(principal=other.user_name, add=[catalog.Privilege.USE_CATALOG])]
    with pytest.raises(PermissionDenied):
        w.grants.update("catalog", catalog_name, changes=change)
    with pytest.raises(PermissionDenied):
        w.catalogs.update(catalog_name, comment="hijacked")
    with pytest.raises(PermissionDenied):
        w.catalogs.delete(catalog_name)
    assert privileges_of(admin.grants.get("catalog", catalog_name).privilege_assignments, other.user_name) == set()

    # Ownership changes that.
    admin.catalogs.update(catalog_name, owner=user.user_name)
    assert w.catalogs.get(catalog_name).owner == user.user_name
    response = w.grants.update("catalog", catalog_name, changes=change)
    assert privileges_of(response.privilege_assignments, other.user_name) == {"USE_CATALOG"}


def test_bad_names_are_invalid_parameters(admin, catalog_name):
    with pytest.raises(InvalidParameterValue):
        admin.catalogs.create(name="a/b")
    with pytest.raises(BadRequest):
        admin.schemas.create(name="a/b", catalog_name=catalog_name)
    with pytest.raises(InvalidParameterValue):
        admin.connections.create(name="a/b", connection_type=catalog.ConnectionType.HTTP, options={"host": "h"})
    assert "a/b" not in {c.name for c in admin.catalogs.list()}


# --- workspace-object ACLs on the default warehouse ------------------------------------------------------------------


def default_warehouse_id(w: WorkspaceClient) -> str:
    warehouses = list(w.warehouses.list())
    assert warehouses, "no warehouse after bootstrap"
    return warehouses[0].id


def levels_of(permissions, user_name: str) -> list:
    return [
        p.permission_level
        for entry in permissions.access_control_list or []
        if entry.user_name == user_name
        for p in entry.all_permissions or []
    ]


def test_warehouse_permissions(server, admin):
    warehouse_id = default_warehouse_id(admin)
    warehouse = admin.warehouses.get(warehouse_id)
    assert warehouse.id == warehouse_id
    assert warehouse.state.value == "RUNNING"

    levels = admin.permissions.get_permission_levels("warehouses", warehouse_id)
    names = {level.permission_level for level in levels.permission_levels}
    assert {iam.PermissionLevel.CAN_USE, iam.PermissionLevel.CAN_MANAGE} <= names
    assert all(level.description for level in levels.permission_levels)

    permissions = admin.permissions.get("warehouses", warehouse_id)
    assert permissions.object_id == f"/warehouses/{warehouse_id}"
    admins = [entry for entry in permissions.access_control_list if entry.group_name == "admins"]
    assert admins and iam.PermissionLevel.CAN_MANAGE in {p.permission_level for p in admins[0].all_permissions}

    user = new_user(admin)
    other = new_user(admin)
    w = user_client(server, admin, user)
    # A user with no entry does not see the warehouse.
    assert warehouse_id not in {wh.id for wh in w.warehouses.list()}
    with pytest.raises(NotFound):
        w.permissions.get("warehouses", warehouse_id)

    updated = admin.permissions.update(
        "warehouses",
        warehouse_id,
        access_control_list=[
            iam.AccessControlRequest(user_name=user.user_name, permission_level=iam.PermissionLevel.CAN_USE)
        ],
    )
    assert levels_of(updated, user.user_name) == [iam.PermissionLevel.CAN_USE]
    assert warehouse_id in {wh.id for wh in w.warehouses.list()}
    assert w.warehouses.get(warehouse_id).id == warehouse_id
    assert levels_of(w.permissions.get("warehouses", warehouse_id), user.user_name) == [iam.PermissionLevel.CAN_USE]

    # PATCH merges: both entries are there.
    merged = admin.permissions.update(
        "warehouses",
        warehouse_id,
        access_control_list=[
            iam.AccessControlRequest(user_name=other.user_name, permission_level=iam.PermissionLevel.CAN_VIEW)
        ],
    )
    assert levels_of(merged, user.user_name) == [iam.PermissionLevel.CAN_USE]
    assert levels_of(merged, other.user_name) == [iam.PermissionLevel.CAN_VIEW]

    # A CAN_USE holder cannot change the ACL.
    with pytest.raises(PermissionDenied):
        w.permissions.update(
            "warehouses",
            warehouse_id,
            access_control_list=[
                iam.AccessControlRequest(user_name=user.user_name, permission_level=iam.PermissionLevel.CAN_MANAGE)
            ],
        )

    # PUT replaces the direct entries.
    replaced = admin.permissions.set(
        "warehouses",
        warehouse_id,
        access_control_list=[
            iam.AccessControlRequest(user_name=other.user_name, permission_level=iam.PermissionLevel.CAN_MONITOR)
        ],
    )
    assert levels_of(replaced, user.user_name) == []
    assert levels_of(replaced, other.user_name) == [iam.PermissionLevel.CAN_MONITOR]
    assert warehouse_id not in {wh.id for wh in w.warehouses.list()}

    with pytest.raises(BadRequest):
        admin.permissions.update(
            "warehouses",
            warehouse_id,
            access_control_list=[
                iam.AccessControlRequest(user_name=other.user_name, permission_level=iam.PermissionLevel.CAN_QUERY)
            ],
        )
    admin.permissions.set("warehouses", warehouse_id, access_control_list=[])
    assert levels_of(admin.permissions.get("warehouses", warehouse_id), other.user_name) == []


# --- why -----------------------------------------------------------------------------------------------------------


def test_why_explains_a_decision(admin, schema_name):
    user = new_user(admin)
    query = {"principal": user.user_name, "action": "browse", "securable": f"schema:{schema_name}"}
    denied = admin.api_client.do("GET", "/api/2.0/deputy/authz/why", query=query)
    assert denied["allowed"] is False
    assert denied["reasons"]
    catalog_name = schema_name.split(".")[0]
    admin.grants.update(
        "catalog",
        catalog_name,
        changes=[
            catalog.PermissionsChange(
                principal=user.user_name, add=[catalog.Privilege.USE_CATALOG, catalog.Privilege.USE_SCHEMA]
            )
        ],
    )
    allowed = admin.api_client.do("GET", "/api/2.0/deputy/authz/why", query=query)
    assert allowed["allowed"] is True
    assert allowed["principal"] == user.user_name
