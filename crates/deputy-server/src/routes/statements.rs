//! SQL statement execution (`/api/2.0/sql/statements`): the wire side of `deputy_warehouse`.
//!
//! The call waits up to `wait_timeout` for the statement (`0s` answers at once with PENDING), then answers with the
//! result, or with the statement id to poll.

use super::{ApiRouter, Requires};
use crate::error::ApiError;
use crate::extract::{ApiJson, Authenticated};
use axum::Json;
use axum::extract::{Path, State};
use deputy_access::Error;
use deputy_access::ErrorCode;
use deputy_core::ApiScope;
use deputy_sql::StatementParameter;
use deputy_warehouse::Warehouse;
use deputy_warehouse::{INLINE_BYTE_CAP, Limits, Outcome, RenderedResult, StatementEntry};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const EXECUTION: Requires = Requires::Scope(ApiScope::SqlStatementExecution);
pub fn routes(router: ApiRouter) -> ApiRouter {
    router
        .post("/api/2.0/sql/statements", EXECUTION, execute)
        .post("/api/2.0/sql/statements/", EXECUTION, execute)
        .get(
            "/api/2.0/sql/statements/{statement_id}",
            EXECUTION,
            get_statement,
        )
        .get(
            "/api/2.0/sql/statements/{statement_id}/result/chunks/{chunk_index}",
            EXECUTION,
            get_chunk,
        )
        .post(
            "/api/2.0/sql/statements/{statement_id}/cancel",
            EXECUTION,
            cancel,
        )
}

#[derive(Deserialize)]
struct ExecuteRequest {
    statement: Option<String>,
    warehouse_id: Option<String>,
    catalog: Option<String>,
    schema: Option<String>,
    #[serde(default)]
    parameters: Vec<ParameterInput>,
    wait_timeout: Option<String>,
    on_wait_timeout: Option<String>,
    row_limit: Option<i64>,
    byte_limit: Option<i64>,
    disposition: Option<String>,
    format: Option<String>,
}

#[derive(Deserialize)]
struct ParameterInput {
    name: String,
    /// A string on the wire; clients that send a number or a boolean (unitycatalog-ai does) get it read as its
    /// text, which the parameter's type then parses.
    #[serde(default, deserialize_with = "parameter_text")]
    value: Option<String>,
    #[serde(rename = "type")]
    type_name: Option<String>,
}

fn parameter_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    match Option::<Value>::deserialize(deserializer)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(scalar @ (Value::Number(_) | Value::Bool(_))) => Ok(Some(scalar.to_string())),
        Some(_) => Err(serde::de::Error::custom(
            "a parameter value is a string, a number or a boolean",
        )),
    }
}

/// `"0s"` or `"5s"`…`"50s"`, default 10 s, as the API defines.
fn wait_timeout(text: Option<&str>) -> Result<Duration, Error> {
    let Some(text) = text else {
        return Ok(Duration::from_secs(10));
    };
    let seconds = text
        .strip_suffix('s')
        .and_then(|number| number.parse::<u64>().ok())
        .filter(|seconds| *seconds == 0 || (5..=50).contains(seconds))
        .ok_or_else(|| {
            Error::invalid_parameter(format!(
                "`wait_timeout` must be \"0s\" or between \"5s\" and \"50s\", not `{text}`"
            ))
        })?;
    Ok(Duration::from_secs(seconds))
}

async fn execute(
    State(warehouse): State<Arc<Warehouse>>,
    Authenticated(caller): Authenticated,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<Value>, ApiError> {
    let statement = request
        .statement
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| Error::invalid_parameter("`statement` is required"))?;
    let warehouse_id = request
        .warehouse_id
        .ok_or_else(|| Error::invalid_parameter("`warehouse_id` is required"))?;
    let wait = wait_timeout(request.wait_timeout.as_deref())?;
    let cancel_on_timeout = match request
        .on_wait_timeout
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("CONTINUE") => false,
        Some("CANCEL") => true,
        Some(other) => {
            return Err(ApiError(Error::invalid_parameter(format!(
                "`on_wait_timeout` must be CONTINUE or CANCEL, not `{other}`"
            ))));
        }
    };
    if let Some(disposition) = request
        .disposition
        .as_deref()
        .filter(|d| !d.eq_ignore_ascii_case("INLINE"))
    {
        return Err(ApiError(Error::not_implemented(format!(
            "disposition `{disposition}` is not supported; use INLINE"
        ))));
    }
    if let Some(format) = request
        .format
        .as_deref()
        .filter(|f| !f.eq_ignore_ascii_case("JSON_ARRAY"))
    {
        return Err(ApiError(Error::not_implemented(format!(
            "format `{format}` is not supported; use JSON_ARRAY"
        ))));
    }
    let limits = Limits {
        rows: non_negative(request.row_limit, "row_limit")?,
        bytes: non_negative(request.byte_limit, "byte_limit")?.unwrap_or(INLINE_BYTE_CAP),
    };
    let warehouse = &warehouse;
    warehouse.authorize_warehouse(&caller, &warehouse_id, ApiScope::SqlStatementExecution)?;

    let mut session = warehouse.session_of(&caller, caller.scopes);
    session.default_catalog = request.catalog;
    session.default_schema = request.schema;
    let parameters: Vec<StatementParameter> = request
        .parameters
        .into_iter()
        .map(|parameter| StatementParameter {
            name: parameter.name,
            value: parameter.value,
            type_name: parameter.type_name,
        })
        .collect();
    let (id, entry) = warehouse.submit(session, statement, parameters, limits);
    if !entry.wait(wait).await && cancel_on_timeout {
        entry.cancel();
        entry.finished().await;
    }
    Ok(Json(render(&id, &entry)))
}

fn non_negative(value: Option<i64>, field: &str) -> Result<Option<usize>, Error> {
    match value {
        None => Ok(None),
        Some(value) => usize::try_from(value)
            .map(Some)
            .map_err(|_| Error::invalid_parameter(format!("`{field}` must not be negative"))),
    }
}

/// The StatementResponse of a statement, as `GET /api/2.0/sql/statements/{id}` answers it.
pub(crate) fn render(id: &str, entry: &StatementEntry) -> Value {
    let outcome = entry.current();
    let mut body = json!({ "statement_id": id });
    match outcome {
        None => body["status"] = json!({ "state": "RUNNING" }),
        Some(Outcome::Canceled) => body["status"] = json!({ "state": "CANCELED" }),
        Some(Outcome::Failed {
            error_code,
            message,
            sql_state,
        }) => {
            body["status"] = json!({ "state": "FAILED", "error": { "error_code": error_code, "message": message }, "sql_state": sql_state });
        }
        Some(Outcome::Succeeded { result }) => {
            body["status"] = json!({ "state": "SUCCEEDED" });
            body["manifest"] = json!({
                "format": "JSON_ARRAY",
                "schema": { "column_count": result.columns.len(), "columns": result.columns },
                "total_chunk_count": 1,
                "total_row_count": result.rows.len(),
                "total_byte_count": result.byte_count,
                "truncated": result.truncated,
                "chunks": [{ "chunk_index": 0, "row_offset": 0, "row_count": result.rows.len(), "byte_count": result.byte_count }],
            });
            body["result"] = chunk(&result);
        }
    }
    body
}

fn chunk(result: &RenderedResult) -> Value {
    json!({ "chunk_index": 0, "row_offset": 0, "row_count": result.rows.len(), "byte_count": result.byte_count, "data_array": result.rows })
}

async fn get_statement(
    State(warehouse): State<Arc<Warehouse>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = warehouse.owned(&id, caller.identity.id)?;
    Ok(Json(render(&id, &entry)))
}

async fn get_chunk(
    State(warehouse): State<Arc<Warehouse>>,
    Authenticated(caller): Authenticated,
    Path((id, chunk_index)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entry = warehouse.owned(&id, caller.identity.id)?;
    let outcome = entry.current();
    match (outcome, chunk_index.as_str()) {
        (Some(Outcome::Succeeded { result }), "0") => Ok(Json(chunk(&result))),
        (Some(Outcome::Succeeded { .. }), _) => Err(ApiError(Error::not_found(format!(
            "statement `{id}` has no chunk `{chunk_index}`"
        )))),
        _ => Err(ApiError(Error::new(
            ErrorCode::InvalidState,
            format!("statement `{id}` has no result"),
        ))),
    }
}

async fn cancel(
    State(warehouse): State<Arc<Warehouse>>,
    Authenticated(caller): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    warehouse.owned(&id, caller.identity.id)?.cancel();
    Ok(Json(json!({})))
}
