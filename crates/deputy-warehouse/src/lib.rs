//! SQL warehouses' statement runtime over the SQL engine (`deputy-sql`): sessions built for a caller, statements
//! submitted to background tasks, their bounded results and their owners.
//!
//! A statement runs in a background task from the moment it is submitted; whoever submitted it may wait for it, poll
//! it by id, read its result or cancel it. Results are kept in memory for a bounded time and number.
//!
//! **Invariants**
//! - A statement is visible only to the principal that submitted it: anyone else gets "does not exist".
//! - A session decides as the token's subject (for an on-behalf-of token, the end user, never the agent), so the
//!   user's grants, row filters and column masks bound every statement.
//! - A statement that changed the catalog publishes the change before its result is visible.

mod scan;

use deputy_access::{Access, Caller, Error};
use deputy_authz::{PermissionLevel, WorkspaceObjectKind, WorkspaceObjectRef};
use deputy_core::{ApiScope, ScopeSet};
use deputy_sql::{
    CancellationToken, Session, SqlEngine, SqlError, StatementParameter, StatementResult,
};
use deputy_store::PrincipalId;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Finished statements are forgotten after this long, as Databricks expires results.
const RESULT_RETENTION: Duration = Duration::from_secs(3600);
/// At most this many statements are remembered; the oldest finished ones go first.
const MAX_REMEMBERED: usize = 10_000;
/// INLINE results are capped at 25 MiB by Databricks; the same cap applies when no byte limit is asked for.
pub const INLINE_BYTE_CAP: usize = 25 * 1024 * 1024;

/// What a finished statement left behind.
#[derive(Clone)]
pub enum Outcome {
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
pub struct RenderedResult {
    /// Each column as the statement API describes it (`name`, `position`, `type_name`, `type_text`).
    pub columns: Vec<Value>,
    pub rows: Vec<Vec<Option<String>>>,
    pub byte_count: usize,
    pub truncated: bool,
}

/// One submitted statement.
pub struct StatementEntry {
    owner: PrincipalId,
    submitted: Instant,
    cancel: CancellationToken,
    outcome: watch::Receiver<Option<Outcome>>,
}

impl StatementEntry {
    /// The outcome so far: `None` while the statement runs.
    pub fn current(&self) -> Option<Outcome> {
        self.outcome.borrow().clone()
    }

    /// Waits for the statement to finish.
    pub async fn finished(&self) -> Outcome {
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

    /// Waits up to `wait` for the statement to finish; returns whether it did.
    pub async fn wait(&self, wait: Duration) -> bool {
        let mut outcome = self.outcome.clone();
        tokio::time::timeout(wait, outcome.wait_for(Option::is_some))
            .await
            .is_ok()
    }

    /// Asks the statement to stop; a statement that already finished keeps its outcome.
    pub fn cancel(&self) {
        self.cancel.cancel();
    }
}

/// How much of a result is kept.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub rows: Option<usize>,
    pub bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            rows: None,
            bytes: INLINE_BYTE_CAP,
        }
    }
}

/// The warehouses' runtime: the engine every warehouse runs statements on, and the statements of this server.
pub struct Warehouse {
    access: Arc<Access>,
    sql: SqlEngine,
    statements: Mutex<HashMap<String, Arc<StatementEntry>>>,
}

impl Warehouse {
    pub fn new(access: Arc<Access>, sql: SqlEngine) -> Warehouse {
        Warehouse {
            access,
            sql,
            statements: Mutex::default(),
        }
    }

    /// The warehouse must exist and be visible to the caller (else it is not found), and the caller needs CAN_USE on
    /// it; decided for a token used on the API of `scope` (statements, or Genie running its queries).
    pub fn authorize_warehouse(
        &self,
        caller: &Caller,
        warehouse_id: &str,
        scope: ApiScope,
    ) -> Result<(), Error> {
        self.access.authorize_workspace_object(
            caller,
            scope,
            WorkspaceObjectRef::new(WorkspaceObjectKind::Warehouse, warehouse_id),
            PermissionLevel::CanUse,
            &format!("warehouse `{warehouse_id}`"),
        )
    }

    /// The session a statement of `caller` runs in, deciding with `scopes`: the caller's own token scopes for the
    /// statement API, or what another API (Genie) grants its internal statements.
    pub fn session_of(&self, caller: &Caller, scopes: ScopeSet) -> Session {
        Session {
            principal: self.access.caller_principal(caller),
            // The token's subject: for an on-behalf-of token the end user, never the agent acting for them.
            user_name: caller.identity.name.clone(),
            groups: caller
                .groups
                .iter()
                .map(|group| group.name.clone())
                .collect(),
            scopes,
            snapshot: self.access.snapshot(),
            default_catalog: None,
            default_schema: None,
        }
    }

    /// Registers a statement under a new id, owned by the session's principal, and runs it in a background task. Its
    /// id works with every statement route for its owner, whichever API submitted it.
    pub fn submit(
        self: &Arc<Self>,
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
        self.remember(id.clone(), entry.clone());
        let warehouse = self.clone();
        tokio::spawn(async move {
            let outcome = warehouse
                .run(&session, &statement, &parameters, cancel, limits)
                .await;
            let _ = sender.send(Some(outcome));
        });
        (id, entry)
    }

    /// The statement, if it exists and belongs to `owner`; someone else's reads as missing.
    pub fn owned(&self, id: &str, owner: PrincipalId) -> Result<Arc<StatementEntry>, Error> {
        let entries = self
            .statements
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(id)
            .filter(|entry| entry.owner == owner)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("statement `{id}` does not exist")))
    }

    fn remember(&self, id: String, entry: Arc<StatementEntry>) {
        let mut entries = self
            .statements
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

    async fn run(
        &self,
        session: &Session,
        statement: &str,
        parameters: &[StatementParameter],
        cancel: CancellationToken,
        limits: Limits,
    ) -> Outcome {
        let result = self
            .sql
            .execute(session, statement, parameters, cancel)
            .await;
        if let Ok(result) = &result
            && !result.changes.is_empty()
            && let Err(error) = self.access.publish().await
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
}

fn failed(error: &SqlError) -> Outcome {
    // An internal error's text is for the operator's log: it can name objects the caller may not see (the policy
    // function of a table) and the cause of a broken stored definition.
    let message = if matches!(error, SqlError::Internal(_)) {
        tracing::error!(%error, "statement failed inside the engine");
        "[INTERNAL_ERROR] the statement failed inside the engine; the server log has the details"
            .to_owned()
    } else {
        error.to_string()
    };
    Outcome::Failed {
        error_code: error.error_code(),
        message,
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
