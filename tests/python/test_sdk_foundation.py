"""The real databricks-sdk against `deputy serve`: identity (SCIM), personal access tokens, OAuth M2M through the
SDK's discovery, token exchange, and the error format the SDK maps to its exception classes."""

import base64
import json
import uuid

import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.errors import (
    BadRequest,
    NotFound,
    PermissionDenied,
    ResourceAlreadyExists,
    ResourceConflict,
    ResourceDoesNotExist,
    Unauthenticated,
)
from databricks.sdk.service import iam

SCIM = "/api/2.0/preview/scim/v2"
GRANT_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
TOKEN_TYPE_PAT = "urn:databricks:params:oauth:token-type:personal-access-token"
TOKEN_TYPE_ACCESS_TOKEN = "urn:ietf:params:oauth:token-type:access_token"
SQL_SCOPES = {"sql.warehouses", "sql.statement-execution"}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def new_user(admin, prefix: str = "user") -> iam.User:
    name = f"{unique(prefix)}@example.com"
    return admin.users.create(user_name=name, display_name=f"Display {name}")


def client(server, token: str) -> WorkspaceClient:
    return WorkspaceClient(host=server.host, token=token, auth_type="pat")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def jwt_payload(token: str) -> dict:
    parts = token.split(".")
    assert len(parts) == 3, f"not a JWT: {token[:20]}..."
    padded = parts[1] + "=" * (-len(parts[1]) % 4)
    return json.loads(base64.urlsafe_b64decode(padded))


def obo_token(admin, principal_id: str, lifetime_seconds: int = 600, **kwargs) -> str:
    created = admin.token_management.create_obo_token(
        application_id=principal_id, lifetime_seconds=lifetime_seconds, **kwargs
    )
    assert created.token_value
    return created.token_value


def token_request(server, data: dict, auth=None) -> requests.Response:
    return requests.post(server.url("/oidc/v1/token"), data=data, auth=auth, timeout=10)


def m2m_access_token(server, application_id: str, secret: str, scope: str = "all-apis") -> str:
    response = token_request(
        server, {"grant_type": "client_credentials", "scope": scope}, auth=(application_id, secret)
    )
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def service_principal_with_secret(admin):
    sp = admin.service_principals.create(display_name=unique("sp"))
    secret = admin.service_principal_secrets_proxy.create(service_principal_id=sp.id)
    assert secret.secret
    return sp, secret.secret


# --- SCIM ---------------------------------------------------------------------------------------------------------


def test_me_is_admin(server):
    me = WorkspaceClient(host=server.host, token=server.admin_token).current_user.me()
    assert me.user_name == "admin"
    assert me.id
    assert me.active is True
    assert "admins" in {group.display for group in me.groups}


def test_configuration_from_environment_variables(server, monkeypatch):
    monkeypatch.setenv("DATABRICKS_HOST", server.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", server.admin_token)
    w = WorkspaceClient()
    assert w.config.auth_type == "pat"
    assert w.current_user.me().user_name == "admin"


def test_workspace_id_from_host_metadata_and_me_header(admin, server):
    workspace_id = requests.get(server.url("/.well-known/databricks-config"), timeout=10).json()["workspace_id"]
    assert admin.config.workspace_id == workspace_id
    assert admin.get_workspace_id() == int(workspace_id)
    # What the SDK's get_workspace_id() does when no workspace id is configured.
    me = admin.api_client.do("GET", f"{SCIM}/Me", response_headers=["X-Databricks-Org-Id"])
    assert me["X-Databricks-Org-Id"] == workspace_id


def test_host_metadata_names_the_oidc_endpoint(server):
    response = requests.get(server.url("/.well-known/databricks-config"), timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["oidc_endpoint"] == f"{server.host}/oidc"
    assert body["workspace_id"].isdigit()
    metadata = requests.get(f"{body['oidc_endpoint']}/.well-known/oauth-authorization-server", timeout=10).json()
    assert metadata["token_endpoint"] == f"{server.host}/oidc/v1/token"
    assert metadata["authorization_endpoint"]
    keys = requests.get(server.url("/oidc/v1/keys"), timeout=10).json()
    assert keys["keys"], "JWKS has no keys"


def test_user_lifecycle(admin):
    name = f"{unique('alice')}@example.com"
    created = admin.users.create(user_name=name, display_name="Alice Example")
    assert created.id
    assert created.user_name == name
    assert created.display_name == "Alice Example"
    assert created.active is True

    fetched = admin.users.get(created.id)
    assert (fetched.id, fetched.user_name, fetched.display_name) == (created.id, name, "Alice Example")

    filtered = list(admin.users.list(filter=f'userName eq "{name}"'))
    assert [user.id for user in filtered] == [created.id]
    assert created.id in {user.id for user in admin.users.list()}

    # The form the Databricks documentation gives for deactivating a user.
    admin.users.patch(
        created.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=[{"value": "false"}])],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert admin.users.get(created.id).active is False
    admin.users.patch(
        created.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=True)],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert admin.users.get(created.id).active is True
    # The SDK's Patch.as_dict drops falsy values, so `value=False` arrives without a value: refused, not ignored.
    with pytest.raises(BadRequest):
        admin.users.patch(
            created.id,
            operations=[iam.Patch(op=iam.PatchOp.REPLACE, path="active", value=False)],
            schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
        )
    assert admin.users.get(created.id).active is True
    admin.users.patch(
        created.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, value={"active": False})],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert admin.users.get(created.id).active is False

    admin.users.patch(
        created.id,
        operations=[iam.Patch(op=iam.PatchOp.REPLACE, value={"displayName": "Alice Patched", "active": True})],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    patched = admin.users.get(created.id)
    assert (patched.display_name, patched.active) == ("Alice Patched", True)

    admin.users.update(created.id, user_name=name, display_name="Alice Replaced", active=True)
    replaced = admin.users.get(created.id)
    assert (replaced.display_name, replaced.user_name, replaced.active) == ("Alice Replaced", name, True)
    admin.users.update(created.id, user_name=name, display_name="Alice Replaced", active=False)
    assert admin.users.get(created.id).active is False

    admin.users.delete(created.id)
    with pytest.raises(NotFound):
        admin.users.get(created.id)
    with pytest.raises(NotFound):
        admin.users.delete(created.id)
    assert list(admin.users.list(filter=f'userName eq "{name}"')) == []


def test_duplicate_user_is_a_conflict(admin):
    user = new_user(admin)
    with pytest.raises(ResourceConflict) as raised:
        admin.users.create(user_name=user.user_name)
    assert isinstance(raised.value, ResourceAlreadyExists)
    assert raised.value.error_code == "RESOURCE_ALREADY_EXISTS"


def test_listing_more_than_one_page_of_users(admin, server):
    prefix = unique("many")
    created = {admin.users.create(user_name=f"{prefix}-{i:02}@example.com").id for i in range(13)}
    assert len(created) == 13

    everyone = [user.id for user in admin.users.list()]
    assert created <= set(everyone)
    assert len(everyone) == len(set(everyone))

    # Small pages: the SDK keeps asking from the next startIndex until a page is empty.
    paged = [user.id for user in admin.users.list(count=4)]
    assert created <= set(paged)
    assert len(paged) == len(everyone)

    # The raw pages the SDK relies on: consistent totals, and an empty page past the end.
    first = admin.api_client.do("GET", f"{SCIM}/Users", query={"startIndex": 1, "count": 4})
    assert len(first["Resources"]) == 4
    assert first["totalResults"] == len(everyone)
    assert first["itemsPerPage"] == 4
    assert first["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:ListResponse"]
    past_end = admin.api_client.do(
        "GET", f"{SCIM}/Users", query={"startIndex": len(everyone) + 1, "count": 4}
    )
    assert not past_end.get("Resources")

    for user_id in created:
        admin.users.delete(user_id)


def test_groups_with_members_and_nesting(admin):
    user = new_user(admin, "member")
    parent = admin.groups.create(display_name=unique("parent"))
    child = admin.groups.create(display_name=unique("child"))
    assert parent.id and child.id
    assert parent.display_name.startswith("parent-")

    admin.groups.patch(
        parent.id,
        operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": user.id}])],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    admin.groups.patch(
        parent.id,
        operations=[iam.Patch(op=iam.PatchOp.ADD, path="members", value=[{"value": child.id}])],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    fetched = admin.groups.get(parent.id)
    assert {member.value for member in fetched.members} == {user.id, child.id}
    assert parent.id in {group.value for group in admin.users.get(user.id).groups}
    assert parent.id in {group.value for group in admin.groups.get(child.id).groups}

    listed = list(admin.groups.list(filter=f'displayName eq "{parent.display_name}"'))
    assert [group.id for group in listed] == [parent.id]
    all_groups = {group.display_name for group in admin.groups.list()}
    assert {"admins", parent.display_name, child.display_name} <= all_groups

    admin.groups.patch(
        parent.id,
        operations=[iam.Patch(op=iam.PatchOp.REMOVE, path=f'members[value eq "{user.id}"]')],
        schemas=[iam.PatchSchema.URN_IETF_PARAMS_SCIM_API_MESSAGES_2_0_PATCH_OP],
    )
    assert {member.value for member in admin.groups.get(parent.id).members} == {child.id}

    admin.groups.delete(child.id)
    assert not admin.groups.get(parent.id).members
    admin.groups.delete(parent.id)
    with pytest.raises(NotFound):
        admin.groups.get(parent.id)
    with pytest.raises(NotFound):
        admin.groups.delete(parent.id)
    admin.users.delete(user.id)


def test_service_principal_lifecycle(admin):
    display_name = unique("robot")
    sp = admin.service_principals.create(display_name=display_name)
    assert sp.id
    assert str(uuid.UUID(sp.application_id)) == sp.application_id
    assert sp.display_name == display_name
    assert sp.active is True

    fetched = admin.service_principals.get(sp.id)
    assert (fetched.application_id, fetched.display_name) == (sp.application_id, display_name)
    listed = list(admin.service_principals.list(filter=f'applicationId eq "{sp.application_id}"'))
    assert [found.id for found in listed] == [sp.id]
    assert sp.id in {found.id for found in admin.service_principals.list()}

    admin.service_principals.delete(sp.id)
    with pytest.raises(NotFound):
        admin.service_principals.get(sp.id)
    with pytest.raises(NotFound):
        admin.service_principals.delete(sp.id)


def test_non_admin_user(admin, server):
    user = new_user(admin, "bob")
    bob = client(server, obo_token(admin, user.id))

    me = bob.current_user.me()
    assert me.user_name == user.user_name
    assert me.id == user.id
    assert "admins" not in {group.display for group in me.groups or []}

    # Reading is allowed with the iam.scim scope; writing needs admin.
    assert user.id in {found.id for found in bob.users.list(filter=f'userName eq "{user.user_name}"')}
    with pytest.raises(PermissionDenied):
        bob.users.create(user_name=f"{unique('mallory')}@example.com")
    with pytest.raises(PermissionDenied):
        bob.groups.create(display_name=unique("sneaky"))
    with pytest.raises(PermissionDenied):
        list(bob.token_management.list())


# --- personal access tokens ---------------------------------------------------------------------------------------


def test_personal_access_token_lifecycle(admin, server):
    comment = unique("pat")
    created = admin.tokens.create(comment=comment, lifetime_seconds=3600)
    assert created.token_value
    info = created.token_info
    assert info.comment == comment
    assert info.token_id
    assert info.expiry_time > info.creation_time

    holder = client(server, created.token_value)
    assert holder.current_user.me().user_name == "admin"

    assert info.token_id in {token.token_id for token in admin.tokens.list()}
    managed = {token.token_id: token for token in admin.token_management.list()}
    assert info.token_id in managed
    assert info.token_id in {token.token_id for token in admin.token_management.list(created_by_username="admin")}
    assert managed[info.token_id].created_by_username == "admin"
    assert managed[info.token_id].comment == comment

    admin.tokens.delete(info.token_id)
    with pytest.raises(Unauthenticated):
        holder.current_user.me()
    assert info.token_id not in {token.token_id for token in admin.tokens.list()}
    with pytest.raises(NotFound):
        admin.tokens.delete(info.token_id)


def test_unknown_token_is_unauthenticated(server):
    with pytest.raises(Unauthenticated):
        client(server, "dapi-not-a-real-token").current_user.me()
    response = requests.get(server.url(f"{SCIM}/Me"), timeout=10)
    assert response.status_code == 401
    assert response.json()["error_code"] == "UNAUTHENTICATED"


def test_token_management_for_obo_tokens(admin, server):
    user = new_user(admin, "carol")
    created = admin.token_management.create_obo_token(
        application_id=user.id, lifetime_seconds=600, comment="for carol"
    )
    token_id = created.token_info.token_id
    managed = {token.token_id: token for token in admin.token_management.list()}
    assert managed[token_id].owner_id == int(user.id)
    assert managed[token_id].created_by_username == "admin"
    assert admin.token_management.get(token_id).token_info.owner_id == int(user.id)

    carol = client(server, created.token_value)
    assert carol.current_user.me().user_name == user.user_name
    admin.token_management.delete(token_id)
    with pytest.raises(Unauthenticated):
        carol.current_user.me()
    with pytest.raises(NotFound):
        admin.token_management.get(token_id)


def test_scoped_personal_access_token_is_refused_outside_its_scope(admin, server):
    created = admin.tokens.create(comment=unique("sql-only"), lifetime_seconds=600, scopes=["sql"])
    assert set(created.token_info.scopes) == SQL_SCOPES
    sql_only = client(server, created.token_value)

    # SCIM Me is allowed under every scope.
    assert sql_only.current_user.me().user_name == "admin"
    with pytest.raises(PermissionDenied) as raised:
        list(sql_only.users.list())
    assert "iam.scim" in str(raised.value)
    assert raised.value.error_code == "PERMISSION_DENIED"

    # A token cannot mint a token wider than itself.
    with pytest.raises(PermissionDenied):
        sql_only.tokens.create(comment="wider", lifetime_seconds=600, scopes=["iam.scim"])
    admin.tokens.delete(created.token_info.token_id)


# --- OAuth --------------------------------------------------------------------------------------------------------


def test_oauth_m2m_through_sdk_discovery(admin, server):
    sp, secret = service_principal_with_secret(admin)
    robot = WorkspaceClient(
        host=server.host, client_id=sp.application_id, client_secret=secret, auth_type="oauth-m2m"
    )
    me = robot.current_user.me()
    assert me.id == sp.id
    assert me.user_name == sp.application_id
    assert me.display_name == sp.display_name
    raw = robot.api_client.do("GET", f"{SCIM}/Me")
    assert raw["applicationId"] == sp.application_id

    secrets = admin.service_principal_secrets_proxy.list(service_principal_id=sp.id)
    assert len(list(secrets)) == 1


def test_oauth_m2m_with_a_wrong_secret_fails(admin, server):
    sp, _ = service_principal_with_secret(admin)
    # The SDK turns a token-endpoint error into a ValueError carrying the OAuth error code.
    with pytest.raises(ValueError, match="invalid_client"):
        WorkspaceClient(
            host=server.host, client_id=sp.application_id, client_secret="wrong", auth_type="oauth-m2m"
        ).current_user.me()

    response = token_request(
        server, {"grant_type": "client_credentials", "scope": "all-apis"}, auth=(sp.application_id, "wrong")
    )
    assert response.status_code == 401
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "invalid_client"


def test_pat_exchange_narrows_to_the_requested_scope(admin, server):
    pat = admin.tokens.create(comment=unique("exchange"), lifetime_seconds=600).token_value
    response = token_request(
        server,
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": pat,
            "subject_token_type": TOKEN_TYPE_PAT,
            "requested_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "scope": "sql",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and 0 < body["expires_in"] <= 3600
    payload = jwt_payload(body["access_token"])
    assert set(payload["scope"].split()) == SQL_SCOPES
    assert payload["sub"] == "admin"
    assert "act" not in payload

    exchanged = body["access_token"]
    assert requests.get(server.url(f"{SCIM}/Me"), headers=bearer(exchanged), timeout=10).status_code == 200
    refused = requests.get(server.url(f"{SCIM}/Users"), headers=bearer(exchanged), timeout=10)
    assert refused.status_code == 403
    assert "iam.scim" in refused.json()["message"]

    # The SDK accepts the exchanged JWT as a bearer token, too.
    assert client(server, exchanged).current_user.me().user_name == "admin"


def test_exchange_for_a_scope_the_subject_lacks_is_invalid_scope(admin, server):
    narrow = admin.tokens.create(comment=unique("narrow"), lifetime_seconds=600, scopes=["sql"]).token_value
    response = token_request(
        server,
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": narrow,
            "subject_token_type": TOKEN_TYPE_PAT,
            "scope": "iam.scim",
        },
    )
    assert response.status_code == 400
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "invalid_scope"

    unknown = token_request(
        server,
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": narrow,
            "subject_token_type": TOKEN_TYPE_PAT,
            "scope": "no-such-scope",
        },
    )
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "invalid_scope"
    assert "Invalid scope" in unknown.json()["error_description"]


def test_exchange_with_an_actor_records_the_delegation_and_revocation_ends_it(admin, server):
    user = new_user(admin, "dana")
    user_token = obo_token(admin, user.id)
    sp, secret = service_principal_with_secret(admin)
    agent_token = m2m_access_token(server, sp.application_id, secret)
    assert jwt_payload(agent_token)["sub"] == sp.application_id

    response = token_request(
        server,
        {
            "grant_type": GRANT_TOKEN_EXCHANGE,
            "subject_token": user_token,
            "subject_token_type": TOKEN_TYPE_PAT,
            "actor_token": agent_token,
            "actor_token_type": TOKEN_TYPE_ACCESS_TOKEN,
            "scope": "iam.scim",
        },
    )
    assert response.status_code == 200, response.text
    delegated = response.json()["access_token"]
    payload = jwt_payload(delegated)
    assert payload["sub"] == user.user_name
    assert payload["act"]["sub"] == sp.application_id
    assert payload["scope"] == "iam.scim"

    me = requests.get(server.url(f"{SCIM}/Me"), headers=bearer(delegated), timeout=10)
    assert me.status_code == 200
    assert me.json()["userName"] == user.user_name

    introspected = requests.post(
        server.url("/oidc/v1/introspect"), data={"token": delegated}, headers=bearer(server.admin_token), timeout=10
    ).json()
    assert introspected["active"] is True
    assert introspected["act"]["sub"] == sp.application_id

    revoked = requests.post(server.url("/oidc/v1/revoke"), data={"token": delegated}, timeout=10)
    assert revoked.status_code == 200
    after = requests.get(server.url(f"{SCIM}/Me"), headers=bearer(delegated), timeout=10)
    assert after.status_code == 401
    assert after.json()["error_code"] == "UNAUTHENTICATED"
    # The subject's own token is untouched by revoking the exchanged one.
    assert client(server, user_token).current_user.me().user_name == user.user_name


# --- errors -------------------------------------------------------------------------------------------------------


def test_unknown_route_is_endpoint_not_found(admin, server):
    response = requests.get(server.url("/api/2.0/no/such/api"), headers=bearer(server.admin_token), timeout=10)
    assert response.status_code == 404
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"
    with pytest.raises(NotFound) as raised:
        admin.api_client.do("GET", "/api/2.0/no/such/api")
    assert raised.value.error_code == "ENDPOINT_NOT_FOUND"


def test_malformed_json_body_is_bad_request(admin, server):
    response = requests.post(
        server.url(f"{SCIM}/Users"),
        data="{not json",
        headers={**bearer(server.admin_token), "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error_code"]
    assert body["message"]
    with pytest.raises(BadRequest):
        admin.api_client.do("POST", f"{SCIM}/Users", data="[1, 2", headers={"Content-Type": "application/json"})


def test_sdk_exception_classes(admin):
    with pytest.raises(ResourceDoesNotExist) as raised:
        admin.users.get("987654321")
    assert isinstance(raised.value, NotFound)
    with pytest.raises(NotFound):
        admin.groups.get("not-a-number")
    with pytest.raises(BadRequest) as raised:
        list(admin.users.list(filter='userName co "a"'))
    assert raised.value.error_code == "INVALID_PARAMETER_VALUE"
    with pytest.raises(BadRequest):
        admin.users.create(user_name="")
    with pytest.raises(BadRequest):
        admin.service_principals.create(application_id="not-a-uuid")
