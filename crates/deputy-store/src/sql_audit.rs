//! The audit store on SQL: appends grouped into one commit per batch (see `audit::AuditGroupCommit`).

use crate::audit::{AuditBatchWriter, AuditEvent, AuditFilter, AuditStore};
use crate::sql_store::{Dialect, SqlStore, Statement};
use crate::{EpochMillis, StoreError, StoreResult};
use async_trait::async_trait;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Connection, Row};

#[async_trait]
impl AuditStore for SqlStore {
    async fn append_audit_events(&self, events: &[AuditEvent]) -> StoreResult<()> {
        if events.is_empty() {
            return Ok(());
        }
        self.audit_group()
            .append(events, || AuditWriter {
                pool: self.pool().clone(),
                connection: None,
            })
            .await
    }

    async fn audit_events(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditEvent>> {
        let rows = select_events(filter, self.dialect())?
            .query()
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(event_of).collect()
    }

    async fn delete_audit_events_before(&self, cutoff: EpochMillis) -> StoreResult<u64> {
        delete_events_before(self.pool(), cutoff, PURGE_ROWS_PER_STATEMENT).await
    }
}

/// Events deleted per statement by a purge: each statement is a short transaction of its own.
const PURGE_ROWS_PER_STATEMENT: i64 = 10_000;

/// Deletes the events with `time_ms < cutoff`, at most `chunk` per statement, oldest `seq` first. Each turn first
/// reads where the next `chunk` such events lie (a read, which on SQLite does not hold the write lock while it scans:
/// `time_ms` has no index, so the last turn reads every event kept), then deletes the expired events of that `seq`
/// range by the primary key. A range holds no expired event beyond the ones counted, so the purge is done once a read
/// counts fewer than `chunk`. Another process purging at once deletes some of a range first; the other's DELETE then
/// finds them gone, and each counts only what it deleted.
async fn delete_events_before(pool: &AnyPool, cutoff: EpochMillis, chunk: i64) -> StoreResult<u64> {
    let mut deleted = 0;
    loop {
        let range = sqlx::query(
            "SELECT MIN(seq) AS first, MAX(seq) AS last, COUNT(*) AS expired FROM \
             (SELECT seq FROM audit_events WHERE time_ms < $1 ORDER BY seq LIMIT $2) AS chunk",
        )
        .bind(cutoff)
        .bind(chunk)
        .fetch_one(pool)
        .await?;
        let expired: i64 = range.try_get("expired")?;
        let (Some(first), Some(last)) = (
            range.try_get::<Option<i64>, _>("first")?,
            range.try_get::<Option<i64>, _>("last")?,
        ) else {
            return Ok(deleted);
        };
        deleted +=
            sqlx::query("DELETE FROM audit_events WHERE seq >= $1 AND seq <= $2 AND time_ms < $3")
                .bind(first)
                .bind(last)
                .bind(cutoff)
                .execute(pool)
                .await?
                .rows_affected();
        if expired < chunk {
            return Ok(deleted);
        }
    }
}

/// The statement of a filtered read. Only the conditions asked for are in it, so that the database can use the index
/// that selects (a user's events, a request's); every value is a bound parameter, never SQL text.
fn select_events(filter: &AuditFilter, dialect: Dialect) -> StoreResult<Statement> {
    let mut query = Statement::new(
        "SELECT seq, time_ms, request_id, user_name, actors, endpoint, api, scope, securable, decision, reason \
         FROM audit_events WHERE 1 = 1",
    );
    if let Some(user_name) = &filter.user_name {
        query.push(" AND user_name = ").bind(user_name.clone())?;
    }
    if let Some(endpoint) = &filter.endpoint {
        query.push(" AND endpoint = ").bind(endpoint.clone())?;
    }
    if let Some(allowed) = filter.allowed {
        query
            .push(" AND decision = ")
            .bind(if allowed { "ALLOW" } else { "DENY" })?;
    }
    if let Some(request_id) = &filter.request_id {
        query.push(" AND request_id = ").bind(request_id.clone())?;
    }
    if let Some(since) = filter.since_ms {
        query.push(" AND time_ms >= ").bind(since)?;
    }
    if let Some(until) = filter.until_ms {
        query.push(" AND time_ms < ").bind(until)?;
    }
    if let Some(after) = filter.after {
        query.push(" AND seq > ").bind(after)?;
    }
    if let Some(before) = filter.before {
        query.push(" AND seq < ").bind(before)?;
    }
    if let Some(needle) = &filter.contains {
        // Both sides go through the database's lower() (ASCII only on SQLite), so the match is consistent.
        let position = match dialect {
            Dialect::Sqlite => "instr",
            Dialect::Postgres => "strpos",
        };
        query.push(" AND (");
        for column in ["api", "securable", "reason", "endpoint"] {
            query
                .push(&format!("{position}(lower({column}), lower("))
                .bind(needle.clone())?
                .push(")) > 0 OR ");
        }
        // Actor by actor, so that a needle cannot match the JSON punctuation between them.
        query.push(match dialect {
            Dialect::Sqlite => {
                "EXISTS (SELECT 1 FROM json_each(actors) WHERE instr(lower(value), lower("
            }
            Dialect::Postgres => {
                "EXISTS (SELECT 1 FROM jsonb_array_elements_text(actors::jsonb) AS actor(value) \
                 WHERE strpos(lower(actor.value), lower("
            }
        });
        query.bind(needle.clone())?.push(")) > 0))");
    }
    query.push(match filter.descending {
        true => " ORDER BY seq DESC LIMIT ",
        false => " ORDER BY seq LIMIT ",
    });
    query.bind(i64::from(filter.limit))?;
    Ok(query)
}

fn event_of(row: &AnyRow) -> StoreResult<AuditEvent> {
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
}

/// Writes the events of a batch of appends in one transaction: one commit, one fsync.
/// Rows per INSERT statement: ten bound values each, well under either database's limit on a statement's parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// The audit writer keeps one connection of its own: its page cache stays warm from commit to commit, where a
/// connection taken from the pool each time would first read back the pages another connection last wrote.
struct AuditWriter {
    pool: AnyPool,
    connection: Option<AnyConnection>,
}

#[async_trait]
impl AuditBatchWriter for AuditWriter {
    async fn write_batch(&mut self, events: &[&AuditEvent]) -> StoreResult<()> {
        let connection = match &mut self.connection {
            Some(connection) => connection,
            None => self.connection.insert(self.pool.acquire().await?.detach()),
        };
        let written = write_events(connection, events).await;
        if written.is_err() {
            // Whatever state the failure left the connection in, the next batch starts on a fresh one.
            self.connection = None;
        }
        written
    }
}

/// Writes a batch in one commit: one statement (atomic by itself) when it fits, which is one round trip to the
/// database's thread instead of a transaction's four, else a transaction of several.
async fn write_events(connection: &mut AnyConnection, events: &[&AuditEvent]) -> StoreResult<()> {
    if events.len() <= ROWS_PER_STATEMENT {
        insert_events(events)?
            .query()
            .execute(&mut *connection)
            .await?;
        return Ok(());
    }
    let mut transaction = connection.begin().await?;
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        insert_events(chunk)?
            .query()
            .execute(&mut *transaction)
            .await?;
    }
    transaction.commit().await?;
    Ok(())
}

fn insert_events(events: &[&AuditEvent]) -> StoreResult<Statement> {
    let mut query = Statement::new(
        "INSERT INTO audit_events (time_ms, request_id, user_name, actors, endpoint, api, scope, securable, \
         decision, reason) VALUES ",
    );
    for (index, event) in events.iter().enumerate() {
        let actors = serde_json::to_string(&event.actors)
            .map_err(|error| StoreError::Corrupt(error.to_string()))?;
        query.push(if index == 0 { "(" } else { ", (" });
        query.bind(event.time_ms)?.push(", ");
        query.bind(event.request_id.clone())?.push(", ");
        query.bind(event.user_name.clone())?.push(", ");
        query.bind(actors)?.push(", ");
        query.bind(event.endpoint.clone())?.push(", ");
        query.bind(event.api.clone())?.push(", ");
        query.bind(event.scope.clone())?.push(", ");
        query.bind(event.securable.clone())?.push(", ");
        query
            .bind(if event.allowed { "ALLOW" } else { "DENY" })?
            .push(", ");
        query.bind(event.reason.clone())?.push(")");
    }
    Ok(query)
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

    fn after(seq: i64, limit: u32) -> AuditFilter {
        AuditFilter {
            after: Some(seq),
            limit,
            ..AuditFilter::default()
        }
    }

    #[tokio::test]
    async fn events_survive_reopening_in_order() {
        let temporary = crate::testing::TemporaryStore::new();
        {
            let store = temporary.open().await.unwrap();
            store
                .append_audit_events(&[event("r1", true)])
                .await
                .unwrap();
            store
                .append_audit_events(&[event("r2", false), event("r2", true)])
                .await
                .unwrap();
        }
        let store = temporary.open().await.unwrap();
        let all = store.audit_events(&after(0, 10)).await.unwrap();
        let ids: Vec<_> = all
            .iter()
            .map(|e| (e.request_id.as_str(), e.allowed))
            .collect();
        assert_eq!(ids, [("r1", true), ("r2", false), ("r2", true)]);
        assert_eq!(all[0].actors, ["agent-sp", "outer-agent"]);
        let later = store.audit_events(&after(all[0].seq, 1)).await.unwrap();
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].seq, all[1].seq);
    }

    /// A batch larger than one statement takes is written in one transaction of several, all of it and in order.
    #[tokio::test]
    async fn a_batch_of_several_statements_is_written_whole() {
        let (_temporary, store) = crate::test_support::open_temporary().await;
        let events: Vec<_> = (0..ROWS_PER_STATEMENT * 2 + 7)
            .map(|n| event(&format!("r{n}"), n % 2 == 0))
            .collect();
        store.append_audit_events(&events).await.unwrap();
        let all = store
            .audit_events(&after(0, events.len() as u32 + 1))
            .await
            .unwrap();
        let ids: Vec<_> = all.iter().map(|e| e.request_id.clone()).collect();
        let expected: Vec<_> = events.iter().map(|e| e.request_id.clone()).collect();
        assert_eq!(ids, expected);
    }

    /// Appends racing each other share commits, yet each is acknowledged only once durable, none is lost, and
    /// the events of one append stay together and in order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_are_group_committed_without_loss() {
        let temporary = crate::testing::TemporaryStore::new();
        {
            let store = temporary.open().await.unwrap();
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
        let store = temporary.open().await.unwrap();
        let all = store.audit_events(&after(0, 1_000)).await.unwrap();
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

    /// A user's or a request's events are found through an index, not by reading the whole log. (SQLite's plan:
    /// PostgreSQL 15 cannot explain a statement whose parameters are not bound.)
    #[tokio::test]
    async fn user_and_request_lookups_use_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqlStore::open_sqlite(&dir.path().join("metadata.db"))
            .await
            .unwrap();
        for filter in [
            AuditFilter {
                user_name: Some("alice".into()),
                descending: true,
                ..AuditFilter::default()
            },
            AuditFilter {
                request_id: Some("r1".into()),
                ..AuditFilter::default()
            },
        ] {
            let statement = select_events(&filter, Dialect::Sqlite).unwrap();
            let sql = statement.sql();
            let plan: Vec<String> =
                sqlx::query(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(store.pool())
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get("detail"))
                    .collect();
            assert!(
                plan.iter().any(|step| step.contains("USING INDEX")),
                "{filter:?}: {plan:?}"
            );
        }
    }

    fn at(time_ms: i64, request_id: &str) -> AuditEvent {
        AuditEvent {
            time_ms,
            ..event(request_id, true)
        }
    }

    async fn request_ids(store: &SqlStore) -> Vec<String> {
        let all = store.audit_events(&after(0, 1_000)).await.unwrap();
        all.into_iter().map(|event| event.request_id).collect()
    }

    /// A purge deletes exactly the events older than the cutoff, chunk by chunk (here several chunks of 3, one of
    /// them mixing old and new events, as a clock set back would), counts them, and deletes nothing more when run
    /// again.
    #[tokio::test]
    async fn a_purge_deletes_the_events_before_the_cutoff_in_chunks() {
        let (_temporary, store) = crate::test_support::open_temporary().await;
        let times = [10, 20, 1_000, 30, 40, 50, 60, 70, 999, 2_000, 80, 1_000];
        let events: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(n, time)| at(*time, &format!("r{n}-{time}")))
            .collect();
        store.append_audit_events(&events).await.unwrap();
        let kept: Vec<String> = events
            .iter()
            .filter(|event| event.time_ms >= 1_000)
            .map(|event| event.request_id.clone())
            .collect();

        let deleted = delete_events_before(store.pool(), 1_000, 3).await.unwrap();
        assert_eq!(deleted, 9);
        assert_eq!(request_ids(&store).await, kept);
        assert_eq!(store.delete_audit_events_before(1_000).await.unwrap(), 0);
        assert_eq!(request_ids(&store).await, kept);
        assert_eq!(store.delete_audit_events_before(1_001).await.unwrap(), 2);
        assert_eq!(request_ids(&store).await, ["r9-2000"]);
    }

    /// Two processes on one database (replicas) purging at once delete every old event once between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_purges_delete_each_event_once() {
        let (temporary, store) = crate::test_support::open_temporary().await;
        let replica = temporary.open().await.unwrap();
        let events: Vec<_> = (0..1_000)
            .map(|n| at(if n % 10 == 9 { 5_000 } else { n }, &format!("r{n}")))
            .collect();
        store.append_audit_events(&events).await.unwrap();
        let purges = [store.clone(), replica].map(|store| {
            tokio::spawn(async move { delete_events_before(store.pool(), 5_000, 50).await })
        });
        let mut deleted = 0;
        for purge in purges {
            deleted += purge.await.unwrap().unwrap();
        }
        assert_eq!(deleted, 900);
        let kept = request_ids(&store).await;
        assert_eq!(kept.len(), 100);
        assert!(kept.iter().all(|id| id.ends_with('9')), "{kept:?}");
    }

    #[tokio::test]
    async fn contains_matches_any_text_column_or_one_actor_ignoring_case() {
        let (_dir, store) = crate::test_support::open_temporary().await;
        let mut other = event("r2", false);
        other.actors = vec!["x".into(), "y".into()];
        other.securable = None;
        other.endpoint = None;
        other.api = "GET /api/2.0/preview/scim/v2/Me".into();
        other.reason = "nothing".into();
        store
            .append_audit_events(&[event("r1", true), other])
            .await
            .unwrap();
        let matching = |needle: &str| {
            let filter = AuditFilter {
                contains: Some(needle.into()),
                limit: 10,
                ..AuditFilter::default()
            };
            let store = store.clone();
            async move {
                store
                    .audit_events(&filter)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|event| event.request_id)
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(matching("MAIN.DOCS").await, ["r1"]);
        assert_eq!(matching("OUTER-agent").await, ["r1"]);
        assert_eq!(matching("scim").await, ["r2"]);
        assert_eq!(matching("granted to").await, ["r1"]);
        // The actors are stored as a JSON array; its punctuation is not text of any actor.
        assert!(matching("\",\"").await.is_empty());
    }
}
