//! Unity Catalog under `/api/2.1/unity-catalog`: catalogs, schemas, tables, functions, volumes and connections,
//! their grants and effective permissions, with the wire shapes the Databricks SDK uses.
//!
//! Every call is decided by the one engine (`deputy-authz`) against the current snapshot: creating needs the
//! `CREATE_*` privilege on the parent plus its usage chain, reading metadata needs `BROWSE` or any privilege (plus
//! usage), changing or deleting needs ownership or `MANAGE`, granting is decided by `may_grant`. Lists show only what
//! the caller may see. Every write is published (`AppState::changes_committed`) before the answer.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Access;
use deputy_access::Error;
use deputy_access::ErrorCode;
use deputy_access::clock::now_millis;
use deputy_access::credentials::Caller;
use deputy_access::decision_result;
use deputy_access::error::decode_stored;
use deputy_authz::{
    Action, Privilege, PrivilegeSet, SecurableKind, SecurableRef, effective_privileges, may_grant,
    validate_name,
};
use deputy_catalog::{METASTORE_NAME, namespace_of, securable_ref};
use deputy_core::ApiScope;
use deputy_store::catalog::{
    GrantChange, NewSecurable, SecurableChanges, SecurablePage, SecurableRecord,
};
use deputy_store::specs::{
    ColumnSpec, ConnectionSpec, FunctionParameterSpec, FunctionSpec, TableSpec,
};
use deputy_store::{Identity, IdentityKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::sync::Arc;

const DEFAULT_PAGE: i64 = 1000;
const MAX_PAGE: i64 = 10_000;
/// Option keys of connections that hold credentials: stored, used, never returned.
const SECRET_OPTIONS: &[&str] = &[
    "bearer_token",
    "client_secret",
    "password",
    "token",
    "api_key",
];

fn scope_of(kind: SecurableKind) -> ApiScope {
    match kind {
        SecurableKind::Catalog | SecurableKind::Metastore => ApiScope::CatalogCatalogs,
        SecurableKind::Schema => ApiScope::CatalogSchemas,
        SecurableKind::Function => ApiScope::CatalogFunctions,
        SecurableKind::Volume => ApiScope::CatalogVolumes,
        SecurableKind::Connection => ApiScope::CatalogConnections,
        _ => ApiScope::CatalogTables,
    }
}

pub fn routes(router: ApiRouter) -> ApiRouter {
    let router = grant_routes(collection_routes(router));
    [
        (
            "/api/2.1/unity-catalog/catalogs/{name}",
            ApiScope::CatalogCatalogs,
            SecurableKind::Catalog,
        ),
        (
            "/api/2.1/unity-catalog/schemas/{full_name}",
            ApiScope::CatalogSchemas,
            SecurableKind::Schema,
        ),
        (
            "/api/2.1/unity-catalog/tables/{full_name}",
            ApiScope::CatalogTables,
            SecurableKind::Table,
        ),
        (
            "/api/2.1/unity-catalog/functions/{full_name}",
            ApiScope::CatalogFunctions,
            SecurableKind::Function,
        ),
        (
            "/api/2.1/unity-catalog/volumes/{full_name}",
            ApiScope::CatalogVolumes,
            SecurableKind::Volume,
        ),
        (
            "/api/2.1/unity-catalog/connections/{name}",
            ApiScope::CatalogConnections,
            SecurableKind::Connection,
        ),
    ]
    .into_iter()
    .fold(router, |router, (path, scope, kind)| {
        item_routes(router, path, Requires::Scope(scope), kind)
    })
}

/// Creating and listing each kind of securable.
fn collection_routes(router: ApiRouter) -> ApiRouter {
    let catalogs = Requires::Scope(ApiScope::CatalogCatalogs);
    let schemas = Requires::Scope(ApiScope::CatalogSchemas);
    let tables = Requires::Scope(ApiScope::CatalogTables);
    let functions = Requires::Scope(ApiScope::CatalogFunctions);
    let volumes = Requires::Scope(ApiScope::CatalogVolumes);
    let connections = Requires::Scope(ApiScope::CatalogConnections);
    router
        .post("/api/2.1/unity-catalog/catalogs", catalogs, create_catalog)
        .get("/api/2.1/unity-catalog/catalogs", catalogs, |s, c, q| {
            list_top_level(s, c, q, SecurableKind::Catalog)
        })
        .post("/api/2.1/unity-catalog/schemas", schemas, create_schema)
        .get("/api/2.1/unity-catalog/schemas", schemas, list_schemas)
        .post("/api/2.1/unity-catalog/tables", tables, create_table)
        .get("/api/2.1/unity-catalog/tables", tables, list_tables)
        .get(
            "/api/2.1/unity-catalog/tables/{full_name}/exists",
            tables,
            table_exists,
        )
        .post(
            "/api/2.1/unity-catalog/functions",
            functions,
            create_function,
        )
        .get("/api/2.1/unity-catalog/functions", functions, |s, c, q| {
            list_in_schema(s, c, q, SecurableKind::Function)
        })
        .post("/api/2.1/unity-catalog/volumes", volumes, create_volume)
        .get("/api/2.1/unity-catalog/volumes", volumes, |s, c, q| {
            list_in_schema(s, c, q, SecurableKind::Volume)
        })
        .post(
            "/api/2.1/unity-catalog/connections",
            connections,
            create_connection,
        )
        .get(
            "/api/2.1/unity-catalog/connections",
            connections,
            |s, c, q| list_top_level(s, c, q, SecurableKind::Connection),
        )
}

/// Grants and effective permissions on any securable.
fn grant_routes(router: ApiRouter) -> ApiRouter {
    let grants = Requires::Scope(ApiScope::CatalogGrants);
    router
        .get(
            "/api/2.1/unity-catalog/permissions/{securable_type}/{full_name}",
            grants,
            get_grants,
        )
        .patch(
            "/api/2.1/unity-catalog/permissions/{securable_type}/{full_name}",
            grants,
            update_grants,
        )
        .get(
            "/api/2.1/unity-catalog/effective-permissions/{securable_type}/{full_name}",
            grants,
            get_effective,
        )
}

/// `GET`, `PATCH` and `DELETE` on one securable of `kind`, named by the path's last segment.
fn item_routes(
    router: ApiRouter,
    path: &'static str,
    access: Requires,
    kind: SecurableKind,
) -> ApiRouter {
    router
        .get(path, access, move |s, c, p| get(s, c, p, kind))
        .patch(path, access, move |s, c, p, b| update(s, c, p, b, kind))
        .delete(path, access, move |s, c, p, q| delete(s, c, p, q, kind))
}

// ---- names and lookups ------------------------------------------------------------------------------------------

/// Checks each segment of a full name with the engine's own rule, so that nothing the snapshot would refuse is
/// ever stored.
fn validate_full_name(full_name: &str, kind: SecurableKind) -> Result<(), Error> {
    let segments: Vec<&str> = full_name.split('.').collect();
    if segments.len() != kind.name_segments() {
        return Err(Error::invalid_parameter(format!(
            "a {} name has {} dot-separated parts, `{full_name}` has {}",
            kind.noun(),
            kind.name_segments(),
            segments.len()
        )));
    }
    for segment in segments {
        validate_name(segment).map_err(|error| {
            Error::invalid_parameter(format!("invalid name `{full_name}`: {error}"))
        })?;
    }
    Ok(())
}

fn not_found(kind: SecurableKind, full_name: &str) -> Error {
    Error::not_found(format!("{} `{full_name}` does not exist", kind.noun()))
}

/// Finds a stored securable of `kind` (a `table` lookup also finds views and vector indexes).
async fn find(
    access: &Arc<Access>,
    kind: SecurableKind,
    full_name: &str,
) -> Result<SecurableRecord, Error> {
    let record = access
        .store()
        .find_securable(namespace_of(kind), full_name)
        .await?;
    record.ok_or_else(|| not_found(kind, full_name))
}

/// Loads a securable and checks that the caller may see its metadata; what the caller cannot see is not found.
async fn visible(
    access: &Arc<Access>,
    caller: &Caller,
    kind: SecurableKind,
    full_name: &str,
) -> Result<SecurableRecord, Error> {
    let record = find(access, kind, full_name).await?;
    let reference = securable_ref(&record).map_err(Error::internal)?;
    let decision = access.decide(caller, scope_of(kind), Action::ReadMetadata(reference));
    if decision.is_allowed() {
        return Ok(record);
    }
    // As the SQL engine does, and Databricks: a function in a schema the caller can see is refused naming the
    // privilege, so a client (unitycatalog-ai's toolkit) can tell "not yours" from "not there".
    if kind == SecurableKind::Function
        && let Some((schema, _)) = full_name.rsplit_once('.')
        && access
            .decide(
                caller,
                scope_of(kind),
                Action::ReadMetadata(SecurableRef::new(SecurableKind::Schema, schema)),
            )
            .is_allowed()
    {
        return Err(Error::permission_denied(format!(
            "EXECUTE on function `{full_name}` is required ({decision})"
        )));
    }
    Err(not_found(kind, full_name))
}

fn principal_name(access: &Arc<Access>, id: deputy_store::PrincipalId) -> String {
    access
        .directory()
        .get(id)
        .map(|identity| identity.name.clone())
        .unwrap_or_else(|| id.to_string())
}

/// A principal named as on the wire: a user name, a group name or a service principal's application id.
fn principal_by_name(access: &Arc<Access>, name: &str) -> Result<Identity, Error> {
    let directory = access.directory();
    [
        IdentityKind::User,
        IdentityKind::Group,
        IdentityKind::ServicePrincipal,
    ]
    .into_iter()
    .find_map(|kind| directory.find(kind, name).cloned())
    .ok_or_else(|| Error::invalid_parameter(format!("principal `{name}` does not exist")))
}

async fn published(
    access: &Arc<Access>,
    outcome: Result<Json<Value>, ApiError>,
) -> Result<Json<Value>, ApiError> {
    access.publish().await?;
    outcome
}

fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| json!({}))
}

// ---- rendering --------------------------------------------------------------------------------------------------

fn render(
    access: &Arc<Access>,
    kind: SecurableKind,
    record: &SecurableRecord,
) -> Result<Value, Error> {
    let segments: Vec<&str> = record.full_name.split('.').collect();
    let name = segments.last().copied().unwrap_or_default();
    let mut body = json!({
        "name": name,
        "full_name": record.full_name,
        "owner": principal_name(access, record.owner_id),
        "comment": record.comment,
        "properties": parse_json(&record.properties),
        "metastore_id": METASTORE_NAME,
        "created_at": record.created_at,
        "created_by": principal_name(access, record.created_by),
        "updated_at": record.updated_at,
        "updated_by": principal_name(access, record.updated_by),
    });
    let id = record.id.0.to_string();
    match kind {
        SecurableKind::Catalog => {
            body["catalog_type"] = json!("MANAGED_CATALOG");
            body["securable_type"] = json!("CATALOG");
            body["isolation_mode"] = json!("OPEN");
            body["browse_only"] = json!(false);
            body["id"] = json!(id);
        }
        SecurableKind::Schema => {
            body["catalog_name"] = json!(segments[0]);
            body["schema_id"] = json!(id);
            body["securable_type"] = json!("SCHEMA");
        }
        SecurableKind::Connection => render_connection(&mut body, record, &id)?,
        _ => render_schema_object(&mut body, record, &segments, &id)?,
    }
    Ok(body)
}

/// `FunctionParameterInfos`: the parameters of a function, or the columns of a table function's result.
fn parameters_json(parameters: &[FunctionParameterSpec], parameter_type: &str) -> Value {
    json!({ "parameters": parameters.iter().map(|p| json!({
        "name": p.name, "type_text": p.type_text, "type_name": p.type_name, "position": p.position,
        "type_json": json!({"name": p.name, "type": p.type_text.to_ascii_lowercase(), "nullable": true, "metadata": {}})
            .to_string(),
        "parameter_mode": "IN", "parameter_type": parameter_type, "parameter_default": p.parameter_default,
        "comment": p.comment,
    })).collect::<Vec<_>>() })
}

fn render_schema_object(
    body: &mut Value,
    record: &SecurableRecord,
    segments: &[&str],
    id: &str,
) -> Result<(), Error> {
    body["catalog_name"] = json!(segments.first());
    body["schema_name"] = json!(segments.get(1));
    match record.kind.as_str() {
        "function" => {
            let spec: FunctionSpec = decode_stored("function spec", &record.spec)?;
            body["function_id"] = json!(id);
            body["securable_type"] = json!("FUNCTION");
            body["input_params"] = parameters_json(&spec.input_params, "PARAM");
            if !spec.return_params.is_empty() {
                body["return_params"] = parameters_json(&spec.return_params, "COLUMN");
            }
            body["data_type"] = json!(spec.data_type);
            body["full_data_type"] = json!(spec.full_data_type);
            body["routine_body"] = json!(spec.routine_body);
            body["routine_definition"] = json!(spec.routine_definition);
            body["external_language"] = json!(spec.external_language);
            body["is_deterministic"] = json!(spec.is_deterministic);
            body["sql_data_access"] = json!(spec.sql_data_access);
            body["parameter_style"] = json!("S");
            body["security_type"] = json!("DEFINER");
            body["specific_name"] = json!(segments.last());
            body["is_null_call"] = json!(false);
            // `FunctionInfo.properties` is a JSON-encoded string, unlike the object of other securables.
            body["properties"] = json!(record.properties);
        }
        "volume" => {
            body["volume_id"] = json!(id);
            body["volume_type"] = json!("MANAGED");
            body["securable_type"] = json!("VOLUME");
        }
        _ => {
            let spec: TableSpec = decode_stored("table spec", &record.spec)?;
            body["table_id"] = json!(id);
            body["securable_type"] = json!("TABLE");
            body["table_type"] = json!(spec.table_type);
            body["data_source_format"] = json!(spec.data_source_format);
            body["storage_location"] = json!(spec.storage_location);
            body["view_definition"] = json!(spec.view_definition);
            body["row_filter"] = json!(spec.row_filter.as_ref().map(|filter| json!({
                "function_name": filter.function_name, "input_column_names": filter.input_column_names,
            })));
            body["columns"] = json!(spec.columns.iter().map(|column| json!({
                "name": column.name, "type_text": column.type_text, "type_name": column.type_name,
                "type_json": json!({ "name": column.name, "type": column.type_text, "nullable": column.nullable, "metadata": {} }).to_string(),
                "position": column.position, "nullable": column.nullable, "comment": column.comment,
                "mask": column.mask.as_ref().map(|mask| json!({
                    "function_name": mask.function_name, "using_column_names": mask.using_column_names,
                })),
            })).collect::<Vec<_>>());
        }
    }
    Ok(())
}

fn render_connection(body: &mut Value, record: &SecurableRecord, id: &str) -> Result<(), Error> {
    let spec: ConnectionSpec = decode_stored("connection spec", &record.spec)?;
    let options: Map<String, Value> = spec
        .options
        .iter()
        .filter(|(key, _)| !SECRET_OPTIONS.contains(&key.as_str()))
        .map(|(key, value)| (key.clone(), json!(value)))
        .collect();
    let credential_type = if spec.options.contains_key("bearer_token") {
        "BEARER_TOKEN"
    } else if spec.options.contains_key("client_secret") {
        "OAUTH_M2M"
    } else {
        "ANY_STATIC_CREDENTIAL"
    };
    body["connection_id"] = json!(id);
    body["connection_type"] = json!(spec.connection_type);
    body["credential_type"] = json!(credential_type);
    body["options"] = Value::Object(options);
    body["read_only"] = json!(spec.read_only);
    body["securable_type"] = json!("CONNECTION");
    if let Some(host) = spec.options.get("host") {
        let port = spec
            .options
            .get("port")
            .map(|port| format!(":{port}"))
            .unwrap_or_default();
        body["url"] = json!(format!("{host}{port}"));
    }
    Ok(())
}

// ---- create ------------------------------------------------------------------------------------------------------

/// Creates a securable under `parent` once the caller may; the caller becomes its owner.
/// What a create call asks for, once its body is read.
struct Creation {
    kind: SecurableKind,
    full_name: String,
    parent: Option<SecurableRecord>,
    comment: Option<String>,
    properties: Option<Value>,
    spec: String,
}

async fn create(
    access: &Arc<Access>,
    caller: &Caller,
    creation: Creation,
) -> Result<Json<Value>, ApiError> {
    let Creation {
        kind,
        full_name,
        parent,
        comment,
        properties,
        spec,
    } = creation;
    validate_full_name(&full_name, kind)?;
    let parent_ref = match &parent {
        Some(parent) => securable_ref(parent).map_err(Error::internal)?,
        None => SecurableRef::new(SecurableKind::Metastore, METASTORE_NAME),
    };
    access.authorize(
        caller,
        scope_of(kind),
        Action::CreateIn {
            parent: parent_ref,
            kind,
        },
    )?;
    let properties = match properties {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::Object(map)) => Value::Object(map).to_string(),
        Some(_) => {
            return Err(ApiError(Error::invalid_parameter(
                "`properties` must be an object of strings",
            )));
        }
    };
    let record = access
        .store()
        .create_securable(
            NewSecurable {
                kind: kind.name().into(),
                namespace: namespace_of(kind).into(),
                full_name,
                parent_id: parent.map(|parent| parent.id),
                owner_id: caller.identity.id,
                comment,
                properties,
                spec,
                created_by: caller.identity.id,
            },
            now_millis(),
        )
        .await?;
    access.publish().await?;
    Ok(Json(render(access, kind, &record)?))
}

fn require(value: Option<String>, field: &str) -> Result<String, Error> {
    value
        .filter(|text| !text.is_empty())
        .ok_or_else(|| Error::invalid_parameter(format!("`{field}` is required")))
}

#[derive(Deserialize)]
struct CreateCatalog {
    name: Option<String>,
    comment: Option<String>,
    properties: Option<Value>,
}

async fn create_catalog(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateCatalog>,
) -> Result<Json<Value>, ApiError> {
    let name = require(body.name, "name")?;
    create(
        &access,
        &caller,
        Creation {
            kind: SecurableKind::Catalog,
            full_name: name,
            parent: None,
            comment: body.comment,
            properties: body.properties,
            spec: "{}".into(),
        },
    )
    .await
}

#[derive(Deserialize)]
struct CreateSchema {
    name: Option<String>,
    catalog_name: Option<String>,
    comment: Option<String>,
    properties: Option<Value>,
}

async fn create_schema(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateSchema>,
) -> Result<Json<Value>, ApiError> {
    let catalog_name = require(body.catalog_name, "catalog_name")?;
    let name = require(body.name, "name")?;
    let parent = visible(&access, &caller, SecurableKind::Catalog, &catalog_name).await?;
    let full_name = format!("{}.{name}", parent.full_name);
    create(
        &access,
        &caller,
        Creation {
            kind: SecurableKind::Schema,
            full_name,
            parent: Some(parent),
            comment: body.comment,
            properties: body.properties,
            spec: "{}".into(),
        },
    )
    .await
}

/// The parent schema of a three-level object named by `catalog_name` + `schema_name` + `name`.
async fn schema_child(
    access: &Arc<Access>,
    caller: &Caller,
    catalog_name: Option<String>,
    schema_name: Option<String>,
    name: Option<String>,
) -> Result<(SecurableRecord, String), Error> {
    let catalog_name = require(catalog_name, "catalog_name")?;
    let schema_name = require(schema_name, "schema_name")?;
    let name = require(name, "name")?;
    let schema = visible(
        access,
        caller,
        SecurableKind::Schema,
        &format!("{catalog_name}.{schema_name}"),
    )
    .await?;
    let full_name = format!("{}.{name}", schema.full_name);
    Ok((schema, full_name))
}

#[derive(Deserialize)]
struct CreateTable {
    name: Option<String>,
    catalog_name: Option<String>,
    schema_name: Option<String>,
    table_type: Option<String>,
    data_source_format: Option<String>,
    #[serde(default)]
    columns: Vec<ColumnInput>,
    storage_location: Option<String>,
    view_definition: Option<String>,
    comment: Option<String>,
    properties: Option<Value>,
}

#[derive(Deserialize)]
struct ColumnInput {
    name: Option<String>,
    type_text: Option<String>,
    type_name: Option<String>,
    position: Option<u32>,
    nullable: Option<bool>,
    comment: Option<String>,
}

async fn create_table(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateTable>,
) -> Result<Json<Value>, ApiError> {
    let (schema, full_name) = schema_child(
        &access,
        &caller,
        body.catalog_name,
        body.schema_name,
        body.name,
    )
    .await?;
    let table_type = body
        .table_type
        .unwrap_or_else(|| "MANAGED".into())
        .to_ascii_uppercase();
    let kind = match table_type.as_str() {
        "MANAGED" | "EXTERNAL" => SecurableKind::Table,
        "VIEW" | "MATERIALIZED_VIEW" => SecurableKind::View,
        other => {
            return Err(ApiError(Error::invalid_parameter(format!(
                "unsupported `table_type` `{other}`"
            ))));
        }
    };
    let mut columns = Vec::with_capacity(body.columns.len());
    for (index, column) in body.columns.into_iter().enumerate() {
        let name = require(column.name, "columns[].name")?;
        let type_text = column
            .type_text
            .or_else(|| column.type_name.clone())
            .unwrap_or_else(|| "string".into());
        columns.push(ColumnSpec {
            name,
            type_name: column
                .type_name
                .unwrap_or_else(|| type_text.to_ascii_uppercase()),
            type_text,
            position: column.position.unwrap_or(index as u32),
            nullable: column.nullable.unwrap_or(true),
            comment: column.comment,
            mask: None,
        });
    }
    let spec = TableSpec {
        table_type,
        data_source_format: body
            .data_source_format
            .or_else(|| (kind == SecurableKind::Table).then(|| "PARQUET".into())),
        columns,
        storage_location: body.storage_location,
        view_definition: body.view_definition,
        row_filter: None,
    };
    let spec = serde_json::to_string(&spec).map_err(Error::internal)?;
    create(
        &access,
        &caller,
        Creation {
            kind,
            full_name,
            parent: Some(schema),
            comment: body.comment,
            properties: body.properties,
            spec,
        },
    )
    .await
}

#[derive(Deserialize)]
struct CreateFunctionRequest {
    function_info: Option<FunctionInput>,
}

#[derive(Deserialize)]
struct FunctionInput {
    name: Option<String>,
    catalog_name: Option<String>,
    schema_name: Option<String>,
    input_params: Option<FunctionParameters>,
    return_params: Option<FunctionParameters>,
    data_type: Option<String>,
    full_data_type: Option<String>,
    routine_body: Option<String>,
    routine_definition: Option<String>,
    external_language: Option<String>,
    is_deterministic: Option<bool>,
    sql_data_access: Option<String>,
    comment: Option<String>,
    properties: Option<Value>,
}

#[derive(Deserialize)]
struct FunctionParameters {
    #[serde(default)]
    parameters: Vec<FunctionParameterInput>,
}

#[derive(Deserialize)]
struct FunctionParameterInput {
    name: Option<String>,
    type_text: Option<String>,
    type_name: Option<String>,
    position: Option<u32>,
    parameter_default: Option<String>,
    comment: Option<String>,
}

async fn create_function(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateFunctionRequest>,
) -> Result<Json<Value>, ApiError> {
    let info = body
        .function_info
        .ok_or_else(|| Error::invalid_parameter("`function_info` is required"))?;
    let (schema, full_name) = schema_child(
        &access,
        &caller,
        info.catalog_name,
        info.schema_name,
        info.name,
    )
    .await?;
    let parameters = parameter_specs(info.input_params, "input_params")?;
    let return_params = parameter_specs(info.return_params, "return_params")?;
    let data_type = require(info.data_type, "data_type")?;
    let spec = FunctionSpec {
        input_params: parameters,
        return_params,
        full_data_type: info
            .full_data_type
            .unwrap_or_else(|| data_type.to_ascii_lowercase()),
        data_type,
        routine_body: info.routine_body.unwrap_or_else(|| "SQL".into()),
        routine_definition: require(info.routine_definition, "routine_definition")?,
        external_language: info.external_language,
        is_deterministic: info.is_deterministic.unwrap_or(true),
        sql_data_access: info.sql_data_access,
    };
    let spec = serde_json::to_string(&spec).map_err(Error::internal)?;
    create(
        &access,
        &caller,
        Creation {
            kind: SecurableKind::Function,
            full_name,
            parent: Some(schema),
            comment: info.comment,
            properties: function_properties(info.properties)?,
            spec,
        },
    )
    .await
}

/// The parameters of a function (or the columns of a table function) as sent; a missing type is `string`.
fn parameter_specs(
    parameters: Option<FunctionParameters>,
    field: &str,
) -> Result<Vec<FunctionParameterSpec>, Error> {
    let mut specs = Vec::new();
    for (index, parameter) in parameters
        .map(|p| p.parameters)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let type_text = parameter
            .type_text
            .or_else(|| parameter.type_name.clone())
            .unwrap_or_else(|| "string".into());
        specs.push(FunctionParameterSpec {
            name: require(parameter.name, &format!("{field}.parameters[].name"))?,
            type_name: parameter
                .type_name
                .unwrap_or_else(|| type_text.to_ascii_uppercase()),
            type_text,
            position: parameter.position.unwrap_or(index as u32),
            parameter_default: parameter.parameter_default,
            comment: parameter.comment,
        });
    }
    Ok(specs)
}

/// A function's `properties` travel as a JSON-encoded string (`CreateFunction.properties: str` in the SDK); an
/// object is accepted too.
fn function_properties(properties: Option<Value>) -> Result<Option<Value>, Error> {
    match properties {
        Some(Value::String(text)) if text.trim().is_empty() => Ok(None),
        Some(Value::String(text)) => serde_json::from_str::<Value>(&text)
            .ok()
            .filter(Value::is_object)
            .map(Some)
            .ok_or_else(|| {
                Error::invalid_parameter("`properties` must be a JSON object encoded as a string")
            }),
        other => Ok(other),
    }
}

#[derive(Deserialize)]
struct CreateVolume {
    name: Option<String>,
    catalog_name: Option<String>,
    schema_name: Option<String>,
    comment: Option<String>,
}

async fn create_volume(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateVolume>,
) -> Result<Json<Value>, ApiError> {
    let (schema, full_name) = schema_child(
        &access,
        &caller,
        body.catalog_name,
        body.schema_name,
        body.name,
    )
    .await?;
    create(
        &access,
        &caller,
        Creation {
            kind: SecurableKind::Volume,
            full_name,
            parent: Some(schema),
            comment: body.comment,
            properties: None,
            spec: "{}".into(),
        },
    )
    .await
}

#[derive(Deserialize)]
struct CreateConnection {
    name: Option<String>,
    connection_type: Option<String>,
    #[serde(default)]
    options: std::collections::BTreeMap<String, String>,
    comment: Option<String>,
    properties: Option<Value>,
    read_only: Option<bool>,
}

async fn create_connection(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiJson(body): ApiJson<CreateConnection>,
) -> Result<Json<Value>, ApiError> {
    let name = require(body.name, "name")?;
    let connection_type = require(body.connection_type, "connection_type")?.to_ascii_uppercase();
    let spec = ConnectionSpec {
        connection_type,
        options: body.options,
        read_only: body.read_only.unwrap_or(false),
    };
    check_connection_options(&spec)?;
    let spec = serde_json::to_string(&spec).map_err(Error::internal)?;
    create(
        &access,
        &caller,
        Creation {
            kind: SecurableKind::Connection,
            full_name: name,
            parent: None,
            comment: body.comment,
            properties: body.properties,
            spec,
        },
    )
    .await
}

/// An HTTP connection's options are checked when written (host, port, base path, one credential), so that a
/// connection that cannot be used is refused at once rather than at its first external-function call.
fn check_connection_options(spec: &ConnectionSpec) -> Result<(), Error> {
    if spec.connection_type.eq_ignore_ascii_case("HTTP") {
        deputy_connections::http::HttpConnection::from_options(&spec.options)
            .map_err(|error| Error::invalid_parameter(error.to_string()))?;
    }
    Ok(())
}

// ---- read ----------------------------------------------------------------------------------------------------------

async fn get(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(full_name): Path<String>,
    kind: SecurableKind,
) -> Result<Json<Value>, ApiError> {
    let record = visible(&access, &caller, kind, &full_name).await?;
    let kind = SecurableKind::from_name(&record.kind).unwrap_or(kind);
    Ok(Json(render(&access, kind, &record)?))
}

async fn table_exists(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(full_name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let exists = visible(&access, &caller, SecurableKind::Table, &full_name)
        .await
        .is_ok();
    Ok(Json(json!({ "table_exists": exists })))
}

#[derive(Deserialize, Default)]
struct ListQuery {
    catalog_name: Option<String>,
    schema_name: Option<String>,
    max_results: Option<i64>,
    page_token: Option<String>,
}

/// One page of the children of `parent` (or of the metastore), filtered to those the caller may see.
async fn list_page(
    access: &Arc<Access>,
    caller: &Caller,
    kinds: &[SecurableKind],
    parent: Option<&SecurableRecord>,
    query: &ListQuery,
    key: &str,
) -> Result<Json<Value>, ApiError> {
    let limit = match query.max_results.unwrap_or(0) {
        0 => DEFAULT_PAGE,
        negative if negative < 0 => {
            return Err(ApiError(Error::invalid_parameter(
                "`max_results` must not be negative",
            )));
        }
        requested => requested.min(MAX_PAGE),
    };
    let page = SecurablePage {
        kind: (kinds.len() == 1).then(|| kinds[0].name().to_owned()),
        parent_id: parent.map(|parent| parent.id),
        after: query.page_token.clone().filter(|token| !token.is_empty()),
        limit,
    };
    let records = access.store().list_securables(&page).await?;
    let snapshot = access.snapshot();
    let mut items = Vec::new();
    for record in &records {
        let Some(kind) = SecurableKind::from_name(&record.kind).filter(|kind| kinds.contains(kind))
        else {
            continue;
        };
        // Connections and catalogs both hang off the metastore: without a parent filter, keep the kind asked for.
        if parent.is_none() && record.parent_id.is_some() {
            continue;
        }
        let reference = securable_ref(record).map_err(Error::internal)?;
        let request = deputy_authz::AccessRequest {
            principal: access.caller_principal(caller),
            token_scopes: caller.scopes,
            required_scope: scope_of(kind),
            action: Action::ReadMetadata(reference),
        };
        if deputy_authz::decide(&request, &snapshot).is_allowed() {
            items.push(render(access, kind, record)?);
        }
    }
    let next_page_token = match records.len() as i64 == limit {
        true => records.last().map(|record| record.full_name.clone()),
        false => None,
    };
    Ok(Json(
        json!({ key: items, "next_page_token": next_page_token }),
    ))
}

/// Catalogs and connections: the securables that hang off the metastore.
async fn list_top_level(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
    kind: SecurableKind,
) -> Result<Json<Value>, ApiError> {
    let key = if kind == SecurableKind::Catalog {
        "catalogs"
    } else {
        "connections"
    };
    list_page(&access, &caller, &[kind], None, &query, key).await
}

async fn list_schemas(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let catalog_name = require(query.catalog_name.clone(), "catalog_name")?;
    let catalog = visible(&access, &caller, SecurableKind::Catalog, &catalog_name).await?;
    list_page(
        &access,
        &caller,
        &[SecurableKind::Schema],
        Some(&catalog),
        &query,
        "schemas",
    )
    .await
}

async fn list_tables(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let schema = parent_schema(&access, &caller, &query).await?;
    let kinds = [
        SecurableKind::Table,
        SecurableKind::View,
        SecurableKind::VectorIndex,
    ];
    list_page(&access, &caller, &kinds, Some(&schema), &query, "tables").await
}

async fn list_in_schema(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    ApiQuery(query): ApiQuery<ListQuery>,
    kind: SecurableKind,
) -> Result<Json<Value>, ApiError> {
    let schema = parent_schema(&access, &caller, &query).await?;
    let key = if kind == SecurableKind::Function {
        "functions"
    } else {
        "volumes"
    };
    list_page(&access, &caller, &[kind], Some(&schema), &query, key).await
}

async fn parent_schema(
    access: &Arc<Access>,
    caller: &Caller,
    query: &ListQuery,
) -> Result<SecurableRecord, Error> {
    let catalog_name = require(query.catalog_name.clone(), "catalog_name")?;
    let schema_name = require(query.schema_name.clone(), "schema_name")?;
    visible(
        access,
        caller,
        SecurableKind::Schema,
        &format!("{catalog_name}.{schema_name}"),
    )
    .await
}

// ---- update and delete -------------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct UpdateRequest {
    new_name: Option<String>,
    owner: Option<String>,
    comment: Option<String>,
    properties: Option<Value>,
    options: Option<std::collections::BTreeMap<String, String>>,
}

async fn update(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(full_name): Path<String>,
    ApiJson(body): ApiJson<UpdateRequest>,
    kind: SecurableKind,
) -> Result<Json<Value>, ApiError> {
    let record = visible(&access, &caller, kind, &full_name).await?;
    let kind = SecurableKind::from_name(&record.kind).unwrap_or(kind);
    let reference = securable_ref(&record).map_err(Error::internal)?;
    decision_result(may_grant(
        access.caller_principal(&caller),
        &reference,
        &access.snapshot(),
    ))?;
    let mut changes = SecurableChanges::default();
    if let Some(new_name) = body.new_name.filter(|name| !name.is_empty()) {
        let renamed = match record.full_name.rsplit_once('.') {
            Some((parent, _)) => format!("{parent}.{new_name}"),
            None => new_name,
        };
        validate_full_name(&renamed, kind)?;
        changes.full_name = Some(renamed);
    }
    if let Some(owner) = body.owner {
        changes.owner_id = Some(principal_by_name(&access, &owner)?.id);
    }
    if let Some(comment) = body.comment {
        changes.comment = Some(Some(comment));
    }
    if let Some(properties) = body.properties {
        if !properties.is_object() {
            return Err(ApiError(Error::invalid_parameter(
                "`properties` must be an object of strings",
            )));
        }
        changes.properties = Some(properties.to_string());
    }
    if let Some(options) = body.options {
        if kind != SecurableKind::Connection {
            return Err(ApiError(Error::invalid_parameter(
                "`options` apply to connections only",
            )));
        }
        let mut spec: ConnectionSpec = decode_stored("connection spec", &record.spec)?;
        spec.options.extend(options);
        check_connection_options(&spec)?;
        changes.spec = Some(serde_json::to_string(&spec).map_err(Error::internal)?);
    }
    let outcome = access
        .store()
        .update_securable(record.id, changes, caller.identity.id, now_millis())
        .await;
    let outcome = outcome
        .map_err(Error::from)
        .and_then(|updated| render(&access, kind, &updated))
        .map(Json)
        .map_err(ApiError::from);
    published(&access, outcome).await
}

#[derive(Deserialize, Default)]
struct DeleteQuery {
    force: Option<bool>,
}

async fn delete(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path(full_name): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
    kind: SecurableKind,
) -> Result<Json<Value>, ApiError> {
    let record = visible(&access, &caller, kind, &full_name).await?;
    let reference = securable_ref(&record).map_err(Error::internal)?;
    decision_result(may_grant(
        access.caller_principal(&caller),
        &reference,
        &access.snapshot(),
    ))?;
    if matches!(kind, SecurableKind::Catalog | SecurableKind::Schema)
        && !query.force.unwrap_or(false)
    {
        let children = SecurablePage {
            parent_id: Some(record.id),
            limit: 1,
            ..SecurablePage::default()
        };
        if !access.store().list_securables(&children).await?.is_empty() {
            return Err(ApiError(Error::new(
                ErrorCode::InvalidState,
                format!(
                    "{} `{full_name}` is not empty; delete with force=true to remove everything in it",
                    kind.noun()
                ),
            )));
        }
    }
    let outcome = access
        .store()
        .delete_securable(record.id)
        .await
        .map(|()| Json(json!({})))
        .map_err(ApiError::from);
    published(&access, outcome).await
}

// ---- grants --------------------------------------------------------------------------------------------------------

fn securable_kind(securable_type: &str) -> Result<SecurableKind, Error> {
    SecurableKind::from_name(securable_type)
        .filter(|kind| *kind != SecurableKind::Metastore)
        .ok_or_else(|| {
            Error::invalid_parameter(format!("unknown securable type `{securable_type}`"))
        })
}

#[derive(Deserialize, Default)]
struct GrantsQuery {
    principal: Option<String>,
}

async fn direct_grants(
    access: &Arc<Access>,
    record: &SecurableRecord,
    principal: Option<&str>,
) -> Result<Value, Error> {
    let mut by_principal: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for grant in access.store().grants_on(record.id).await? {
        by_principal
            .entry(principal_name(access, grant.principal_id))
            .or_default()
            .push(grant.privilege);
    }
    let assignments: Vec<Value> = by_principal
        .into_iter()
        .filter(|(name, _)| principal.is_none_or(|wanted| wanted.eq_ignore_ascii_case(name)))
        .map(|(name, privileges)| json!({ "principal": name, "privileges": privileges }))
        .collect();
    Ok(json!({ "privilege_assignments": assignments }))
}

async fn get_grants(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((securable_type, full_name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<GrantsQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = securable_kind(&securable_type)?;
    let record = visible(&access, &caller, kind, &full_name).await?;
    Ok(Json(
        direct_grants(&access, &record, query.principal.as_deref()).await?,
    ))
}

#[derive(Deserialize)]
struct UpdateGrants {
    #[serde(default)]
    changes: Vec<GrantChangeInput>,
}

#[derive(Deserialize)]
struct GrantChangeInput {
    principal: Option<String>,
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

/// Reads privilege names as sent (underscores; spaces as SQL spells them are accepted too) and checks they apply.
fn privileges(names: &[String], kind: SecurableKind) -> Result<Vec<String>, Error> {
    let applicable = PrivilegeSet::applicable_to(kind);
    names
        .iter()
        .map(|name| {
            let privilege = Privilege::from_wire_name(name)
                .or_else(|_| Privilege::from_sql(name))
                .map_err(|_| Error::invalid_parameter(format!("unknown privilege `{name}`")))?;
            match applicable.contains(privilege) {
                true => Ok(privilege.wire_name().to_owned()),
                false => Err(Error::invalid_parameter(format!(
                    "privilege {privilege} does not apply to a {}",
                    kind.noun()
                ))),
            }
        })
        .collect()
}

async fn update_grants(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((securable_type, full_name)): Path<(String, String)>,
    ApiJson(body): ApiJson<UpdateGrants>,
) -> Result<Json<Value>, ApiError> {
    let kind = securable_kind(&securable_type)?;
    let record = visible(&access, &caller, kind, &full_name).await?;
    let stored_kind = SecurableKind::from_name(&record.kind).unwrap_or(kind);
    let reference = securable_ref(&record).map_err(Error::internal)?;
    decision_result(may_grant(
        access.caller_principal(&caller),
        &reference,
        &access.snapshot(),
    ))?;
    let mut changes = Vec::with_capacity(body.changes.len());
    for change in body.changes {
        let principal = require(change.principal, "changes[].principal")?;
        changes.push(GrantChange {
            principal_id: principal_by_name(&access, &principal)?.id,
            add: privileges(&change.add, stored_kind)?,
            remove: privileges(&change.remove, stored_kind)?,
        });
    }
    access.store().change_grants(record.id, &changes).await?;
    access.publish().await?;
    Ok(Json(direct_grants(&access, &record, None).await?))
}

async fn get_effective(
    State(access): State<Arc<Access>>,
    Authenticated(caller): Authenticated,
    Path((securable_type, full_name)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<GrantsQuery>,
) -> Result<Json<Value>, ApiError> {
    let kind = securable_kind(&securable_type)?;
    let record = visible(&access, &caller, kind, &full_name).await?;
    let reference = securable_ref(&record).map_err(Error::internal)?;
    // Whose privileges to show: the one asked for, or everyone granted anything on the securable or its ancestors.
    let principals: Vec<Identity> = match &query.principal {
        Some(name) => vec![principal_by_name(&access, name)?],
        None => {
            let mut ids = std::collections::BTreeSet::new();
            let mut next = Some(record.clone());
            while let Some(current) = next {
                ids.extend(
                    access
                        .store()
                        .grants_on(current.id)
                        .await?
                        .into_iter()
                        .map(|grant| grant.principal_id),
                );
                next = match current.parent_id {
                    Some(parent) => access.store().get_securable(parent).await?,
                    None => None,
                };
            }
            let directory = access.directory();
            ids.into_iter()
                .filter_map(|id| directory.get(id).cloned())
                .collect()
        }
    };
    let snapshot = access.snapshot();
    let mut assignments = Vec::new();
    for principal in principals {
        let effective = effective_privileges(
            deputy_catalog::principal_id(principal.id),
            &reference,
            &snapshot,
        )
        .map_err(|error| Error::not_found(error.to_string()))?;
        let privileges: Vec<Value> = effective
            .iter()
            .map(|entry| {
                let mut item = json!({ "privilege": entry.privilege.wire_name() });
                if let Some(from) = &entry.inherited_from {
                    item["inherited_from_type"] = json!(from.kind().name().to_ascii_uppercase());
                    item["inherited_from_name"] = json!(from.full_name());
                }
                item
            })
            .collect();
        if !privileges.is_empty() {
            assignments.push(json!({ "principal": principal.name, "privileges": privileges }));
        }
    }
    Ok(Json(json!({ "privilege_assignments": assignments })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_names_are_checked_segment_by_segment() {
        assert!(validate_full_name("main.sales.orders", SecurableKind::Table).is_ok());
        for bad in [
            "main.sales",
            "main..orders",
            "main.sa/les.orders",
            "main.`x`.orders",
            "main.sаles.orders",
        ] {
            assert!(
                validate_full_name(bad, SecurableKind::Table).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn privileges_must_apply_to_the_kind() {
        assert_eq!(
            privileges(&["USE CATALOG".into()], SecurableKind::Catalog).unwrap(),
            vec!["USE_CATALOG"]
        );
        assert!(privileges(&["EXECUTE".into()], SecurableKind::Table).is_err());
        assert!(privileges(&["FLY".into()], SecurableKind::Table).is_err());
    }

    #[test]
    fn function_properties_arrive_as_a_json_string() {
        assert_eq!(
            function_properties(Some(json!("{\"a\": \"b\"}"))).unwrap(),
            Some(json!({ "a": "b" }))
        );
        assert_eq!(function_properties(Some(json!(""))).unwrap(), None);
        assert_eq!(
            function_properties(Some(json!({ "a": "b" }))).unwrap(),
            Some(json!({ "a": "b" }))
        );
        assert!(function_properties(Some(json!("not json"))).is_err());
        assert!(function_properties(Some(json!("[1]"))).is_err());
    }
}
