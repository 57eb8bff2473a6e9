//! SCIM 2.0 identities as the Databricks SDK calls them: `Me`, `Users`, `Groups`, `ServicePrincipals`, and the
//! OAuth secrets of service principals. Anyone with the `iam.scim` scope may read; only admins may write.

use super::{ApiRouter, Requires, rfc3339};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::clock::now_millis;
use deputy_core::ApiScope;
use deputy_store::{
    ClientSecret, Identity, IdentityKind, IdentityQuery, IdentityUpdate, NewIdentity, PrincipalId,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const SCIM: Requires = Requires::Scope(ApiScope::IamScim);
const SECRETS: Requires = Requires::Scope(ApiScope::SettingsTokenManagement);
const LIST_RESPONSE_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:ListResponse";
/// The SDK asks for 10,000 per page; larger requests are served in pages of this size.
const MAX_PAGE: i64 = 10_000;
const MAX_NAME_LENGTH: usize = 255;

/// Registers the six SCIM calls of one resource type. A macro because each route needs a `'static` path literal
/// for the registry and a handler closure bound to the identity kind.
macro_rules! scim_collection {
    ($router:expr, $resource:literal, $kind:expr) => {
        $router
            .get(
                concat!("/api/2.0/preview/scim/v2/", $resource),
                SCIM,
                |state: State<Arc<Access>>, query| list(state, query, $kind),
            )
            .post(
                concat!("/api/2.0/preview/scim/v2/", $resource),
                SCIM,
                |state: State<Arc<Access>>, caller, body| async move {
                    let shared = state.0.clone();
                    publish(&shared, create(state, caller, body, $kind).await).await
                },
            )
            .get(
                concat!("/api/2.0/preview/scim/v2/", $resource, "/{id}"),
                SCIM,
                |state: State<Arc<Access>>, id| get_one(state, id, $kind),
            )
            .put(
                concat!("/api/2.0/preview/scim/v2/", $resource, "/{id}"),
                SCIM,
                |state: State<Arc<Access>>, caller, id, body| async move {
                    let shared = state.0.clone();
                    publish(&shared, replace(state, caller, id, body, $kind).await).await
                },
            )
            .patch(
                concat!("/api/2.0/preview/scim/v2/", $resource, "/{id}"),
                SCIM,
                |state: State<Arc<Access>>, caller, id, body| async move {
                    let shared = state.0.clone();
                    publish(&shared, patch(state, caller, id, body, $kind).await).await
                },
            )
            .delete(
                concat!("/api/2.0/preview/scim/v2/", $resource, "/{id}"),
                SCIM,
                |state: State<Arc<Access>>, caller, id| async move {
                    let shared = state.0.clone();
                    publish(&shared, delete(state, caller, id, $kind).await).await
                },
            )
    };
}

/// Publishes identity writes to the in-memory directory before answering, whether the handler succeeded or not: a
/// PATCH whose second operation fails has still committed its first.
async fn publish(
    access: &Arc<Access>,
    outcome: Result<Json<Value>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    access.publish().await?;
    outcome
}

pub fn routes(router: ApiRouter) -> ApiRouter {
    let router = router.get("/api/2.0/preview/scim/v2/Me", Requires::Authenticated, me);
    let router = scim_collection!(router, "Users", IdentityKind::User);
    let router = scim_collection!(router, "Groups", IdentityKind::Group);
    let router = scim_collection!(router, "ServicePrincipals", IdentityKind::ServicePrincipal);
    router
        .post(
            "/api/2.0/accounts/servicePrincipals/{id}/credentials/secrets",
            SECRETS,
            create_secret,
        )
        .get(
            "/api/2.0/accounts/servicePrincipals/{id}/credentials/secrets",
            SECRETS,
            list_secrets,
        )
        .delete(
            "/api/2.0/accounts/servicePrincipals/{id}/credentials/secrets/{secret_id}",
            SECRETS,
            delete_secret,
        )
}

fn schema(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::User => "urn:ietf:params:scim:schemas:core:2.0:User",
        IdentityKind::Group => "urn:ietf:params:scim:schemas:core:2.0:Group",
        IdentityKind::ServicePrincipal => "urn:ietf:params:scim:schemas:core:2.0:ServicePrincipal",
    }
}

fn resource_path(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::User => "Users",
        IdentityKind::Group => "Groups",
        IdentityKind::ServicePrincipal => "ServicePrincipals",
    }
}

fn noun(kind: IdentityKind) -> &'static str {
    match kind {
        IdentityKind::User => "user",
        IdentityKind::Group => "group",
        IdentityKind::ServicePrincipal => "service principal",
    }
}

fn reference(identity: &Identity) -> Value {
    json!({
        "display": identity.display_name,
        "value": identity.id.to_string(),
        "$ref": format!("{}/{}", resource_path(identity.kind), identity.id),
    })
}

/// The SCIM representation, with the groups (and for groups, the members) that make it up.
async fn render(access: &Arc<Access>, identity: &Identity) -> Result<Value, Error> {
    let store = access.store();
    let groups: Vec<Value> = store
        .direct_groups(identity.id)
        .await?
        .iter()
        .map(reference)
        .collect();
    let mut body = json!({
        "id": identity.id.to_string(),
        "displayName": identity.display_name,
        "groups": groups,
        "entitlements": [],
        "roles": [],
        "schemas": [schema(identity.kind)],
        "meta": { "resourceType": match identity.kind {
            IdentityKind::User => "User",
            IdentityKind::Group => "Group",
            IdentityKind::ServicePrincipal => "ServicePrincipal",
        }},
    });
    if let Some(external_id) = &identity.external_id {
        body["externalId"] = json!(external_id);
    }
    match identity.kind {
        IdentityKind::User => {
            body["userName"] = json!(identity.name);
            body["active"] = json!(identity.active);
            body["emails"] = json!([{ "value": identity.name, "primary": true, "type": "work" }]);
            body["name"] =
                json!({ "givenName": identity.given_name, "familyName": identity.family_name });
        }
        IdentityKind::ServicePrincipal => {
            body["applicationId"] = json!(identity.name);
            body["active"] = json!(identity.active);
        }
        IdentityKind::Group => {
            let members: Vec<Value> = store
                .group_members(identity.id)
                .await?
                .iter()
                .map(reference)
                .collect();
            body["members"] = json!(members);
        }
    }
    Ok(body)
}

/// The caller as SCIM. A service principal also gets `userName` = its application id, as on Databricks: the SDK
/// reads `Me` into a `User`, and code uses `current_user.me().user_name` as the caller's name. The
/// `X-Databricks-Org-Id` header is where the SDK's `get_workspace_id()` looks when it has no workspace id configured.
async fn me(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<([(&'static str, String); 1], Json<Value>), ApiError> {
    let mut body = render(&access, &caller.identity).await?;
    if caller.identity.kind == IdentityKind::ServicePrincipal {
        body["userName"] = json!(caller.identity.name);
    }
    let org_id = [("x-databricks-org-id", access.workspace_id().to_string())];
    Ok((org_id, Json(body)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    filter: Option<String>,
    start_index: Option<i64>,
    count: Option<i64>,
}

/// Lists one page. Past the end the page is empty, which is what ends the SDK's paging loop.
async fn list(
    State(access): State<Arc<Access>>,
    ApiQuery(query): ApiQuery<ListQuery>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    let start_index = query.start_index.unwrap_or(1).max(1);
    let count = query.count.unwrap_or(MAX_PAGE).clamp(0, MAX_PAGE);
    let mut store_query = IdentityQuery {
        offset: start_index - 1,
        limit: count,
        ..IdentityQuery::default()
    };
    let filter = query.filter.as_deref().map(parse_filter).transpose()?;
    let (page, total) = match filter {
        Some((attribute, value)) if attribute.eq_ignore_ascii_case("id") => {
            let found = match value.parse::<i64>() {
                Ok(id) => access
                    .store()
                    .get_identity(PrincipalId(id))
                    .await?
                    .filter(|found| found.kind == kind),
                Err(_) => None,
            };
            let total = i64::from(found.is_some());
            (
                found
                    .into_iter()
                    .skip((start_index - 1) as usize)
                    .take(count as usize)
                    .collect(),
                total,
            )
        }
        Some((attribute, value)) => {
            match filter_target(kind, &attribute)? {
                FilterTarget::Name => store_query.name_equals = Some(value),
                FilterTarget::DisplayName => store_query.display_name_equals = Some(value),
            }
            access.store().list_identities(kind, &store_query).await?
        }
        None => access.store().list_identities(kind, &store_query).await?,
    };
    let mut resources = Vec::with_capacity(page.len());
    for identity in &page {
        resources.push(render(&access, identity).await?);
    }
    Ok(Json(json!({
        "Resources": resources,
        "totalResults": total,
        "startIndex": start_index,
        "itemsPerPage": resources.len(),
        "schemas": [LIST_RESPONSE_SCHEMA],
    })))
}

enum FilterTarget {
    Name,
    DisplayName,
}

fn filter_target(kind: IdentityKind, attribute: &str) -> Result<FilterTarget, Error> {
    let name_attribute = match kind {
        IdentityKind::User => "userName",
        IdentityKind::ServicePrincipal => "applicationId",
        IdentityKind::Group => "displayName",
    };
    if attribute.eq_ignore_ascii_case(name_attribute) {
        Ok(FilterTarget::Name)
    } else if attribute.eq_ignore_ascii_case("displayName") {
        Ok(FilterTarget::DisplayName)
    } else {
        Err(Error::invalid_parameter(format!(
            "cannot filter {} by `{attribute}`",
            resource_path(kind)
        )))
    }
}

/// Parses the one filter form supported: `attribute eq "value"` (the value may be unquoted).
fn parse_filter(filter: &str) -> Result<(String, String), Error> {
    let unsupported = || {
        Error::invalid_parameter(format!(
            "unsupported filter `{filter}`: only `attribute eq \"value\"` is supported"
        ))
    };
    let mut parts = filter.trim().splitn(3, char::is_whitespace);
    let (Some(attribute), Some(operator), Some(value)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(unsupported());
    };
    if !operator.eq_ignore_ascii_case("eq") {
        return Err(unsupported());
    }
    let value = value.trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Ok((attribute.to_owned(), value.to_owned()))
}

async fn load(access: &Arc<Access>, id: &str, kind: IdentityKind) -> Result<Identity, Error> {
    let missing = || Error::not_found(format!("{} `{id}` does not exist", noun(kind)));
    let id = id.parse::<i64>().map_err(|_| missing())?;
    access
        .store()
        .get_identity(PrincipalId(id))
        .await?
        .filter(|found| found.kind == kind)
        .ok_or_else(missing)
}

async fn get_one(
    State(access): State<Arc<Access>>,
    Path(id): Path<String>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    let identity = load(&access, &id, kind).await?;
    Ok(Json(render(&access, &identity).await?))
}

fn text(body: &Map<String, Value>, key: &str) -> Result<Option<String>, Error> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(value)) => Ok(Some(value.clone())),
        Some(_) => Err(Error::invalid_parameter(format!(
            "`{key}` must be a string"
        ))),
    }
}

fn boolean(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, Error> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(value)) => Ok(Some(*value)),
        // Some SCIM clients send booleans as strings.
        Some(Value::String(value)) if value.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Value::String(value)) if value.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(_) => Err(Error::invalid_parameter(format!(
            "`{key}` must be a boolean"
        ))),
    }
}

/// Checks a principal name: printable, not too long, and for users not shaped like a UUID (those name service
/// principals in tokens, see `Credentials::find_subject`).
fn validate_name(kind: IdentityKind, field: &str, name: &str) -> Result<(), Error> {
    if name.trim().is_empty() {
        return Err(Error::invalid_parameter(format!(
            "`{field}` must not be empty"
        )));
    }
    if name.chars().count() > MAX_NAME_LENGTH {
        return Err(Error::invalid_parameter(format!(
            "`{field}` is longer than {MAX_NAME_LENGTH} characters"
        )));
    }
    if name.chars().any(char::is_control) || name != name.trim() {
        return Err(Error::invalid_parameter(format!(
            "`{field}` must not contain control characters or surrounding spaces"
        )));
    }
    match kind {
        IdentityKind::User if uuid::Uuid::parse_str(name).is_ok() => Err(Error::invalid_parameter(
            format!("`{field}` must not be a UUID; UUIDs name service principals"),
        )),
        IdentityKind::ServicePrincipal if uuid::Uuid::parse_str(name).is_err() => Err(
            Error::invalid_parameter(format!("`{field}` must be a UUID")),
        ),
        _ => Ok(()),
    }
}

/// The attributes of an identity read from a SCIM body; `current` supplies what a PUT may leave out.
fn identity_fields(
    kind: IdentityKind,
    body: &Map<String, Value>,
    current: Option<&Identity>,
) -> Result<IdentityUpdate, Error> {
    let name = match kind {
        IdentityKind::User => text(body, "userName")?,
        IdentityKind::Group => text(body, "displayName")?,
        IdentityKind::ServicePrincipal => text(body, "applicationId")?,
    };
    let name = match (name, current) {
        (Some(name), Some(current))
            if kind == IdentityKind::ServicePrincipal && name != current.name =>
        {
            return Err(Error::invalid_parameter(
                "`applicationId` cannot be changed",
            ));
        }
        (Some(name), _) => name,
        (None, Some(current)) => current.name.clone(),
        (None, None) if kind == IdentityKind::ServicePrincipal => uuid::Uuid::new_v4().to_string(),
        (None, None) => {
            let field = if kind == IdentityKind::User {
                "userName"
            } else {
                "displayName"
            };
            return Err(Error::invalid_parameter(format!("`{field}` is required")));
        }
    };
    let name_field = match kind {
        IdentityKind::User => "userName",
        IdentityKind::Group => "displayName",
        IdentityKind::ServicePrincipal => "applicationId",
    };
    validate_name(kind, name_field, &name)?;
    let display_name = match kind {
        IdentityKind::Group => name.clone(),
        _ => text(body, "displayName")?.unwrap_or_else(|| name.clone()),
    };
    validate_name(IdentityKind::Group, "displayName", &display_name)?;
    let person = match body.get("name") {
        Some(Value::Object(person)) => Some(person),
        _ => None,
    };
    Ok(IdentityUpdate {
        name,
        display_name,
        given_name: person.map(|p| text(p, "givenName")).transpose()?.flatten(),
        family_name: person.map(|p| text(p, "familyName")).transpose()?.flatten(),
        external_id: text(body, "externalId")?,
        active: boolean(body, "active")?.unwrap_or(true),
    })
}

/// Reads `[{"value": "<id>"}, ...]` into principal ids that must exist.
async fn referenced_ids(
    access: &Arc<Access>,
    value: &Value,
    field: &str,
) -> Result<Vec<Identity>, Error> {
    let Value::Array(items) = value else {
        return Err(Error::invalid_parameter(format!(
            "`{field}` must be a list of {{\"value\": id}}"
        )));
    };
    let mut identities = Vec::with_capacity(items.len());
    for item in items {
        let id = item.get("value").and_then(|v| {
            v.as_str()
                .map(str::to_owned)
                .or_else(|| v.as_i64().map(|n| n.to_string()))
        });
        let id = id.ok_or_else(|| {
            Error::invalid_parameter(format!("each entry of `{field}` needs a `value`"))
        })?;
        let found = match id.parse::<i64>() {
            Ok(number) => access.store().get_identity(PrincipalId(number)).await?,
            Err(_) => None,
        };
        identities.push(found.ok_or_else(|| {
            Error::invalid_parameter(format!("principal `{id}` in `{field}` does not exist"))
        })?);
    }
    Ok(identities)
}

async fn groups_from(access: &Arc<Access>, value: &Value) -> Result<Vec<Identity>, Error> {
    let groups = referenced_ids(access, value, "groups").await?;
    match groups
        .iter()
        .find(|group| group.kind != IdentityKind::Group)
    {
        Some(other) => Err(Error::invalid_parameter(format!(
            "`groups` entry `{}` is not a group",
            other.id
        ))),
        None => Ok(groups),
    }
}

async fn members_from(
    access: &Arc<Access>,
    group: Option<&Identity>,
    value: &Value,
) -> Result<Vec<Identity>, Error> {
    let members = referenced_ids(access, value, "members").await?;
    if let Some(group) = group
        && members.iter().any(|member| member.id == group.id)
    {
        return Err(Error::invalid_parameter(
            "a group cannot be a member of itself",
        ));
    }
    Ok(members)
}

fn object(body: Value) -> Result<Map<String, Value>, Error> {
    match body {
        Value::Object(map) => Ok(map),
        _ => Err(Error::malformed_request(
            "the request body must be a JSON object",
        )),
    }
}

async fn create(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<Value>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let body = object(body)?;
    let fields = identity_fields(kind, &body, None)?;
    // Resolve every reference before writing anything, so a bad reference leaves no half-created identity.
    let members = match (kind, body.get("members")) {
        (IdentityKind::Group, Some(value)) => members_from(&access, None, value).await?,
        _ => Vec::new(),
    };
    let groups = match body.get("groups") {
        Some(value) if kind != IdentityKind::Group => groups_from(&access, value).await?,
        _ => Vec::new(),
    };
    let new = NewIdentity {
        kind,
        name: fields.name,
        display_name: fields.display_name,
        given_name: fields.given_name,
        family_name: fields.family_name,
        external_id: fields.external_id,
        active: fields.active,
    };
    let identity = access.store().create_identity(new, now_millis()).await?;
    if kind != IdentityKind::Group
        && let Some(users) = access
            .directory()
            .find(IdentityKind::Group, deputy_access::directory::USERS_GROUP)
    {
        access
            .store()
            .add_group_member(users.id, identity.id)
            .await?;
    }
    let member_ids: Vec<PrincipalId> = members.iter().map(|member| member.id).collect();
    if !member_ids.is_empty() {
        access
            .store()
            .set_group_members(identity.id, &member_ids)
            .await?;
    }
    for group in &groups {
        access
            .store()
            .add_group_member(group.id, identity.id)
            .await?;
    }
    Ok(Json(render(&access, &identity).await?))
}

async fn replace(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Value>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let current = load(&access, &id, kind).await?;
    let body = object(body)?;
    let fields = identity_fields(kind, &body, Some(&current))?;
    let members = match (kind, body.get("members")) {
        (IdentityKind::Group, Some(value)) => {
            Some(members_from(&access, Some(&current), value).await?)
        }
        _ => None,
    };
    let updated = access.store().update_identity(current.id, fields).await?;
    if let Some(members) = members {
        let ids: Vec<PrincipalId> = members.iter().map(|member| member.id).collect();
        access.store().set_group_members(updated.id, &ids).await?;
    }
    Ok(Json(render(&access, &updated).await?))
}

#[derive(Deserialize)]
struct PatchRequest {
    #[serde(rename = "Operations", alias = "operations", default)]
    operations: Vec<PatchOperation>,
}

#[derive(Deserialize)]
struct PatchOperation {
    op: String,
    path: Option<String>,
    value: Option<Value>,
}

async fn patch(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<PatchRequest>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let mut identity = load(&access, &id, kind).await?;
    for operation in &request.operations {
        identity = apply_patch(&access, identity, operation).await?;
    }
    Ok(Json(render(&access, &identity).await?))
}

/// Applies one SCIM PATCH operation. Supported: `add`/`remove`/`replace` of `members` (groups) and `groups`
/// (users, service principals), `remove` with the `members[value eq "id"]` form, and `replace` (or `add`) of the
/// scalar attributes, with a path or as a value object without one.
async fn apply_patch(
    access: &Arc<Access>,
    identity: Identity,
    operation: &PatchOperation,
) -> Result<Identity, Error> {
    let op = operation.op.to_ascii_lowercase();
    if !matches!(op.as_str(), "add" | "remove" | "replace") {
        return Err(Error::invalid_parameter(format!(
            "unsupported PATCH op `{}`",
            operation.op
        )));
    }
    let Some(path) = operation.path.as_deref() else {
        // No path: the value is an object of attributes.
        let attributes = match &operation.value {
            Some(Value::Object(attributes)) => attributes.clone(),
            _ => {
                return Err(Error::invalid_parameter(
                    "a PATCH operation without `path` needs an object `value`",
                ));
            }
        };
        let mut identity = identity;
        for (attribute, value) in attributes {
            let single = PatchOperation {
                op: op.clone(),
                path: Some(attribute),
                value: Some(value),
            };
            identity = Box::pin(apply_patch(access, identity, &single)).await?;
        }
        return Ok(identity);
    };
    if let Some(member_id) = path
        .strip_prefix("members[value eq \"")
        .and_then(|rest| rest.strip_suffix("\"]"))
    {
        if op != "remove" || identity.kind != IdentityKind::Group {
            return Err(Error::invalid_parameter(format!(
                "unsupported PATCH path `{path}` for `{op}`"
            )));
        }
        let member = member_id
            .parse::<i64>()
            .map_err(|_| Error::invalid_parameter("member ids are numeric"))?;
        access
            .store()
            .remove_group_member(identity.id, PrincipalId(member))
            .await?;
        return Ok(identity);
    }
    let value = operation.value.clone().unwrap_or(Value::Null);
    match path {
        "members" if identity.kind == IdentityKind::Group => {
            patch_members(access, &identity, &op, &value).await?;
            Ok(identity)
        }
        "groups" if identity.kind != IdentityKind::Group => {
            patch_groups(access, &identity, &op, &value).await?;
            Ok(identity)
        }
        "active" | "displayName" | "userName" | "externalId" | "name.givenName"
        | "name.familyName" => patch_scalar(access, identity, &op, path, value).await,
        other => Err(Error::invalid_parameter(format!(
            "unsupported PATCH path `{other}`"
        ))),
    }
}

/// A PATCH of one scalar attribute (`active`, names, `externalId`): replaced or added, never removed.
async fn patch_scalar(
    access: &Arc<Access>,
    identity: Identity,
    op: &str,
    path: &str,
    value: Value,
) -> Result<Identity, Error> {
    if op == "remove" {
        return Err(Error::invalid_parameter(format!(
            "`{path}` cannot be removed"
        )));
    }
    let value = scalar_patch_value(path, value)?;
    let mut attributes = Map::new();
    let current = rendered_scalars(&identity);
    attributes.extend(current);
    set_attribute(&mut attributes, path, value);
    let fields = identity_fields(identity.kind, &attributes, Some(&identity))?;
    Ok(access.store().update_identity(identity.id, fields).await?)
}

/// A PATCH of a group's `members`: add, remove, or replace them all.
async fn patch_members(
    access: &Arc<Access>,
    identity: &Identity,
    op: &str,
    value: &Value,
) -> Result<(), Error> {
    let members = members_from(access, Some(identity), value).await?;
    if op == "replace" {
        let ids: Vec<PrincipalId> = members.iter().map(|member| member.id).collect();
        access.store().set_group_members(identity.id, &ids).await?;
    }
    for member in &members {
        match op {
            "add" => {
                access
                    .store()
                    .add_group_member(identity.id, member.id)
                    .await?
            }
            "remove" => {
                access
                    .store()
                    .remove_group_member(identity.id, member.id)
                    .await?
            }
            _ => {}
        }
    }
    Ok(())
}

/// A PATCH of a user's or service principal's `groups`: join or leave them.
async fn patch_groups(
    access: &Arc<Access>,
    identity: &Identity,
    op: &str,
    value: &Value,
) -> Result<(), Error> {
    let groups = groups_from(access, value).await?;
    for group in &groups {
        match op {
            "remove" => {
                access
                    .store()
                    .remove_group_member(group.id, identity.id)
                    .await?
            }
            _ => {
                access
                    .store()
                    .add_group_member(group.id, identity.id)
                    .await?
            }
        }
    }
    Ok(())
}

/// The value of a PATCH on one scalar attribute: the plain value, or the list form `[{"value": "false"}]` that the
/// Databricks documentation uses (to deactivate a user, say). A missing value is refused, not read as "unchanged":
/// the SDK's `Patch` drops falsy values such as `false`, and accepting that silently would do nothing.
fn scalar_patch_value(path: &str, value: Value) -> Result<Value, Error> {
    let missing = || Error::invalid_parameter(format!("PATCH of `{path}` needs a `value`"));
    match value {
        Value::Null => Err(missing()),
        Value::Array(items) => match items.as_slice() {
            [Value::Object(item)] => item
                .get("value")
                .filter(|value| !value.is_null())
                .cloned()
                .ok_or_else(missing),
            _ => Err(Error::invalid_parameter(format!(
                "`{path}` takes a single value"
            ))),
        },
        other => Ok(other),
    }
}

/// The scalar attributes of an identity in SCIM form, for PATCH to modify one and re-read the whole.
fn rendered_scalars(identity: &Identity) -> Map<String, Value> {
    let mut attributes = Map::new();
    let name_key = match identity.kind {
        IdentityKind::User => "userName",
        IdentityKind::Group => "displayName",
        IdentityKind::ServicePrincipal => "applicationId",
    };
    attributes.insert(name_key.into(), json!(identity.name));
    if identity.kind != IdentityKind::Group {
        attributes.insert("displayName".into(), json!(identity.display_name));
    }
    attributes.insert("active".into(), json!(identity.active));
    attributes.insert("externalId".into(), json!(identity.external_id));
    attributes.insert(
        "name".into(),
        json!({ "givenName": identity.given_name, "familyName": identity.family_name }),
    );
    attributes
}

fn set_attribute(attributes: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        Some((outer, inner)) => {
            let entry = attributes
                .entry(outer.to_owned())
                .or_insert_with(|| json!({}));
            if let Value::Object(nested) = entry {
                nested.insert(inner.to_owned(), value);
            }
        }
        None => {
            // A group's name is its displayName: keep the two in step.
            attributes.insert(path.to_owned(), value);
        }
    }
}

async fn delete(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    kind: IdentityKind,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let identity = load(&access, &id, kind).await?;
    if identity.id == caller.identity.id {
        return Err(ApiError(Error::invalid_parameter(
            "you cannot delete the principal you are authenticated as",
        )));
    }
    let built_in = [
        deputy_access::directory::ADMINS_GROUP,
        deputy_access::directory::USERS_GROUP,
    ];
    if kind == IdentityKind::Group
        && built_in
            .iter()
            .any(|name| identity.name.eq_ignore_ascii_case(name))
    {
        return Err(ApiError(Error::invalid_parameter(format!(
            "the built-in `{}` group cannot be deleted",
            identity.name
        ))));
    }
    access.store().delete_identity(identity.id).await?;
    Ok(Json(json!({})))
}

/// A service principal addressed by its SCIM id or its application id.
async fn load_service_principal(access: &Arc<Access>, id: &str) -> Result<Identity, Error> {
    if let Some(found) = access
        .store()
        .find_identity(IdentityKind::ServicePrincipal, id)
        .await?
    {
        return Ok(found);
    }
    load(access, id, IdentityKind::ServicePrincipal).await
}

#[derive(Deserialize)]
struct CreateSecretRequest {
    /// A duration such as `"7776000s"`, as the SDK sends it.
    lifetime: Option<String>,
}

/// The longest a client secret may live: two years, as on Databricks.
const MAX_SECRET_LIFETIME_SECONDS: i64 = 730 * 24 * 3600;

async fn create_secret(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(request): ApiJson<CreateSecretRequest>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let principal = load_service_principal(&access, &id).await?;
    let lifetime = match request.lifetime.as_deref() {
        None => MAX_SECRET_LIFETIME_SECONDS,
        Some(text) => text
            .strip_suffix('s')
            .and_then(|seconds| seconds.parse::<f64>().ok())
            .filter(|seconds| *seconds > 0.0 && *seconds <= MAX_SECRET_LIFETIME_SECONDS as f64)
            .map(|seconds| seconds as i64)
            .ok_or_else(|| {
                Error::invalid_parameter(format!(
                    "`lifetime` must be a duration in seconds such as \"3600s\", at most {MAX_SECRET_LIFETIME_SECONDS}s"
                ))
            })?,
    };
    let (secret, hash) = deputy_tokens::generate_client_secret().map_err(Error::internal)?;
    let now = now_millis();
    let record = ClientSecret {
        secret_id: uuid::Uuid::new_v4().simple().to_string(),
        principal_id: principal.id,
        secret_hash: hash.to_hex(),
        created_at: now,
        expires_at: now + lifetime * 1000,
    };
    access.store().insert_client_secret(record.clone()).await?;
    let mut body = secret_json(&record);
    body["secret"] = json!(secret.expose());
    Ok(Json(body))
}

fn secret_json(record: &ClientSecret) -> Value {
    json!({
        "id": record.secret_id,
        "status": "ACTIVE",
        "create_time": rfc3339(record.created_at),
        "update_time": rfc3339(record.created_at),
        "expire_time": rfc3339(record.expires_at),
    })
}

async fn list_secrets(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let principal = load_service_principal(&access, &id).await?;
    let secrets: Vec<Value> = access
        .store()
        .list_client_secrets(principal.id)
        .await?
        .iter()
        .map(secret_json)
        .collect();
    Ok(Json(json!({ "secrets": secrets })))
}

async fn delete_secret(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((id, secret_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let principal = load_service_principal(&access, &id).await?;
    match access
        .store()
        .delete_client_secret(principal.id, &secret_id)
        .await?
    {
        true => Ok(Json(json!({}))),
        false => Err(ApiError(Error::not_found(format!(
            "secret `{secret_id}` does not exist"
        )))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000_123), "2026-11-18T11:06:40Z");
    }

    #[test]
    fn scalar_patch_values_accept_the_documented_list_form() {
        let list = json!([{ "value": "false" }]);
        assert_eq!(scalar_patch_value("active", list).unwrap(), json!("false"));
        assert_eq!(
            scalar_patch_value("active", json!(false)).unwrap(),
            json!(false)
        );
        assert!(scalar_patch_value("active", Value::Null).is_err());
        assert!(scalar_patch_value("active", json!([])).is_err());
    }

    #[test]
    fn filters_parse_quoted_and_bare_values() {
        assert_eq!(
            parse_filter("userName eq \"a@b.c\"").unwrap(),
            ("userName".into(), "a@b.c".into())
        );
        assert_eq!(
            parse_filter("displayName EQ admins").unwrap(),
            ("displayName".into(), "admins".into())
        );
        assert!(parse_filter("userName co \"a\"").is_err());
        assert!(parse_filter("userName").is_err());
    }
}
