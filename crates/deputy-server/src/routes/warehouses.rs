//! SQL warehouses (`/api/2.0/sql/warehouses`): the workspace objects statements run on. The engine behind every
//! warehouse is the same in-process DataFusion engine; a warehouse is the unit of access (`CAN_USE` to run
//! statements) and carries the settings clients expect to read back.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::credentials::Caller;
use deputy_access::error::decode_stored;
use deputy_authz::{Action, PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_catalog::object_type_of;
use deputy_core::ApiScope;
use deputy_store::catalog::WorkspaceObjectRecord;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const WAREHOUSES: Requires = Requires::Scope(ApiScope::SqlWarehouses);
/// The settings a client may set and read back; anything else in a request is ignored, as unknown fields are.
const SETTINGS: &[&str] = &[
    "cluster_size",
    "min_num_clusters",
    "max_num_clusters",
    "auto_stop_mins",
    "enable_serverless_compute",
    "enable_photon",
    "warehouse_type",
    "spot_instance_policy",
    "tags",
    "channel",
];

pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/sql/warehouses", WAREHOUSES, create)
        .get("/api/2.0/sql/warehouses", WAREHOUSES, list)
        .get("/api/2.0/sql/warehouses/{id}", WAREHOUSES, get)
        .post("/api/2.0/sql/warehouses/{id}/edit", WAREHOUSES, edit)
        .delete("/api/2.0/sql/warehouses/{id}", WAREHOUSES, delete)
        .post(
            "/api/2.0/sql/warehouses/{id}/start",
            WAREHOUSES,
            |s, c, p| set_running(s, c, p, true),
        )
        .post(
            "/api/2.0/sql/warehouses/{id}/stop",
            WAREHOUSES,
            |s, c, p| set_running(s, c, p, false),
        )
}

fn object_type() -> &'static str {
    object_type_of(WorkspaceObjectKind::Warehouse)
}

fn render(access: &Arc<Access>, record: &WorkspaceObjectRecord) -> Result<Value, Error> {
    let spec: Map<String, Value> = decode_stored("warehouse spec", &record.spec)?;
    let setting = |key: &str, default: Value| spec.get(key).cloned().unwrap_or(default);
    let host = access
        .base_url()
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    Ok(json!({
        "id": record.object_id,
        "name": record.name,
        "state": setting("state", json!("RUNNING")),
        "cluster_size": setting("cluster_size", json!("X-Small")),
        "min_num_clusters": setting("min_num_clusters", json!(1)),
        "max_num_clusters": setting("max_num_clusters", json!(1)),
        "auto_stop_mins": setting("auto_stop_mins", json!(0)),
        "enable_serverless_compute": setting("enable_serverless_compute", json!(true)),
        "enable_photon": setting("enable_photon", json!(false)),
        "warehouse_type": setting("warehouse_type", json!("PRO")),
        "spot_instance_policy": setting("spot_instance_policy", json!("COST_OPTIMIZED")),
        "tags": setting("tags", json!({ "custom_tags": [] })),
        "channel": setting("channel", json!({ "name": "CHANNEL_NAME_CURRENT" })),
        "num_clusters": 1,
        "num_active_sessions": 0,
        "creator_name": access.directory().get(record.owner_id).map(|owner| owner.name.clone()),
        "health": { "status": "HEALTHY" },
        "odbc_params": {
            "hostname": host,
            "path": format!("/sql/1.0/warehouses/{}", record.object_id),
            "port": 443,
            "protocol": "https",
        },
    }))
}

/// The settings of a create or edit request, validated.
fn settings(body: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let mut settings: Map<String, Value> = SETTINGS
        .iter()
        .filter_map(|key| {
            body.get(*key)
                .map(|value| ((*key).to_owned(), value.clone()))
        })
        .collect();
    for key in ["min_num_clusters", "max_num_clusters", "auto_stop_mins"] {
        if let Some(value) = settings.get(key)
            && value.as_i64().is_none_or(|number| number < 0)
        {
            return Err(Error::invalid_parameter(format!(
                "`{key}` must be a non-negative integer"
            )));
        }
    }
    settings.retain(|_, value| !value.is_null());
    Ok(settings)
}

fn name_of(body: &Map<String, Value>) -> Result<Option<String>, Error> {
    match body.get("name") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(name)) if !name.trim().is_empty() && name.chars().count() <= 100 => {
            Ok(Some(name.clone()))
        }
        Some(_) => Err(Error::invalid_parameter(
            "`name` must be a non-empty string of at most 100 characters",
        )),
    }
}

/// Admins create warehouses; the creator owns it (`IS_OWNER`).
async fn create(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    caller.require_admin()?;
    let name = name_of(&body)?.ok_or_else(|| Error::invalid_parameter("`name` is required"))?;
    let mut spec = settings(&body)?;
    spec.insert("state".into(), json!("RUNNING"));
    let id = format!("{:016x}", rand::random::<u64>());
    let record = WorkspaceObjectRecord {
        object_type: object_type().into(),
        object_id: id.clone(),
        name,
        owner_id: caller.identity.id,
        spec: Value::Object(spec).to_string(),
        created_at: deputy_access::clock::now_millis(),
    };
    access
        .create_workspace_object(record, PermissionLevel::IsOwner)
        .await?;
    Ok(Json(json!({ "id": id })))
}

/// The warehouse, if the caller may at least view it, after checking `level`.
async fn authorized(
    access: &Arc<Access>,
    caller: &Caller,
    id: &str,
    level: PermissionLevel,
) -> Result<WorkspaceObjectRecord, Error> {
    let missing = || Error::not_found(format!("warehouse `{id}` does not exist"));
    let record = access
        .store()
        .get_workspace_object(object_type(), id)
        .await?
        .ok_or_else(missing)?;
    access.authorize_workspace_object(
        caller,
        ApiScope::SqlWarehouses,
        WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, id),
        level,
        &format!("warehouse `{id}`"),
    )?;
    Ok(record)
}

async fn list(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
) -> Result<Json<Value>, ApiError> {
    let mut warehouses = Vec::new();
    for record in access.store().list_workspace_objects(object_type()).await? {
        let object = WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, &record.object_id);
        let view = Action::UseWorkspaceObject {
            object,
            level: PermissionLevel::CanView,
        };
        if access
            .decide(&caller, ApiScope::SqlWarehouses, view)
            .is_allowed()
        {
            warehouses.push(render(&access, &record)?);
        }
    }
    Ok(Json(json!({ "warehouses": warehouses })))
}

async fn get(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let record = authorized(&access, &caller, &id, PermissionLevel::CanView).await?;
    Ok(Json(render(&access, &record)?))
}

async fn edit(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Map<String, Value>>,
) -> Result<Json<Value>, ApiError> {
    let record = authorized(&access, &caller, &id, PermissionLevel::CanManage).await?;
    if name_of(&body)?.is_some_and(|name| name != record.name) {
        return Err(ApiError(Error::invalid_parameter(
            "renaming a warehouse is not supported",
        )));
    }
    let mut spec: Map<String, Value> = decode_stored("warehouse spec", &record.spec)?;
    spec.extend(settings(&body)?);
    access
        .store()
        .update_workspace_object_spec(object_type(), &id, &Value::Object(spec).to_string())
        .await?;
    Ok(Json(json!({})))
}

async fn delete(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorized(&access, &caller, &id, PermissionLevel::CanManage).await?;
    let deleted = access
        .store()
        .delete_workspace_object(object_type(), &id)
        .await;
    access.publish().await?;
    deleted?;
    Ok(Json(json!({})))
}

/// Starting needs `CAN_USE` (running a statement would start it anyway); stopping needs `CAN_MANAGE`.
async fn set_running(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
    running: bool,
) -> Result<Json<Value>, ApiError> {
    let level = if running {
        PermissionLevel::CanUse
    } else {
        PermissionLevel::CanManage
    };
    let record = authorized(&access, &caller, &id, level).await?;
    let mut spec: Map<String, Value> = decode_stored("warehouse spec", &record.spec)?;
    spec.insert(
        "state".into(),
        json!(if running { "RUNNING" } else { "STOPPED" }),
    );
    access
        .store()
        .update_workspace_object_spec(object_type(), &id, &Value::Object(spec).to_string())
        .await?;
    Ok(Json(json!({})))
}
