//! The append-only audit log: who (the end user), through which agents (the `act` chain), did what, and whether it
//! was allowed and why.

use crate::{EpochMillis, StoreResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// One audited decision. `seq` is assigned by the store and orders events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    #[serde(default)]
    pub seq: i64,
    pub time_ms: EpochMillis,
    pub request_id: String,
    /// The end user (the token's `sub`).
    pub user_name: String,
    /// The actors between the user and the request, outermost first; empty when the user acted directly.
    pub actors: Vec<String>,
    /// The serving endpoint the request ran under, if any.
    pub endpoint: Option<String>,
    /// The API: an HTTP method and route, or an internal step such as `serving.obo-exchange`.
    pub api: String,
    pub scope: Option<String>,
    pub securable: Option<String>,
    pub allowed: bool,
    pub reason: String,
}

/// Which events a read returns: those matching every condition set, in `seq` order (`descending`: newest first), at
/// most `limit`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    pub user_name: Option<String>,
    pub endpoint: Option<String>,
    pub allowed: Option<bool>,
    pub request_id: Option<String>,
    /// Events at or after this time.
    pub since_ms: Option<EpochMillis>,
    /// Events before this time.
    pub until_ms: Option<EpochMillis>,
    /// A substring of the API, securable, reason, endpoint or one of the actors, matched ignoring ASCII case.
    pub contains: Option<String>,
    /// Events with `seq > after`.
    pub after: Option<i64>,
    /// Events with `seq < before`.
    pub before: Option<i64>,
    pub descending: bool,
    pub limit: u32,
}

#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// Appends events atomically and durably: when this returns, they survive a crash.
    async fn append_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()>;
    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>>;
}

/// Group commit for audit appends. Every on-behalf-of request appends events and waits until they are durable, and
/// with `synchronous = FULL` each commit costs an fsync; appends that arrive while a commit is in flight are written
/// together by the next one, so concurrent requests share fsyncs instead of queueing for one each. An append is
/// still acknowledged only after the commit that holds it, and a failed commit fails every append in it.
#[derive(Default)]
pub(crate) struct AuditGroupCommit {
    pub(crate) waiting: std::sync::Mutex<Vec<PendingAppend>>,
    /// Held for the whole of one commit: the next commit starts when it is released.
    pub(crate) turn: std::sync::Arc<tokio::sync::Mutex<()>>,
}

pub(crate) struct PendingAppend {
    pub(crate) events: Vec<AuditEvent>,
    pub(crate) durable: tokio::sync::oneshot::Sender<Result<(), String>>,
}
