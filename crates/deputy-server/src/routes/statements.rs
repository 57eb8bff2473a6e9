//! SQL statement execution (`/api/2.0/sql/statements`) on the warehouse engine (`deputy-sql`), as the caller.
//!
//! A statement runs in a background task from the moment it is submitted; the call waits up to `wait_timeout` for
//! it (`0s` answers at once with PENDING), then answers with the result, or with the statement id to poll. Statements
//! are visible only to the principal that submitted them: anyone else gets "does not exist". Results are kept in
//! memory for a bounded time and number (see [`Statements`]).

use super::{Access, ApiRouter};
use crate::credentials::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use deputy_authz::{Action, PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_core::{ApiScope, ScopeSet};
use deputy_sql::{CancellationToken, Session, SqlError, StatementParameter, StatementResult};
use deputy_store::PrincipalId;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

const EXECUTION: Access = Access::Scope(ApiScope::SqlStatementExecution);
/// Finished statements are forgotten after this long, as Databricks expires results.
const RESULT_RETENTION: Duration = Duration::from_secs(3600);
/// At most this many statements are remembered; the oldest finished ones go first.
const MAX_REMEMBERED: usize = 10_000;
/// INLINE results are capped at 25 MiB by Databricks; the same cap applies here when `byte_limit` is absent.
const INLINE_BYTE_CAP: usize = 25 * 1024 * 1024;

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

/// What a finished statement left behind.
#[derive(Clone)]
pub(crate) enum Outcome {
    Succeeded {
        result: Arc<RenderedResult>,
    },
    Failed {
        error_code: &'static str,
        message: String,
        sql_state: &'static str,
    },
    Canceled,
}

/// A result already turned into strings, cut to the limits asked for.
pub(crate) struct RenderedResult {
    pub(crate) columns: Vec<Value>,
    pub(crate) rows: Vec<Vec<Option<String>>>,
    byte_count: usize,
    pub(crate) truncated: bool,
}

pub(crate) struct StatementEntry {
    owner: PrincipalId,
    submitted: Instant,
    cancel: CancellationToken,
    outcome: watch::Receiver<Option<Outcome>>,
}

/// The statements of this server, by id.
#[derive(Default)]
pub struct Statements {
    entries: Mutex<HashMap<String, Arc<StatementEntry>>>,
}

impl Statements {
    fn insert(&self, id: String, entry: Arc<StatementEntry>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, entry| {
            entry.submitted.elapsed() < RESULT_RETENTION || entry.outcome.borrow().is_none()
        });
        if entries.len() >= MAX_REMEMBERED {
            let oldest_finished = entries
                .iter()
                .filter(|(_, entry)| entry.outcome.borrow().is_some())
                .min_by_key(|(_, entry)| entry.submitted)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest_finished {
                entries.remove(&oldest);
            }
        }
        entries.insert(id, entry);
    }

    /// The statement, if it exists and belongs to `owner`; someone else's reads as missing.
    pub(crate) fn owned(
        &self,
        id: &str,
        owner: PrincipalId,
    ) -> Result<Arc<StatementEntry>, ApiError> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(id)
            .filter(|entry| entry.owner == owner)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("statement `{id}` does not exist")))
    }
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
    value: Option<String>,
    #[serde(rename = "type")]
    type_name: Option<String>,
}

/// `"0s"` or `"5s"`…`"50s"`, default 10 s, as the API defines.
fn wait_timeout(text: Option<&str>) -> Result<Duration, ApiError> {
    let Some(text) = text else {
        return Ok(Duration::from_secs(10));
    };
    let seconds = text
        .strip_suffix('s')
        .and_then(|number| number.parse::<u64>().ok())
        .filter(|seconds| *seconds == 0 || (5..=50).contains(seconds))
        .ok_or_else(|| {
            ApiError::invalid_parameter(format!(
                "`wait_timeout` must be \"0s\" or between \"5s\" and \"50s\", not `{text}`"
            ))
        })?;
    Ok(Duration::from_secs(seconds))
}

async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(request): ApiJson<ExecuteRequest>,
) -> Result<Json<Value>, ApiError> {
    let statement = request
        .statement
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| ApiError::invalid_parameter("`statement` is required"))?;
    let warehouse_id = request
        .warehouse_id
        .ok_or_else(|| ApiError::invalid_parameter("`warehouse_id` is required"))?;
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
            return Err(ApiError::invalid_parameter(format!(
                "`on_wait_timeout` must be CONTINUE or CANCEL, not `{other}`"
            )));
        }
    };
    if let Some(disposition) = request
        .disposition
        .as_deref()
        .filter(|d| !d.eq_ignore_ascii_case("INLINE"))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("disposition `{disposition}` is not supported; use INLINE"),
        ));
    }
    if let Some(format) = request
        .format
        .as_deref()
        .filter(|f| !f.eq_ignore_ascii_case("JSON_ARRAY"))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_IMPLEMENTED,
            "NOT_IMPLEMENTED",
            format!("format `{format}` is not supported; use JSON_ARRAY"),
        ));
    }
    let limits = Limits {
        rows: non_negative(request.row_limit, "row_limit")?,
        bytes: non_negative(request.byte_limit, "byte_limit")?.unwrap_or(INLINE_BYTE_CAP),
    };
    authorize_warehouse(
        &state,
        &caller,
        &warehouse_id,
        ApiScope::SqlStatementExecution,
    )?;

    let mut session = session_of(&state, &caller, caller.scopes);
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
    let (id, entry) = submit(&state, session, statement, parameters, limits);

    let mut outcome = entry.outcome.clone();
    let finished = tokio::time::timeout(wait, outcome.wait_for(Option::is_some))
        .await
        .is_ok();
    if !finished && cancel_on_timeout {
        entry.cancel.cancel();
        let _ = outcome.wait_for(Option::is_some).await;
    }
    Ok(Json(render(&id, &entry)))
}

#[derive(Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) rows: Option<usize>,
    pub(crate) bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rows: None,
            bytes: INLINE_BYTE_CAP,
        }
    }
}

/// The session a statement of `caller` runs in, deciding with `scopes`: the caller's own token scopes for the
/// statement API, or what another API (Genie) grants its internal statements.
pub(crate) fn session_of(state: &AppState, caller: &Caller, scopes: ScopeSet) -> Session {
    Session {
        principal: state.caller_principal(caller),
        // The token's subject: for an on-behalf-of token the end user, never the agent acting for them.
        user_name: caller.identity.name.clone(),
        groups: caller
            .groups
            .iter()
            .map(|group| group.name.clone())
            .collect(),
        scopes,
        snapshot: state.snapshot(),
        default_catalog: None,
        default_schema: None,
    }
}

/// Registers a statement under a new id, owned by the session's principal, and runs it in a background task. Its id
/// works with every statement route for its owner, whichever API submitted it.
pub(crate) fn submit(
    state: &AppState,
    session: Session,
    statement: String,
    parameters: Vec<StatementParameter>,
    limits: Limits,
) -> (String, Arc<StatementEntry>) {
    let id = uuid::Uuid::new_v4().to_string();
    let (sender, receiver) = watch::channel(None);
    let cancel = CancellationToken::new();
    let entry = Arc::new(StatementEntry {
        owner: deputy_catalog::store_principal_id(session.principal),
        submitted: Instant::now(),
        cancel: cancel.clone(),
        outcome: receiver,
    });
    state.statements().insert(id.clone(), entry.clone());
    let task_state = state.clone();
    tokio::spawn(async move {
        let outcome = run(
            &task_state,
            &session,
            &statement,
            &parameters,
            cancel,
            limits,
        )
        .await;
        let _ = sender.send(Some(outcome));
    });
    (id, entry)
}

fn non_negative(value: Option<i64>, field: &str) -> Result<Option<usize>, ApiError> {
    match value {
        None => Ok(None),
        Some(value) => usize::try_from(value)
            .map(Some)
            .map_err(|_| ApiError::invalid_parameter(format!("`{field}` must not be negative"))),
    }
}

/// The warehouse must exist and be visible to the caller (else it is not found), and the caller needs CAN_USE on it;
/// decided for a token used on the API of `scope` (statements, or Genie running its queries).
pub(crate) fn authorize_warehouse(
    state: &AppState,
    caller: &Caller,
    warehouse_id: &str,
    scope: ApiScope,
) -> Result<(), ApiError> {
    let object = WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, warehouse_id);
    let view = Action::UseWorkspaceObject {
        object: object.clone(),
        level: PermissionLevel::CanView,
    };
    if !state.decide(caller, scope, view).is_allowed() {
        return Err(ApiError::not_found(format!(
            "warehouse `{warehouse_id}` does not exist"
        )));
    }
    state.authorize(
        caller,
        scope,
        Action::UseWorkspaceObject {
            object,
            level: PermissionLevel::CanUse,
        },
    )
}

async fn run(
    state: &AppState,
    session: &Session,
    statement: &str,
    parameters: &[StatementParameter],
    cancel: CancellationToken,
    limits: Limits,
) -> Outcome {
    let result = state
        .sql()
        .execute(session, statement, parameters, cancel)
        .await;
    if let Ok(result) = &result
        && !result.changes.is_empty()
        && let Err(error) = state.changes_committed().await
    {
        return Outcome::Failed {
            error_code: "INTERNAL_ERROR",
            message: error.message,
            sql_state: "XX000",
        };
    }
    match result {
        Ok(result) => match rendered(&result, limits) {
            Ok(rendered) => Outcome::Succeeded {
                result: Arc::new(rendered),
            },
            Err(error) => failed(&error),
        },
        Err(SqlError::Canceled) => Outcome::Canceled,
        Err(error) => failed(&error),
    }
}

fn failed(error: &SqlError) -> Outcome {
    if matches!(error, SqlError::Internal(_)) {
        tracing::error!(%error, "statement failed inside the engine");
    }
    Outcome::Failed {
        error_code: error.error_code(),
        message: error.to_string(),
        sql_state: error.sql_state(),
    }
}

fn rendered(result: &StatementResult, limits: Limits) -> Result<RenderedResult, SqlError> {
    let columns = result
        .columns()
        .into_iter()
        .map(|column| json!({ "name": column.name, "position": column.position, "type_name": column.type_name, "type_text": column.type_text }))
        .collect();
    let mut rows = result.data_array()?;
    let mut truncated = false;
    if let Some(limit) = limits.rows
        && rows.len() > limit
    {
        rows.truncate(limit);
        truncated = true;
    }
    let mut byte_count = 0;
    let mut kept = 0;
    for row in &rows {
        let size: usize = row
            .iter()
            .map(|cell| cell.as_ref().map_or(4, String::len))
            .sum();
        if byte_count + size > limits.bytes {
            truncated = true;
            break;
        }
        byte_count += size;
        kept += 1;
    }
    rows.truncate(kept);
    Ok(RenderedResult {
        columns,
        rows,
        byte_count,
        truncated,
    })
}

impl StatementEntry {
    /// Waits for the statement to finish.
    pub(crate) async fn finished(&self) -> Outcome {
        let mut outcome = self.outcome.clone();
        match outcome.wait_for(Option::is_some).await {
            Ok(finished) => finished.clone().unwrap_or(Outcome::Canceled),
            // The task ended without an outcome, which only a panic does: the statement is lost.
            Err(_) => Outcome::Failed {
                error_code: "INTERNAL_ERROR",
                message: "the statement stopped unexpectedly".into(),
                sql_state: "XX000",
            },
        }
    }
}

/// The StatementResponse of a statement, as `GET /api/2.0/sql/statements/{id}` answers it.
pub(crate) fn render(id: &str, entry: &StatementEntry) -> Value {
    let outcome = entry.outcome.borrow().clone();
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
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.statements().owned(&id, caller.identity.id)?;
    Ok(Json(render(&id, &entry)))
}

async fn get_chunk(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, chunk_index)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let entry = state.statements().owned(&id, caller.identity.id)?;
    let outcome = entry.outcome.borrow().clone();
    match (outcome, chunk_index.as_str()) {
        (Some(Outcome::Succeeded { result }), "0") => Ok(Json(chunk(&result))),
        (Some(Outcome::Succeeded { .. }), _) => Err(ApiError::not_found(format!(
            "statement `{id}` has no chunk `{chunk_index}`"
        ))),
        _ => Err(ApiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "INVALID_STATE",
            format!("statement `{id}` has no result"),
        )),
    }
}

async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .statements()
        .owned(&id, caller.identity.id)?
        .cancel
        .cancel();
    Ok(Json(json!({})))
}
