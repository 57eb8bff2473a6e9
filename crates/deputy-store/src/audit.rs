//! The audit log: who (the end user), through which agents (the `act` chain), did what, and whether it was allowed
//! and why. Append-only: events are never changed, and only deleted once older than the retention period an admin
//! set ([`AuditStore::delete_audit_events_before`]).

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
    /// Deletes the events older than `cutoff` (`time_ms < cutoff`) and returns how many it deleted. It works through
    /// them in chunks of bounded size, each deleted by its own short statement, so that purging millions of events
    /// never holds one long transaction. Deleting by time is idempotent: two processes purging at once (replicas on
    /// one database) delete each event once between them, and never a newer one.
    async fn delete_audit_events_before(&self, cutoff: EpochMillis) -> StoreResult<u64>;
}

/// Group commit for audit appends. Every on-behalf-of request appends events and waits until they are durable, and
/// each commit costs an fsync; so one writer task commits, and everything that arrives while it commits goes into its
/// next commit together. An appender waits for the commit that holds its events and nothing else (no turn to take,
/// no commit of others' events to sit through); it is acknowledged only after that commit, and a failed commit fails
/// every append in it. The writer is its own task, so an appender that goes away (its client hung up) leaves its
/// events queued, and they are written all the same.
#[derive(Default)]
pub(crate) struct AuditGroupCommit {
    queue: std::sync::Mutex<Option<tokio::sync::mpsc::UnboundedSender<PendingAppend>>>,
}

pub(crate) struct PendingAppend {
    events: Vec<AuditEvent>,
    durable: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// How a store commits one batch of appended events, atomically.
#[async_trait]
pub(crate) trait AuditBatchWriter: Send + 'static {
    async fn write_batch(&mut self, events: &[&AuditEvent]) -> StoreResult<()>;
}

impl AuditGroupCommit {
    /// Queues `events` for the writer (started with `writer` when there is none, or when the runtime that ran the
    /// last one has gone) and waits until the commit that holds them is durable.
    pub(crate) async fn append<W: AuditBatchWriter>(
        &self,
        events: &[AuditEvent],
        writer: impl FnOnce() -> W,
    ) -> StoreResult<()> {
        let (durable, receipt) = tokio::sync::oneshot::channel();
        let append = PendingAppend {
            events: events.to_vec(),
            durable,
        };
        {
            let mut queue = self.queue.lock().map_err(|_| {
                crate::StoreError::AuditWrite("the audit queue's lock is poisoned".into())
            })?;
            let append = match queue.as_ref() {
                Some(sender) => sender.send(append).err().map(|unsent| unsent.0),
                None => Some(append),
            };
            if let Some(append) = append {
                let (sender, appends) = tokio::sync::mpsc::unbounded_channel();
                tokio::spawn(commit_in_groups(writer(), appends));
                // The receiver was just made and lives in the task: the send cannot fail.
                let _ = sender.send(append);
                *queue = Some(sender);
            }
        }
        match receipt.await {
            Ok(result) => result.map_err(crate::StoreError::AuditWrite),
            Err(_) => Err(crate::StoreError::AuditWrite(
                "the audit commit ended without an answer".into(),
            )),
        }
    }
}

/// The writer: takes the first waiting append, everything queued behind it, commits them as one batch, answers each.
async fn commit_in_groups<W: AuditBatchWriter>(
    mut writer: W,
    mut appends: tokio::sync::mpsc::UnboundedReceiver<PendingAppend>,
) {
    while let Some(first) = appends.recv().await {
        let mut batch = vec![first];
        while let Ok(next) = appends.try_recv() {
            batch.push(next);
        }
        let events: Vec<&AuditEvent> = batch.iter().flat_map(|append| &append.events).collect();
        let result = writer
            .write_batch(&events)
            .await
            .map_err(|error| error.to_string());
        for append in batch {
            // The appender may have gone away; its events are written all the same.
            let _ = append.durable.send(result.clone());
        }
    }
}
