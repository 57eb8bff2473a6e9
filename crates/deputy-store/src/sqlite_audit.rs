//! The SQLite implementation of the audit store: appends grouped into one commit per batch (see
//! `audit::AuditGroupCommit`).

use crate::audit::{AuditEvent, AuditStore, PendingAppend};
use crate::sqlite::SqliteStore;
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::{Row, SqlitePool};

fn poisoned<T>(_: T) -> StoreError {
    StoreError::AuditWrite("the audit queue's lock is poisoned".into())
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        let group = self.audit_group();
        let (durable, receipt) = tokio::sync::oneshot::channel();
        group.waiting.lock().map_err(poisoned)?.push(PendingAppend {
            events: events.to_vec(),
            durable,
        });
        // Whoever gets the turn writes everything waiting: its own append, unless an earlier turn took it along.
        let turn = group.turn.clone().lock_owned().await;
        let batch = std::mem::take(&mut *group.waiting.lock().map_err(poisoned)?);
        if !batch.is_empty() {
            let pool = self.pool().clone();
            // A task of its own holds the turn through the commit, so that a request dropped midway (its
            // client went away) cannot leave the other appends in its batch unwritten or unanswered.
            tokio::spawn(async move {
                let result = write_events(&pool, &batch)
                    .await
                    .map_err(|error| error.to_string());
                for append in batch {
                    // The appender may have gone away; its events are written all the same.
                    let _ = append.durable.send(result.clone());
                }
                drop(turn);
            });
        }
        match receipt.await {
            Ok(result) => result.map_err(StoreError::AuditWrite),
            Err(_) => Err(StoreError::AuditWrite(
                "the audit commit ended without an answer".into(),
            )),
        }
    }

    async fn audit_events_after(&self, after: i64, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, request_id, user_name, actors, endpoint, api, scope, securable, decision, \
             reason FROM audit_events WHERE seq > ? ORDER BY seq LIMIT ?",
        )
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let actors: String = row.try_get("actors")?;
                let decision: String = row.try_get("decision")?;
                Ok(AuditEvent {
                    seq: row.try_get("seq")?,
                    time_ms: row.try_get("time_ms")?,
                    request_id: row.try_get("request_id")?,
                    user_name: row.try_get("user_name")?,
                    actors: serde_json::from_str(&actors)
                        .map_err(|error| StoreError::Corrupt(error.to_string()))?,
                    endpoint: row.try_get("endpoint")?,
                    api: row.try_get("api")?,
                    scope: row.try_get("scope")?,
                    securable: row.try_get("securable")?,
                    allowed: decision == "ALLOW",
                    reason: row.try_get("reason")?,
                })
            })
            .collect()
    }
}

/// Writes the events of a batch of appends in one transaction: one commit, one fsync.
async fn write_events(pool: &SqlitePool, batch: &[PendingAppend]) -> StoreResult<()> {
    let mut transaction = pool.begin().await?;
    for event in batch.iter().flat_map(|append| &append.events) {
        let actors = serde_json::to_string(&event.actors)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        sqlx::query(
            "INSERT INTO audit_events (time_ms, request_id, user_name, actors, endpoint, api, scope, \
             securable, decision, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(event.time_ms)
        .bind(&event.request_id)
        .bind(&event.user_name)
        .bind(actors)
        .bind(&event.endpoint)
        .bind(&event.api)
        .bind(&event.scope)
        .bind(&event.securable)
        .bind(if event.allowed { "ALLOW" } else { "DENY" })
        .bind(&event.reason)
        .execute(&mut *transaction)
        .await?;
    }
    transaction.commit().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(request_id: &str, allowed: bool) -> AuditEvent {
        AuditEvent {
            seq: 0,
            time_ms: 5,
            request_id: request_id.into(),
            user_name: "alice".into(),
            actors: vec!["agent-sp".into(), "outer-agent".into()],
            endpoint: Some("rag".into()),
            api: "POST /api/2.0/vector-search/indexes/{name}/query".into(),
            scope: Some("vectorsearch.vector-search-indexes".into()),
            securable: Some("main.docs.index".into()),
            allowed,
            reason: "SELECT granted to alice".into(),
        }
    }

    #[tokio::test]
    async fn events_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            store
                .append_audit_events(&[event("r1", true)])
                .await
                .unwrap();
            store
                .append_audit_events(&[event("r2", false), event("r2", true)])
                .await
                .unwrap();
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let all = store.audit_events_after(0, 10).await.unwrap();
        let ids: Vec<_> = all
            .iter()
            .map(|e| (e.request_id.as_str(), e.allowed))
            .collect();
        assert_eq!(ids, [("r1", true), ("r2", false), ("r2", true)]);
        assert_eq!(all[0].actors, ["agent-sp", "outer-agent"]);
        let later = store.audit_events_after(all[0].seq, 1).await.unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].seq, all[1].seq);
    }

    /// Appends racing each other share commits, yet each is acknowledged only once durable, none is lost, and
    /// the events of one append stay together and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_group_committed_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metadata.db");
        {
            let store = SqliteStore::open(&path).await.unwrap();
            let appends: Vec<_> = (0..64)
                .map(|n| {
                    let store = store.clone();
                    tokio::spawn(async move {
                        let request = format!("r{n}");
                        store
                            .append_audit_events(&[event(&request, false), event(&request, true)])
                            .await
                    })
                })
                .collect();
            for append in appends {
                append.await.unwrap().unwrap();
            }
        }
        let store = SqliteStore::open(&path).await.unwrap();
        let all = store.audit_events_after(0, 1_000).await.unwrap();
        assert_eq!(all.len(), 128);
        for pair in all.chunks(2) {
            assert_eq!(
                pair[0].request_id, pair[1].request_id,
                "an append was split"
            );
            assert!(
                !pair[0].allowed && pair[1].allowed,
                "an append's events were reordered"
            );
        }
        let mut requests: Vec<&str> = all.iter().map(|e| e.request_id.as_str()).collect();
        requests.dedup();
        requests.sort_unstable();
        requests.dedup();
        assert_eq!(requests.len(), 64);
    }
}
