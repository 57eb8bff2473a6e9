//! Access-control lists of workspace objects at `/api/2.0/permissions/{object_type}/{object_id}` (serving
//! endpoints, warehouses, vector-search endpoints, Genie spaces), and `why`, the engine's explanation of any
//! decision.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::Caller;
use deputy_authz::{
    AccessRequest, Action, PermissionLevel, PermissionSource, SecurableKind, SecurableRef,
    WorkspaceObjectKind, WorkspaceObjectRef, decide, effective_permission_levels,
};
use deputy_catalog::{object_kind_from_type, object_type_of, principal_id};
use deputy_core::{ApiScope, ScopeSet};
use deputy_store::{Identity, IdentityKind};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

const ACCESS_CONTROL: Requires = Requires::Scope(ApiScope::IamAccessControl);

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .get(
            "/api/2.0/permissions/{object_type}/{object_id}",
            ACCESS_CONTROL,
            get_permissions,
        )
        .put(
            "/api/2.0/permissions/{object_type}/{object_id}",
            ACCESS_CONTROL,
            |s, c, p, b| set_permissions(s, c, p, b, true),
        )
        .patch(
            "/api/2.0/permissions/{object_type}/{object_id}",
            ACCESS_CONTROL,
            |s, c, p, b| set_permissions(s, c, p, b, false),
        )
        .get(
            "/api/2.0/permissions/{object_type}/{object_id}/permissionLevels",
            ACCESS_CONTROL,
            permission_levels,
        )
        .get("/api/2.0/deputy/authz/why", Requires::Authenticated, why)
}

/// The object named by the path, if the caller may at least see it (the lowest level of its kind); otherwise it
/// reads as not found.
fn visible_object(
    access: &Arc<Access>,
    caller: &Caller,
    object_type: &str,
    object_id: &str,
) -> Result<WorkspaceObjectRef, Error> {
    let kind = object_kind_from_type(object_type)
        .ok_or_else(|| Error::not_found(format!("unknown object type `{object_type}`")))?;
    let object = WorkspaceObjectRef::new(kind, object_id);
    let lowest = kind
        .levels()
        .first()
        .copied()
        .unwrap_or(PermissionLevel::CanManage);
    let action = Action::UseWorkspaceObject {
        object: object.clone(),
        level: lowest,
    };
    match access
        .decide(caller, ApiScope::IamAccessControl, action)
        .is_allowed()
    {
        true => Ok(object),
        false => Err(Error::not_found(format!(
            "{object_type} `{object_id}` does not exist"
        ))),
    }
}

fn principal_field(identity: &Identity) -> &'static str {
    match identity.kind {
        IdentityKind::User => "user_name",
        IdentityKind::Group => "group_name",
        IdentityKind::ServicePrincipal => "service_principal_name",
    }
}

/// The permissions-API view of an object: each principal with a direct entry, plus the admins group's `CAN_MANAGE`
/// inherited from the workspace root.
async fn render(access: &Arc<Access>, object: &WorkspaceObjectRef) -> Result<Value, Error> {
    let object_type = object_type_of(object.kind());
    let directory = access.directory();
    let snapshot = access.snapshot();
    let mut entries = Vec::new();
    let admins = directory.find(IdentityKind::Group, deputy_access::directory::ADMINS_GROUP);
    let mut principals: Vec<Identity> = access
        .store()
        .object_acl(object_type, object.id())
        .await?
        .iter()
        .filter_map(|entry| directory.get(entry.principal_id).cloned())
        .collect();
    if let Some(admins) = admins
        && !principals.iter().any(|principal| principal.id == admins.id)
    {
        principals.push(admins.clone());
    }
    for principal in principals {
        let levels = effective_permission_levels(principal_id(principal.id), object, &snapshot)
            .map_err(|error| Error::not_found(error.to_string()))?;
        let all_permissions: Vec<Value> = levels
            .iter()
            .filter(|level| match &level.source {
                PermissionSource::Acl(grantee) => grantee.id == principal_id(principal.id),
                PermissionSource::WorkspaceRoot => true,
            })
            .map(|level| {
                let inherited = matches!(level.source, PermissionSource::WorkspaceRoot);
                json!({
                    "permission_level": level.level.wire_name(),
                    "inherited": inherited,
                    "inherited_from_object": if inherited { json!([format!("/{object_type}/")]) } else { json!(null) },
                })
            })
            .collect();
        let mut entry =
            json!({ "display_name": principal.display_name, "all_permissions": all_permissions });
        entry[principal_field(&principal)] = json!(principal.name);
        entries.push(entry);
    }
    Ok(json!({
        "object_id": format!("/{object_type}/{}", object.id()),
        "object_type": object.kind().name(),
        "access_control_list": entries,
    }))
}

async fn get_permissions(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((object_type, object_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let object = visible_object(&access, &caller, &object_type, &object_id)?;
    Ok(Json(render(&access, &object).await?))
}

#[derive(Deserialize)]
struct SetPermissions {
    #[serde(default)]
    access_control_list: Vec<AccessControlEntry>,
}

#[derive(Deserialize)]
struct AccessControlEntry {
    user_name: Option<String>,
    group_name: Option<String>,
    service_principal_name: Option<String>,
    permission_level: Option<String>,
}

async fn set_permissions(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((object_type, object_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<SetPermissions>,
    replace: bool,
) -> Result<Json<Value>, ApiError> {
    let object = visible_object(&access, &caller, &object_type, &object_id)?;
    let manage = Action::UseWorkspaceObject {
        object: object.clone(),
        level: PermissionLevel::CanManage,
    };
    access.authorize(&caller, ApiScope::IamAccessControl, manage)?;
    let directory = access.directory();
    let mut entries = Vec::with_capacity(body.access_control_list.len());
    for entry in body.access_control_list {
        let (kind, name) = match (
            entry.user_name,
            entry.group_name,
            entry.service_principal_name,
        ) {
            (Some(name), None, None) => (IdentityKind::User, name),
            (None, Some(name), None) => (IdentityKind::Group, name),
            (None, None, Some(name)) => (IdentityKind::ServicePrincipal, name),
            _ => {
                return Err(ApiError(Error::invalid_parameter(
                    "each entry names exactly one of `user_name`, `group_name`, `service_principal_name`",
                )));
            }
        };
        let principal = directory.find(kind, &name).ok_or_else(|| {
            Error::invalid_parameter(format!("principal `{name}` does not exist"))
        })?;
        let level_name = entry.permission_level.unwrap_or_default();
        let level = PermissionLevel::from_wire_name(&level_name)
            .filter(|level| object.kind().rank(*level).is_some())
            .ok_or_else(|| {
                Error::invalid_parameter(format!(
                    "`{level_name}` is not a permission level of {}; use one of {}",
                    object.kind().name(),
                    level_names(object.kind()).join(", ")
                ))
            })?;
        entries.push((principal.id, level.wire_name().to_owned()));
    }
    let object_type = object_type_of(object.kind());
    let outcome = access
        .store()
        .set_object_acl(object_type, object.id(), &entries, replace)
        .await;
    access.publish().await?;
    outcome?;
    Ok(Json(render(&access, &object).await?))
}

fn level_names(kind: WorkspaceObjectKind) -> Vec<&'static str> {
    kind.levels()
        .iter()
        .map(|level| level.wire_name())
        .collect()
}

async fn permission_levels(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((object_type, object_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let object = visible_object(&access, &caller, &object_type, &object_id)?;
    let levels: Vec<Value> = object
        .kind()
        .levels()
        .iter()
        .map(|level| json!({ "permission_level": level.wire_name(), "description": describe(*level) }))
        .collect();
    Ok(Json(json!({ "permission_levels": levels })))
}

fn describe(level: PermissionLevel) -> &'static str {
    match level {
        PermissionLevel::CanView => "Can view the object",
        PermissionLevel::CanQuery => "Can view and query the object",
        PermissionLevel::CanMonitor => "Can view and monitor the object",
        PermissionLevel::CanUse => "Can use the object",
        PermissionLevel::CanRun => "Can view and run the object",
        PermissionLevel::CanEdit => "Can view, run and edit the object",
        PermissionLevel::CanManage => "Can do everything, including changing permissions",
        PermissionLevel::IsOwner => "Owns the object",
        PermissionLevel::CanCreate => "Can create objects of this kind",
    }
}

#[derive(Deserialize)]
struct WhyQuery {
    principal: String,
    action: String,
    /// `catalog:main`, `table:main.sales.orders`, or for workspace objects `warehouses:<id>`.
    securable: String,
    /// For workspace objects: the level asked about (default: the lowest).
    level: Option<String>,
}

/// Explains the decision the engine would make for `principal` doing `action` on `securable`, for a token holding
/// every scope (scopes belong to tokens, not principals). Admins may ask about anyone; others about themselves.
async fn why(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<WhyQuery>,
) -> Result<Json<Value>, ApiError> {
    let directory = access.directory();
    let principal = [
        IdentityKind::User,
        IdentityKind::ServicePrincipal,
        IdentityKind::Group,
    ]
    .into_iter()
    .find_map(|kind| directory.find(kind, &query.principal).cloned())
    .ok_or_else(|| {
        Error::invalid_parameter(format!("principal `{}` does not exist", query.principal))
    })?;
    if principal.id != caller.identity.id {
        caller.require_admin()?;
    }
    let (kind_name, name) = query.securable.split_once(':').ok_or_else(|| {
        Error::invalid_parameter("`securable` is `TYPE:NAME`, e.g. `table:main.sales.orders`")
    })?;
    let action = match object_kind_from_type(kind_name) {
        Some(kind) => {
            let level = match &query.level {
                Some(level) => PermissionLevel::from_wire_name(level).ok_or_else(|| {
                    Error::invalid_parameter(format!("unknown permission level `{level}`"))
                })?,
                None => kind
                    .levels()
                    .first()
                    .copied()
                    .unwrap_or(PermissionLevel::CanManage),
            };
            Action::UseWorkspaceObject {
                object: WorkspaceObjectRef::new(kind, name),
                level,
            }
        }
        None => {
            let kind = SecurableKind::from_name(kind_name).ok_or_else(|| {
                Error::invalid_parameter(format!("unknown securable type `{kind_name}`"))
            })?;
            securable_action(&query.action, SecurableRef::new(kind, name))?
        }
    };
    let request = AccessRequest {
        principal: principal_id(principal.id),
        token_scopes: ScopeSet::all(),
        required_scope: ApiScope::CatalogGrants,
        action,
    };
    let decision = decide(&request, &access.snapshot());
    Ok(Json(json!({
        "principal": principal.name,
        "allowed": decision.is_allowed(),
        "decision": decision.to_string(),
        "reasons": decision.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

/// The actions `why` understands, named as people would say them.
fn securable_action(action: &str, securable: SecurableRef) -> Result<Action, Error> {
    use SecurableKind::*;
    let applies_to: &[SecurableKind] = match action.to_ascii_lowercase().as_str() {
        "select" | "read" => &[Table, View, VectorIndex],
        "modify" | "write" => &[Table, VectorIndex],
        "execute" => &[Function],
        "read_volume" | "write_volume" => &[Volume],
        "use_connection" => &[Connection],
        _ => &[],
    };
    if !applies_to.is_empty() && !applies_to.contains(&securable.kind()) {
        let kinds: Vec<&str> = applies_to.iter().map(|kind| kind.name()).collect();
        return Err(Error::invalid_parameter(format!(
            "`{action}` applies to {}, not to a {}",
            kinds.join(", "),
            securable.kind().noun()
        )));
    }
    Ok(match action.to_ascii_lowercase().as_str() {
        "select" | "read" => Action::ReadTable(securable),
        "modify" | "write" => Action::WriteTable(securable),
        "execute" => Action::ExecuteFunction(securable),
        "read_volume" => Action::ReadVolume(securable),
        "write_volume" => Action::WriteVolume(securable),
        "use_connection" => Action::UseConnection(securable),
        "browse" | "metadata" => Action::ReadMetadata(securable),
        "manage" | "grant" => Action::Manage(securable),
        other => {
            return Err(Error::invalid_parameter(format!(
                "unknown action `{other}`: use select, modify, execute, read_volume, write_volume, use_connection, browse or manage"
            )));
        }
    })
}
