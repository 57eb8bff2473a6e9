//! Load and soak: many users at once invoke an on-behalf-of agent, run SQL on a table with a row filter and query
//! a vector index, against a real release `deputy serve`, for a fixed duration. Every answer is checked against
//! what its caller may see; an answer that names another user, or shows a row or an index the caller may not read,
//! is an isolation failure. Reports requests/s, p50/p99 per kind, errors, and the server's resident memory over
//! time.
//!
//! ```sh
//! scripts/load.sh --duration-secs 90            # builds the release binaries, then runs this
//! target/release/deputy-load --duration-secs 600 --concurrency 32
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use deputy_load::{Api, Latencies, Server, children_of, load_average, rss_kib, sibling_binary};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Debug, Clone)]
#[command(about = "Drive a real deputy server with many users at once and check every answer")]
struct Options {
    /// The release `deputy` binary (default: next to this one).
    #[arg(long)]
    deputy: Option<PathBuf>,
    /// The whoami agent binary (default: `examples/whoami_agent` next to this one).
    #[arg(long)]
    agent: Option<PathBuf>,
    /// How long to drive the load, after the warm-up.
    #[arg(long, default_value_t = 90)]
    duration_secs: u64,
    /// Load before the measurement starts (not counted; the memory baseline is taken at its end).
    #[arg(long, default_value_t = 10)]
    warmup_secs: u64,
    /// Concurrent clients (each sends one request at a time, as a rotating user).
    #[arg(long, default_value_t = 24)]
    concurrency: usize,
    /// End users (at least 20), with different grants.
    #[arg(long, default_value_t = 24)]
    users: usize,
    /// Relative weight of agent invocations in the mix.
    #[arg(long, default_value_t = 2)]
    agent_weight: u32,
    /// Relative weight of SQL statements in the mix.
    #[arg(long, default_value_t = 1)]
    sql_weight: u32,
    /// Relative weight of vector queries in the mix.
    #[arg(long, default_value_t = 2)]
    vector_weight: u32,
    /// Worker processes of the agent endpoint.
    #[arg(long, default_value_t = 4)]
    agent_workers: usize,
    /// Rows in the vector index.
    #[arg(long, default_value_t = 2000)]
    vectors: usize,
    /// Seconds between memory samples.
    #[arg(long, default_value_t = 1)]
    rss_every_secs: u64,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 10)]
    progress_every_secs: u64,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const KINDS: [&str; 3] = ["agent", "sql", "vector"];
const NOTES_PER_USER: usize = 6;
const VECTOR_DIMENSION: usize = 16;
const CATALOG: &str = "load";

/// Who a user is and what they may see, fixed at setup.
#[derive(Debug, Clone)]
struct User {
    name: String,
    token: String,
    /// SELECT on the notes table (through the `load-readers` group).
    reads_table: bool,
    /// Member of `load-auditors`: the row filter keeps every row.
    auditor: bool,
    /// SELECT on the vector index (through `load-vector`).
    reads_index: bool,
}

impl User {
    /// Whether the `load` catalog is visible to the user (USE CATALOG goes to both groups).
    fn sees_catalog(&self) -> bool {
        self.reads_table || self.reads_index
    }
}

struct World {
    users: Vec<User>,
    warehouse: String,
    /// Owner of each note id, to check SQL answers.
    note_owner: Vec<String>,
    index: String,
}

/// What one request came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The expected data.
    Ok,
    /// The refusal a user without the grant must get.
    Refused,
    /// The answer is wrong, failed or late, but shows nothing of another user.
    Error,
    /// The answer shows another user's identity or data, or data the caller has no grant for.
    IsolationFailure,
}

#[derive(Default)]
struct KindStats {
    latencies: Latencies,
    ok: u64,
    refused: u64,
    errors: u64,
    isolation_failures: u64,
    /// A few distinct messages of errors and failures, to print.
    examples: BTreeSet<String>,
}

#[derive(Default)]
struct Stats {
    kinds: [KindStats; 3],
}

impl Stats {
    fn total(&self) -> u64 {
        self.kinds
            .iter()
            .map(|kind| kind.ok + kind.refused + kind.errors + kind.isolation_failures)
            .sum()
    }
    fn errors(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.errors).sum()
    }
    fn isolation_failures(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.isolation_failures).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct RssSample {
    seconds: f64,
    server_kib: u64,
    workers_kib: u64,
    workers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if options.users < 20 {
        bail!("--users must be at least 20");
    }
    let deputy = options
        .deputy
        .clone()
        .unwrap_or_else(|| sibling_binary("deputy"));
    let agent = options
        .agent
        .clone()
        .unwrap_or_else(|| sibling_binary("examples/whoami_agent"));
    if !agent.is_file() {
        bail!(
            "no agent binary at `{}`: build it with `cargo build --release -p deputy-sdk --example whoami_agent`",
            agent.display()
        );
    }
    let server = Server::start(&deputy, &[]).await?;
    println!(
        "server: {} pid {} data {} (binary {})",
        server.host,
        server.pid,
        server.data_dir.path().display(),
        deputy.display()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let admin = Api::new(&server.host, &server.admin_token, http.clone());
    let setup_started = Instant::now();
    let world = Arc::new(set_up(&server, &admin, &agent, &options).await?);
    println!(
        "setup: {} users, table with a row filter ({} rows), warehouse, vector index ({} vectors), agent with {} workers, obo on; {:.1} s",
        world.users.len(),
        world.note_owner.len(),
        options.vectors,
        options.agent_workers,
        setup_started.elapsed().as_secs_f64()
    );

    let stats = Arc::new(Mutex::new(Stats::default()));
    let samples = Arc::new(Mutex::new(Vec::<RssSample>::new()));
    let measuring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = Instant::now();
    let warmup_end = started + Duration::from_secs(options.warmup_secs);
    let deadline = warmup_end + Duration::from_secs(options.duration_secs);

    let sampler = {
        let (samples, pid, every) = (samples.clone(), server.pid, options.rss_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            while Instant::now() < deadline {
                tick.tick().await;
                let workers = children_of(pid);
                let now = Instant::now();
                let seconds = if now < warmup_end {
                    -(warmup_end - now).as_secs_f64()
                } else {
                    (now - warmup_end).as_secs_f64()
                };
                let sample = RssSample {
                    seconds,
                    server_kib: rss_kib(pid).unwrap_or(0),
                    workers_kib: workers.iter().filter_map(|child| rss_kib(*child)).sum(),
                    workers: workers.len(),
                };
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
            }
        })
    };

    let weights = [
        options.agent_weight,
        options.sql_weight,
        options.vector_weight,
    ];
    let clients: Vec<_> = (0..options.concurrency)
        .map(|client| {
            let (world, stats, measuring, http) = (
                world.clone(),
                stats.clone(),
                measuring.clone(),
                http.clone(),
            );
            let host = server.host.clone();
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + client as u64);
                let total_weight: u32 = weights.iter().sum();
                let mut turn = client;
                while Instant::now() < deadline {
                    let user = &world.users[turn % world.users.len()];
                    turn += 1;
                    let mut pick = rng.random_range(0..total_weight.max(1));
                    let kind = weights
                        .iter()
                        .position(|weight| {
                            if pick < *weight {
                                true
                            } else {
                                pick -= weight;
                                false
                            }
                        })
                        .unwrap_or(0);
                    let api = Api::new(&host, &user.token, http.clone());
                    let begun = Instant::now();
                    let (outcome, detail) = match kind {
                        0 => invoke_agent(&api, user).await,
                        1 => run_sql(&api, &world, user, rng.random_range(0..7)).await,
                        _ => query_vectors(&api, &world, user, &mut rng).await,
                    };
                    let elapsed = begun.elapsed();
                    if !measuring.load(std::sync::atomic::Ordering::Relaxed) {
                        continue;
                    }
                    if let Ok(mut stats) = stats.lock() {
                        let kind = &mut stats.kinds[kind];
                        kind.latencies.record(elapsed);
                        match outcome {
                            Outcome::Ok => kind.ok += 1,
                            Outcome::Refused => kind.refused += 1,
                            Outcome::Error => kind.errors += 1,
                            Outcome::IsolationFailure => kind.isolation_failures += 1,
                        }
                        if matches!(outcome, Outcome::Error | Outcome::IsolationFailure)
                            && kind.examples.len() < 5
                        {
                            kind.examples.insert(format!("{outcome:?}: {detail}"));
                        }
                    }
                }
            })
        })
        .collect();

    tokio::time::sleep_until(warmup_end.into()).await;
    measuring.store(true, std::sync::atomic::Ordering::Relaxed);
    println!(
        "warm-up done ({} s); measuring for {} s with {} clients, mix agent:sql:vector = {}:{}:{}",
        options.warmup_secs,
        options.duration_secs,
        options.concurrency,
        options.agent_weight,
        options.sql_weight,
        options.vector_weight
    );
    let mut last_total = 0;
    let mut last_time = Instant::now();
    while Instant::now() + Duration::from_secs(options.progress_every_secs) <= deadline {
        tokio::time::sleep(Duration::from_secs(options.progress_every_secs)).await;
        let (total, errors, failures) = match stats.lock() {
            Ok(stats) => (stats.total(), stats.errors(), stats.isolation_failures()),
            Err(_) => (0, 0, 0),
        };
        let rate = (total - last_total) as f64 / last_time.elapsed().as_secs_f64();
        last_total = total;
        last_time = Instant::now();
        println!(
            "  t={:>5.0} s  {:>7.1} req/s  total {total}  errors {errors}  isolation failures {failures}  server RSS {} MiB  workers {} MiB  load {}",
            warmup_end.elapsed().as_secs_f64(),
            rate,
            rss_kib(server.pid).unwrap_or(0) / 1024,
            children_of(server.pid)
                .iter()
                .filter_map(|child| rss_kib(*child))
                .sum::<u64>()
                / 1024,
            load_average()
        );
    }
    for client in clients {
        client.await?;
    }
    let measured = warmup_end.elapsed().as_secs_f64();
    sampler.abort();
    let server_alive = rss_kib(server.pid).is_some();
    let audit = admin
        .call(Method::GET, "/api/2.0/deputy/audit?limit=1", None)
        .await
        .ok()
        .map(|reply| reply.status);
    let stats = match stats.lock() {
        Ok(mut stats) => std::mem::take(&mut *stats),
        Err(_) => bail!("a client panicked while recording"),
    };
    let samples = samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    let summary = report(&options, &stats, &samples, measured, server_alive);
    if audit != Some(200) {
        println!("after the run the server answered the audit route with {audit:?}");
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    server.stop().await?;
    if stats.isolation_failures() > 0 {
        bail!("{} isolation failures", stats.isolation_failures());
    }
    Ok(())
}

/// Users, groups, grants, a table with a row filter, a warehouse, a vector index, the agent: all through the
/// public API, as an admin would.
async fn set_up(
    server: &Server,
    admin: &Api,
    agent: &std::path::Path,
    options: &Options,
) -> anyhow::Result<World> {
    let mut users = Vec::new();
    let mut ids = Vec::new();
    for index in 0..options.users {
        let name = format!("load-user-{index:02}@example.com");
        let id = admin.create_user(&name).await?;
        let token = admin.token_for(&id, 24 * 3600).await?;
        users.push(User {
            name,
            token,
            // Two users in three read the table, one in five of them sees every row, half read the index: every
            // combination occurs among 20 users.
            reads_table: index % 3 != 2,
            auditor: index % 3 != 2 && index % 5 == 0,
            reads_index: index % 2 == 0,
        });
        ids.push(id);
    }
    for (group, member) in [
        (
            "load-readers",
            (|user: &User| user.reads_table) as fn(&User) -> bool,
        ),
        ("load-auditors", |user: &User| user.auditor),
        ("load-vector", |user: &User| user.reads_index),
    ] {
        let members: Vec<Value> = users
            .iter()
            .zip(&ids)
            .filter(|(user, _)| member(user))
            .map(|(_, id)| json!({ "value": id }))
            .collect();
        admin
            .post(
                "/api/2.0/preview/scim/v2/Groups",
                &json!({ "displayName": group, "members": members }),
            )
            .await?;
    }
    let warehouse = admin
        .post(
            "/api/2.0/sql/warehouses",
            &json!({ "name": "load-warehouse" }),
        )
        .await?["id"]
        .as_str()
        .context("no warehouse id")?
        .to_owned();
    admin
        .ok(
            Method::PATCH,
            &format!("/api/2.0/permissions/warehouses/{warehouse}"),
            Some(&json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_USE" }] })),
        )
        .await?;
    let mut note_owner = Vec::new();
    let mut values = Vec::new();
    for user in &users {
        for _ in 0..NOTES_PER_USER {
            values.push(format!(
                "({}, '{}', 'note {} of {}')",
                note_owner.len(),
                user.name,
                note_owner.len(),
                user.name
            ));
            note_owner.push(user.name.clone());
        }
    }
    for statement in [
        format!("CREATE CATALOG {CATALOG}"),
        format!("CREATE SCHEMA {CATALOG}.data"),
        format!("CREATE TABLE {CATALOG}.data.notes (id INT, owner STRING, body STRING)"),
        format!(
            "INSERT INTO {CATALOG}.data.notes VALUES {}",
            values.join(", ")
        ),
        format!(
            "CREATE FUNCTION {CATALOG}.data.visible(owner STRING) RETURNS BOOLEAN \
             RETURN owner = current_user() OR is_account_group_member('load-auditors')"
        ),
        format!(
            "ALTER TABLE {CATALOG}.data.notes SET ROW FILTER {CATALOG}.data.visible ON (owner)"
        ),
        format!("GRANT USE CATALOG ON CATALOG {CATALOG} TO `load-readers`"),
        format!("GRANT USE CATALOG ON CATALOG {CATALOG} TO `load-vector`"),
        format!("GRANT USE SCHEMA ON SCHEMA {CATALOG}.data TO `load-readers`"),
        format!("GRANT USE SCHEMA ON SCHEMA {CATALOG}.data TO `load-vector`"),
        format!("GRANT SELECT ON TABLE {CATALOG}.data.notes TO `load-readers`"),
    ] {
        admin.sql_ok(&warehouse, &statement).await?;
    }

    let endpoint = admin
        .post(
            "/api/2.0/vector-search/endpoints",
            &json!({ "name": "load-vs", "endpoint_type": "STANDARD" }),
        )
        .await?;
    let endpoint_id = endpoint["id"].as_str().context("no endpoint id")?;
    admin
        .ok(
            Method::PATCH,
            &format!("/api/2.0/permissions/vector-search-endpoints/{endpoint_id}"),
            Some(&json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_USE" }] })),
        )
        .await?;
    let index = format!("{CATALOG}.data.embeddings");
    admin
        .post(
            "/api/2.0/vector-search/indexes",
            &json!({
                "name": index, "endpoint_name": "load-vs", "primary_key": "id", "index_type": "DIRECT_ACCESS",
                "direct_access_index_spec": {
                    "embedding_vector_columns": [{ "name": "vec", "embedding_dimension": VECTOR_DIMENSION }],
                    "schema_json": "{\"id\": \"string\", \"owner\": \"string\", \"vec\": \"array<float>\"}",
                },
            }),
        )
        .await?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    for chunk in (0..options.vectors).collect::<Vec<_>>().chunks(500) {
        let rows: Vec<Value> = chunk
            .iter()
            .map(|row| {
                let vector: Vec<f32> = (0..VECTOR_DIMENSION)
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                json!({ "id": format!("v{row}"), "owner": users[row % users.len()].name, "vec": vector })
            })
            .collect();
        admin
            .post(
                &format!("/api/2.0/vector-search/indexes/{index}/upsert-data"),
                &json!({ "inputs_json": Value::Array(rows).to_string() }),
            )
            .await?;
    }
    admin
        .ok(
            Method::PATCH,
            &format!("/api/2.1/unity-catalog/permissions/table/{index}"),
            Some(&json!({ "changes": [{ "principal": "load-vector", "add": ["SELECT"] }] })),
        )
        .await?;

    let agent_path = agent.display().to_string();
    let workers = options.agent_workers.to_string();
    server
        .cli(&[
            "agents",
            "deploy",
            &agent_path,
            "--name",
            "whoami",
            "--user-scope",
            "iam.scim",
            "--user-scope",
            "catalog.catalogs",
            "--workers",
            &workers,
        ])
        .await?;
    let endpoint = admin
        .ok(Method::GET, "/api/2.0/serving-endpoints/whoami", None)
        .await?;
    let endpoint_id = endpoint["id"].as_str().context("no serving endpoint id")?;
    admin
        .ok(
            Method::PATCH,
            &format!("/api/2.0/permissions/serving-endpoints/{endpoint_id}"),
            Some(&json!({ "access_control_list": [{ "group_name": "users", "permission_level": "CAN_QUERY" }] })),
        )
        .await?;
    server
        .cli(&["settings", "set", "obo-enabled", "true"])
        .await?;
    Ok(World {
        users,
        warehouse,
        note_owner,
        index,
    })
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    text.chars().take(300).collect()
}

/// The whoami agent answers "You are NAME; you can see catalogs [A, B]. I am agent:whoami." with the caller's own
/// downscoped token: the name must be the caller's, and `load` listed exactly when the caller may use it.
async fn invoke_agent(api: &Api, user: &User) -> (Outcome, String) {
    let body = json!({ "messages": [{ "role": "user", "content": "who am I?" }] });
    let reply = match api
        .call(
            Method::POST,
            "/serving-endpoints/whoami/invocations",
            Some(&body),
        )
        .await
    {
        Ok(reply) => reply,
        Err(error) => return (Outcome::Error, format!("agent: {error}")),
    };
    if reply.status != 200 {
        return (
            Outcome::Error,
            format!("agent {}: {}", reply.status, short(&reply.body)),
        );
    }
    let Some(content) = reply.body["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str())
    else {
        return (
            Outcome::Error,
            format!("agent: no message in {}", short(&reply.body)),
        );
    };
    let Some(rest) = content.strip_prefix("You are ") else {
        return (Outcome::Error, format!("agent: {content}"));
    };
    let Some((name, rest)) = rest.split_once(';') else {
        return (Outcome::Error, format!("agent: {content}"));
    };
    if name != user.name {
        return (
            Outcome::IsolationFailure,
            format!("agent answered `{name}` to {}", user.name),
        );
    }
    let catalogs = rest
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(list, _)| list.split(", ").any(|catalog| catalog == CATALOG));
    match catalogs {
        Some(sees) if sees == user.sees_catalog() => {}
        Some(true) => {
            return (
                Outcome::IsolationFailure,
                format!(
                    "agent listed `{CATALOG}` to {}, who may not use it",
                    user.name
                ),
            );
        }
        _ => return (Outcome::Error, format!("agent: {content}")),
    }
    if !content.ends_with("I am agent:whoami.") {
        return (Outcome::Error, format!("agent: {content}"));
    }
    (Outcome::Ok, String::new())
}

/// Readers get exactly their own notes among `id % 7 = k` (auditors every one of them); a user without SELECT gets
/// the same failure as for a missing table.
async fn run_sql(api: &Api, world: &World, user: &User, residue: usize) -> (Outcome, String) {
    let statement =
        format!("SELECT id, owner FROM {CATALOG}.data.notes WHERE id % 7 = {residue} ORDER BY id");
    let reply = match api.sql(&world.warehouse, &statement).await {
        Ok(reply) => reply,
        Err(error) => return (Outcome::Error, format!("sql: {error}")),
    };
    let state = reply.body["status"]["state"].as_str().unwrap_or("");
    if !user.reads_table {
        let message = reply.body["status"]["error"]["message"]
            .as_str()
            .unwrap_or("");
        return match state {
            "FAILED"
                if message.contains("TABLE_OR_VIEW_NOT_FOUND") || message.contains("not found") =>
            {
                (Outcome::Refused, String::new())
            }
            "SUCCEEDED" => (
                Outcome::IsolationFailure,
                format!("sql: {} read a table it has no grant on", user.name),
            ),
            _ => (
                Outcome::Error,
                format!("sql {}: {}", reply.status, short(&reply.body)),
            ),
        };
    }
    if state != "SUCCEEDED" {
        return (
            Outcome::Error,
            format!("sql {}: {}", reply.status, short(&reply.body)),
        );
    }
    let empty = Vec::new();
    let rows = reply.body["result"]["data_array"]
        .as_array()
        .unwrap_or(&empty);
    let mut seen = Vec::new();
    for row in rows {
        let owner = row[1].as_str().unwrap_or("");
        let id: usize = match &row[0] {
            Value::String(text) => text.parse().unwrap_or(usize::MAX),
            Value::Number(number) => number.as_u64().map_or(usize::MAX, |n| n as usize),
            _ => usize::MAX,
        };
        if world.note_owner.get(id).map(String::as_str) != Some(owner) {
            return (Outcome::Error, format!("sql: row {row} does not exist"));
        }
        if !user.auditor && owner != user.name {
            return (
                Outcome::IsolationFailure,
                format!("sql: {} saw a row of {owner}", user.name),
            );
        }
        seen.push(id);
    }
    let expected: Vec<usize> = (0..world.note_owner.len())
        .filter(|id| id % 7 == residue && (user.auditor || world.note_owner[*id] == user.name))
        .collect();
    if seen != expected {
        return (
            Outcome::Error,
            format!(
                "sql: {} got rows {seen:?}, expected {expected:?}",
                user.name
            ),
        );
    }
    (Outcome::Ok, String::new())
}

/// A user with SELECT on the index gets `num_results` rows that exist; one without gets a refusal.
async fn query_vectors(
    api: &Api,
    world: &World,
    user: &User,
    rng: &mut rand::rngs::StdRng,
) -> (Outcome, String) {
    let vector: Vec<f32> = (0..VECTOR_DIMENSION)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let body = json!({ "query_vector": vector, "columns": ["id", "owner"], "num_results": 5 });
    let reply = match api
        .call(
            Method::POST,
            &format!("/api/2.0/vector-search/indexes/{}/query", world.index),
            Some(&body),
        )
        .await
    {
        Ok(reply) => reply,
        Err(error) => return (Outcome::Error, format!("vector: {error}")),
    };
    if !user.reads_index {
        return match reply.status {
            403 | 404 => (Outcome::Refused, String::new()),
            200 => (
                Outcome::IsolationFailure,
                format!("vector: {} read an index it has no grant on", user.name),
            ),
            status => (
                Outcome::Error,
                format!("vector {status}: {}", short(&reply.body)),
            ),
        };
    }
    if reply.status != 200 {
        return (
            Outcome::Error,
            format!("vector {}: {}", reply.status, short(&reply.body)),
        );
    }
    let rows = reply.body["result"]["data_array"].as_array().map(Vec::len);
    if rows != Some(5) {
        return (
            Outcome::Error,
            format!("vector: {rows:?} rows: {}", short(&reply.body)),
        );
    }
    (Outcome::Ok, String::new())
}

/// Prints the summary and returns it as JSON.
fn report(
    options: &Options,
    stats: &Stats,
    samples: &[RssSample],
    measured: f64,
    server_alive: bool,
) -> Value {
    println!();
    println!(
        "measured {measured:.1} s, {} clients, {} users; load average now {}",
        options.concurrency,
        options.users,
        load_average()
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>10}",
        "kind",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "refused",
        "errors",
        "isolation"
    );
    let mut kinds = serde_json::Map::new();
    let mut all = Latencies::new();
    for (name, kind) in KINDS.iter().zip(&stats.kinds) {
        let count = kind.latencies.count();
        all.add(&kind.latencies);
        println!(
            "{name:<8} {count:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8} {:>7} {:>10}",
            count as f64 / measured,
            kind.latencies.ms(0.5),
            kind.latencies.ms(0.9),
            kind.latencies.ms(0.99),
            kind.latencies.max_ms(),
            kind.refused,
            kind.errors,
            kind.isolation_failures
        );
        kinds.insert(
            (*name).to_owned(),
            json!({
                "requests": count, "per_second": count as f64 / measured,
                "p50_ms": kind.latencies.ms(0.5), "p90_ms": kind.latencies.ms(0.9),
                "p99_ms": kind.latencies.ms(0.99), "max_ms": kind.latencies.max_ms(),
                "refused_as_expected": kind.refused,
                "errors": kind.errors, "isolation_failures": kind.isolation_failures,
                "error_examples": kind.examples.iter().collect::<Vec<_>>(),
            }),
        );
    }
    println!(
        "{:<8} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8} {:>7} {:>10}",
        "all",
        all.count(),
        all.count() as f64 / measured,
        all.ms(0.5),
        all.ms(0.9),
        all.ms(0.99),
        all.max_ms(),
        stats.kinds.iter().map(|kind| kind.refused).sum::<u64>(),
        stats.errors(),
        stats.isolation_failures()
    );
    for (name, kind) in KINDS.iter().zip(&stats.kinds) {
        for example in &kind.examples {
            println!("  {name}: {example}");
        }
    }

    // Memory: the baseline is the first sample after the warm-up; the trend is a least-squares slope over the
    // second half of the run, when caches and pools have reached their size.
    let measured_samples: Vec<&RssSample> = samples.iter().filter(|s| s.seconds >= 0.0).collect();
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut memory = json!(null);
    if let (Some(first), Some(last)) = (measured_samples.first(), measured_samples.last()) {
        let peak = measured_samples
            .iter()
            .map(|s| s.server_kib)
            .max()
            .unwrap_or(0);
        let half: Vec<&&RssSample> = measured_samples
            .iter()
            .filter(|s| s.seconds >= measured / 2.0)
            .collect();
        let slope = slope_kib_per_minute(&half);
        println!(
            "server RSS: {:.1} MiB after warm-up, {:.1} MiB at the end, peak {:.1} MiB; second-half trend {:+.1} MiB/min; agent workers {} processes, {:.1} -> {:.1} MiB",
            mib(first.server_kib),
            mib(last.server_kib),
            mib(peak),
            slope / 1024.0,
            last.workers,
            mib(first.workers_kib),
            mib(last.workers_kib)
        );
        let step = (measured_samples.len() / 12).max(1);
        let timeline: Vec<String> = measured_samples
            .iter()
            .step_by(step)
            .chain(std::iter::once(last))
            .map(|s| format!("{:.0}s:{:.1}", s.seconds, mib(s.server_kib)))
            .collect();
        println!("server RSS over time (s: MiB): {}", timeline.join("  "));
        memory = json!({
            "server_after_warmup_mib": mib(first.server_kib), "server_end_mib": mib(last.server_kib),
            "server_peak_mib": mib(peak), "second_half_slope_mib_per_min": slope / 1024.0,
            "workers_end_mib": mib(last.workers_kib), "workers": last.workers,
            "samples": samples.iter().map(|s| json!([s.seconds, s.server_kib, s.workers_kib])).collect::<Vec<_>>(),
        });
    }
    println!(
        "server {} at the end; {} isolation failures, {} errors in {} requests",
        if server_alive { "alive" } else { "GONE" },
        stats.isolation_failures(),
        stats.errors(),
        stats.total()
    );
    json!({
        "measured_seconds": measured, "concurrency": options.concurrency, "users": options.users,
        "mix": { "agent": options.agent_weight, "sql": options.sql_weight, "vector": options.vector_weight },
        "agent_workers": options.agent_workers,
        "requests": stats.total(), "per_second": stats.total() as f64 / measured,
        "errors": stats.errors(), "isolation_failures": stats.isolation_failures(),
        "kinds": kinds, "memory": memory, "server_alive": server_alive, "load_average_end": load_average(),
    })
}

/// Least-squares slope of the server's RSS, in KiB per minute.
fn slope_kib_per_minute(samples: &[&&RssSample]) -> f64 {
    let n = samples.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = samples.iter().map(|s| s.seconds).sum::<f64>() / n;
    let mean_y = samples.iter().map(|s| s.server_kib as f64).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for s in samples {
        covariance += (s.seconds - mean_x) * (s.server_kib as f64 - mean_y);
        variance += (s.seconds - mean_x).powi(2);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 60.0
    }
}
