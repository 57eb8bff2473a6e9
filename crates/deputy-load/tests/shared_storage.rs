//! Replicas of `deputy serve` sharing one PostgreSQL database and one storage directory (`--storage`), as behind a
//! load balancer: what one replica writes to a table, a vector index or an agent endpoint, the other reads at once
//! (once the writer answered), and concurrent writes through both lose nothing.
//!
//! These tests need the database the suite's switch names (`DEPUTY_TEST_POSTGRES_URL`; `scripts/test.sh` starts
//! one, and runs them, named `replicas_*`, only in its PostgreSQL pass) and the debug `deputy` binary
//! (`cargo build --workspace`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code.

use deputy_load::{Api, Server};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long an object created on one replica may take to become usable on the other (its grants follow through
/// the database's change announcements); the data itself must be there as soon as the writer answered.
const BOUND: Duration = Duration::from_secs(5);
const PUBLIC_URL: &str = "http://deputy.replicas.test";

/// The debug `deputy` next to this test's directory (`target/debug/deps/..`).
fn deputy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("deputy")
}

/// Two replicas on one fresh database and one storage directory (each with a data directory of its own), an admin
/// client for each, and the storage directory (removed when dropped, after the servers).
struct Replicas {
    a: Server,
    b: Server,
    admin_a: Api,
    admin_b: Api,
    storage: tempfile::TempDir,
}

async fn two_replicas() -> Replicas {
    let database = deputy_store::testing::fresh_postgres_database().expect(
        "the replica tests need a PostgreSQL server: set DEPUTY_TEST_POSTGRES_URL (scripts/test.sh starts one)",
    );
    let storage = tempfile::Builder::new()
        .prefix("deputy-storage-")
        .tempdir()
        .unwrap();
    let env = [
        ("DEPUTY_DATABASE_URL", database),
        ("DEPUTY_PUBLIC_URL", PUBLIC_URL.to_owned()),
        ("DEPUTY_STORAGE_DIR", storage.path().display().to_string()),
    ];
    let binary = deputy_binary();
    let (a, b) = tokio::join!(Server::start(&binary, &env), Server::start(&binary, &env));
    let (a, b) = (a.unwrap(), b.unwrap());
    let http = reqwest::Client::new();
    let admin_a = Api::new(&a.host, &a.admin_token, http.clone());
    let admin_b = Api::new(&b.host, &b.admin_token, http);
    Replicas {
        a,
        b,
        admin_a,
        admin_b,
        storage,
    }
}

async fn warehouse(admin: &Api) -> String {
    admin
        .post("/api/2.0/sql/warehouses", &json!({ "name": "shared" }))
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The rows of a query, each cell as the statement API renders it (text).
async fn rows(admin: &Api, warehouse: &str, statement: &str) -> Vec<Vec<Value>> {
    let body = admin.sql_ok(warehouse, statement).await.unwrap();
    body["result"]["data_array"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|row| row.as_array().cloned().unwrap_or_default())
        .collect()
}

/// Polls `statement` on `admin`'s replica until it succeeds (the object it names created on the other replica has
/// reached this one's authorization snapshot), failing after [`BOUND`].
async fn until_succeeds(admin: &Api, warehouse: &str, statement: &str) {
    let start = Instant::now();
    loop {
        let reply = admin.sql(warehouse, statement).await.unwrap();
        if reply.body["status"]["state"] == "SUCCEEDED" {
            return;
        }
        assert!(
            start.elapsed() < BOUND,
            "`{statement}` still fails after {BOUND:?}: {}",
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn text(cell: &Value) -> String {
    match cell {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_read_table_writes_made_through_either_at_once() {
    let replicas = two_replicas().await;
    let (admin_a, admin_b) = (&replicas.admin_a, &replicas.admin_b);
    let warehouse = warehouse(admin_a).await;
    for statement in [
        "CREATE CATALOG shared",
        "CREATE SCHEMA shared.data",
        "CREATE TABLE shared.data.notes (id INT, body STRING)",
    ] {
        admin_a.sql_ok(&warehouse, statement).await.unwrap();
    }
    until_succeeds(admin_b, &warehouse, "SELECT * FROM shared.data.notes").await;

    // Each write answered on one replica is read on the other by the very next statement, without retrying.
    admin_a
        .sql_ok(
            &warehouse,
            "INSERT INTO shared.data.notes VALUES (1, 'one'), (2, 'two')",
        )
        .await
        .unwrap();
    let read = rows(
        admin_b,
        &warehouse,
        "SELECT id FROM shared.data.notes ORDER BY id",
    )
    .await;
    assert_eq!(read, vec![vec![json!("1")], vec![json!("2")]]);

    admin_b
        .sql_ok(
            &warehouse,
            "UPDATE shared.data.notes SET body = 'TWO' WHERE id = 2",
        )
        .await
        .unwrap();
    let read = rows(
        admin_a,
        &warehouse,
        "SELECT body FROM shared.data.notes WHERE id = 2",
    )
    .await;
    assert_eq!(read, vec![vec![json!("TWO")]]);

    admin_a
        .sql_ok(&warehouse, "DELETE FROM shared.data.notes WHERE id = 1")
        .await
        .unwrap();
    let read = rows(admin_b, &warehouse, "SELECT id FROM shared.data.notes").await;
    assert_eq!(read, vec![vec![json!("2")]]);

    admin_b
        .sql_ok(
            &warehouse,
            "CREATE TABLE shared.data.copy AS SELECT id * 10 AS id FROM shared.data.notes",
        )
        .await
        .unwrap();
    until_succeeds(admin_a, &warehouse, "SELECT * FROM shared.data.copy").await;
    let read = rows(admin_a, &warehouse, "SELECT id FROM shared.data.copy").await;
    assert_eq!(read, vec![vec![json!("20")]]);

    admin_a
        .sql_ok(
            &warehouse,
            "CREATE OR REPLACE TABLE shared.data.notes AS SELECT 3 AS id, 'three' AS body",
        )
        .await
        .unwrap();
    let read = rows(
        admin_b,
        &warehouse,
        "SELECT id, body FROM shared.data.notes",
    )
    .await;
    assert_eq!(read, vec![vec![json!("3"), json!("three")]]);

    // The table files are in the shared storage, none in either data directory.
    let tables = replicas.storage.path().join("warehouse/tables");
    assert!(std::fs::read_dir(&tables).unwrap().next().is_some());
    for server in [&replicas.a, &replicas.b] {
        assert!(!server.data_dir().join("warehouse").exists());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_writing_one_table_concurrently_lose_nothing() {
    const WRITERS_PER_REPLICA: usize = 3;
    const ROUNDS: usize = 8;
    let replicas = two_replicas().await;
    let (admin_a, admin_b) = (&replicas.admin_a, &replicas.admin_b);
    let warehouse = warehouse(admin_a).await;
    for statement in [
        "CREATE CATALOG shared",
        "CREATE SCHEMA shared.data",
        "CREATE TABLE shared.data.events (id INT, writer STRING)",
        "CREATE TABLE shared.data.counter (id INT, n INT)",
        "INSERT INTO shared.data.counter VALUES (0, 0)",
    ] {
        admin_a.sql_ok(&warehouse, statement).await.unwrap();
    }
    until_succeeds(admin_b, &warehouse, "SELECT * FROM shared.data.counter").await;

    // Appends (INSERT) and rewrites (UPDATE: a new version made current by renaming the pointer file) from both
    // replicas at once. A rewrite that did not exclude the other replica's writes would drop an append made while
    // it ran, or an increment made by the other rewrite.
    let mut writers = Vec::new();
    for (replica, admin) in [("a", admin_a), ("b", admin_b)] {
        for writer in 0..WRITERS_PER_REPLICA {
            let (admin, warehouse) = (admin.clone(), warehouse.clone());
            writers.push(tokio::spawn(async move {
                for round in 0..ROUNDS {
                    let id = (if replica == "a" { 0 } else { 1000 }) + writer * 100 + round;
                    admin
                        .sql_ok(
                            &warehouse,
                            &format!("INSERT INTO shared.data.events VALUES ({id}, '{replica}')"),
                        )
                        .await
                        .unwrap();
                    admin
                        .sql_ok(
                            &warehouse,
                            "UPDATE shared.data.counter SET n = n + 1 WHERE id = 0",
                        )
                        .await
                        .unwrap();
                }
            }));
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let expected = 2 * WRITERS_PER_REPLICA * ROUNDS;
    for admin in [admin_a, admin_b] {
        let ids: BTreeSet<String> = rows(admin, &warehouse, "SELECT id FROM shared.data.events")
            .await
            .iter()
            .map(|row| text(&row[0]))
            .collect();
        assert_eq!(ids.len(), expected, "an acknowledged insert was lost");
        let counter = rows(admin, &warehouse, "SELECT n FROM shared.data.counter").await;
        assert_eq!(
            counter,
            vec![vec![json!(expected.to_string())]],
            "an acknowledged update was lost"
        );
    }
}

async fn query_ids(admin: &Api, index: &str, vector: [f32; 2]) -> (u16, Vec<String>) {
    let reply = admin
        .call(
            Method::POST,
            &format!("/api/2.0/vector-search/indexes/{index}/query"),
            Some(&json!({ "query_vector": vector, "columns": ["id"], "num_results": 1000 })),
        )
        .await
        .unwrap();
    let mut ids: Vec<String> = reply.body["result"]["data_array"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|row| text(&row[0]))
        .collect();
    ids.sort();
    (reply.status, ids)
}

fn upsert_body(ids: impl IntoIterator<Item = usize>) -> Value {
    let rows: Vec<Value> = ids
        .into_iter()
        .map(|id| json!({ "id": format!("r{id:03}"), "vec": [id as f32, 1.0] }))
        .collect();
    json!({ "inputs_json": Value::Array(rows).to_string() })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_vector_indexes_written_and_deleted_through_either() {
    let replicas = two_replicas().await;
    let (admin_a, admin_b) = (&replicas.admin_a, &replicas.admin_b);
    let warehouse = warehouse(admin_a).await;
    for statement in ["CREATE CATALOG shared", "CREATE SCHEMA shared.data"] {
        admin_a.sql_ok(&warehouse, statement).await.unwrap();
    }
    admin_a
        .post(
            "/api/2.0/vector-search/endpoints",
            &json!({ "name": "shared-vs", "endpoint_type": "STANDARD" }),
        )
        .await
        .unwrap();
    let index = "shared.data.embeddings";
    admin_a
        .post(
            "/api/2.0/vector-search/indexes",
            &json!({
                "name": index, "endpoint_name": "shared-vs", "primary_key": "id", "index_type": "DIRECT_ACCESS",
                "direct_access_index_spec": {
                    "embedding_vector_columns": [{ "name": "vec", "embedding_dimension": 2 }],
                    "schema_json": "{\"id\": \"string\", \"vec\": \"array<float>\"}",
                },
            }),
        )
        .await
        .unwrap();
    let upsert = format!("/api/2.0/vector-search/indexes/{index}/upsert-data");
    admin_a.post(&upsert, &upsert_body(0..3)).await.unwrap();
    // B never opened the index (it was created after B started): it opens it from the shared storage.
    let start = Instant::now();
    loop {
        let (status, ids) = query_ids(admin_b, index, [0.0, 1.0]).await;
        if status == 200 {
            assert_eq!(ids, ["r000", "r001", "r002"]);
            break;
        }
        assert!(
            start.elapsed() < BOUND,
            "B cannot query the index: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // B has the index open now: A's next writes reach B's next query.
    admin_a.post(&upsert, &upsert_body(3..5)).await.unwrap();
    let (_, ids) = query_ids(admin_b, index, [0.0, 1.0]).await;
    assert_eq!(ids, ["r000", "r001", "r002", "r003", "r004"]);
    admin_b
        .post(
            &format!("/api/2.0/vector-search/indexes/{index}/delete-data"),
            &json!({ "primary_keys": ["r000", "r004"] }),
        )
        .await
        .unwrap();
    let (_, ids) = query_ids(admin_a, index, [0.0, 1.0]).await;
    assert_eq!(ids, ["r001", "r002", "r003"]);

    // Upserts through both at once: each appends after the other's records, none lost.
    let mut writers = Vec::new();
    for (offset, admin) in [(100, admin_a), (200, admin_b)] {
        let (admin, upsert) = (admin.clone(), upsert.clone());
        writers.push(tokio::spawn(async move {
            for batch in 0..10 {
                let first = offset + batch * 5;
                admin
                    .post(&upsert, &upsert_body(first..first + 5))
                    .await
                    .unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    for admin in [admin_a, admin_b] {
        let (_, ids) = query_ids(admin, index, [0.0, 1.0]).await;
        assert_eq!(ids.len(), 3 + 100, "an acknowledged upsert was lost");
        let info = admin
            .ok(
                Method::GET,
                &format!("/api/2.0/vector-search/indexes/{index}"),
                None,
            )
            .await
            .unwrap();
        assert_eq!(info["status"]["indexed_row_count"], 103, "{info}");
    }

    // Deleted through A: B answers as for any missing index at once, and the files are gone.
    admin_a
        .ok(
            Method::DELETE,
            &format!("/api/2.0/vector-search/indexes/{index}"),
            None,
        )
        .await
        .unwrap();
    let (status, _) = query_ids(admin_b, index, [0.0, 1.0]).await;
    assert_eq!(status, 404);
    let indexes = replicas.storage.path().join("vector-search");
    assert!(std::fs::read_dir(&indexes).unwrap().next().is_none());
}

/// A worker-protocol agent in `sh`: it answers with `version`, its process id, the path it runs from and its working
/// directory.
fn shell_agent(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("echo-agent-{version}"));
    let script = format!(
        r#"#!/bin/sh
printf '{{"type":"ready"}}\n'
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/^{{"id":"\([^"]*\)".*/\1/p')
  printf '{{"id":"%s","type":"result","data":{{"messages":[{{"role":"assistant","content":"{version} pid %s from %s in %s"}}]}}}}\n' "$id" "$$" "$0" "$PWD"
done
"#
    );
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

/// The agent's answer to `admin`: `(version, artifact path, working directory)`.
async fn invoke(admin: &Api) -> (u16, String) {
    let reply = admin
        .call(
            Method::POST,
            "/serving-endpoints/echo/invocations",
            Some(&json!({ "messages": [{ "role": "user", "content": "hello" }] })),
        )
        .await
        .unwrap();
    let content = reply.body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
        .map_or_else(|| reply.body.to_string(), str::to_owned);
    (reply.status, content)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_run_an_agent_deployed_through_either_from_the_shared_storage() {
    let replicas = two_replicas().await;
    let sources = tempfile::tempdir().unwrap();
    let v1 = shell_agent(sources.path(), "v1");
    replicas
        .a
        .cli(&[
            "agents",
            "deploy",
            &v1.display().to_string(),
            "--name",
            "echo",
            "--workers",
            "1",
        ])
        .await
        .unwrap();
    let storage = std::fs::canonicalize(replicas.storage.path()).unwrap();
    let data_b = std::fs::canonicalize(replicas.b.data_dir()).unwrap();

    // B learns of the endpoint through the database, and starts a worker from the artifact A copied.
    let start = Instant::now();
    let answer = loop {
        let (status, answer) = invoke(&replicas.admin_b).await;
        if status == 200 {
            break answer;
        }
        assert!(
            start.elapsed() < BOUND,
            "B cannot invoke the agent: {status} {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (version, rest) = answer.split_once(" pid ").unwrap();
    let (_, rest) = rest.split_once(" from ").unwrap();
    let (artifact, working_dir) = rest.split_once(" in ").unwrap();
    assert_eq!(version, "v1");
    assert!(
        Path::new(artifact).starts_with(storage.join("agents")),
        "the worker runs {artifact}, not a copy in the shared storage {}",
        storage.display()
    );
    // Each replica's workers keep their files (credentials, logs) in its own data directory.
    assert!(
        Path::new(working_dir).starts_with(data_b.join("agents")),
        "the worker works in {working_dir}"
    );

    // Redeployed through A: B's next invocation runs the new deployment (its old worker is replaced).
    let v2 = shell_agent(sources.path(), "v2");
    replicas
        .a
        .cli(&[
            "agents",
            "deploy",
            &v2.display().to_string(),
            "--name",
            "echo",
            "--workers",
            "1",
        ])
        .await
        .unwrap();
    let start = Instant::now();
    let worker_on_b = loop {
        let (status, answer) = invoke(&replicas.admin_b).await;
        assert_eq!(status, 200, "{answer}");
        if let Some(rest) = answer.strip_prefix("v2 pid ") {
            break rest.split_once(' ').unwrap().0.to_owned();
        }
        assert!(
            start.elapsed() < BOUND,
            "B still runs the first deployment: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (status, answer) = invoke(&replicas.admin_a).await;
    assert_eq!((status, answer.split_once(' ').unwrap().0), (200, "v2"));

    // Deleted through A: B stops its worker, which would otherwise idle until B restarts.
    let deleted = replicas
        .admin_a
        .call(Method::DELETE, "/api/2.0/serving-endpoints/echo", None)
        .await
        .unwrap();
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let start = Instant::now();
    while process_runs(&worker_on_b) {
        assert!(
            start.elapsed() < BOUND,
            "B's worker {worker_on_b} still runs for the deleted endpoint"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the process `pid` runs (a zombie, dead but not yet reaped, does not).
fn process_runs(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}
