//! Load and soak: many users at once invoke an on-behalf-of agent, run SQL on a table with a row filter, query a
//! vector index and create personal access tokens, against a real release `deputy serve` (or several replicas of it
//! sharing a PostgreSQL database), for a fixed duration. Every answer is checked against what its caller may see; an
//! answer that names another user, or shows a row or an index the caller may not read, is an isolation failure.
//! Every token a server acknowledged must exist after the run. Reports requests/s, p50/p99 per kind, errors, and each
//! server's resident memory over time and CPU time.
//!
//! ```sh
//! scripts/load.sh --duration-secs 90            # builds the release binaries, then runs this
//! target/release/deputy-load --duration-secs 600 --concurrency 32
//! target/release/deputy-load --database postgres://127.0.0.1/deputy_load_1 --replicas 2 --kill-replica-after-secs 10
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use deputy_load::{
    Api, Balancer, Latencies, Server, children_of, cpu_seconds, load_average, rss_kib,
    sibling_binary,
};
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Keep the metadata in this PostgreSQL database (`postgres://...`; created when missing) instead of SQLite in
    /// the data directory. Name a fresh one per run: the setup creates users and objects with fixed names.
    #[arg(long)]
    database: Option<String>,
    /// `deputy serve` processes sharing the database and the first one's data directory as storage (`--storage`;
    /// more than one needs --database), each with a data directory of its own.
    /// Client i sends to replica i % N, as a load balancer would spread them.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// SIGKILL the last replica this many seconds into the measured run (needs --replicas 2 or more).
    #[arg(long)]
    kill_replica_after_secs: Option<u64>,
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
    /// Relative weight of writes in the mix: a user creates a personal access token of their own.
    #[arg(long, default_value_t = 1)]
    write_weight: u32,
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

impl Options {
    fn weights(&self) -> [u32; 4] {
        [
            self.agent_weight,
            self.sql_weight,
            self.vector_weight,
            self.write_weight,
        ]
    }

    fn database_kind(&self) -> &'static str {
        match self.database {
            Some(_) => "PostgreSQL",
            None => "SQLite",
        }
    }
}

const KINDS: [&str; 4] = ["agent", "sql", "vector", "write"];
const NOTES_PER_USER: usize = 6;
const VECTOR_DIMENSION: usize = 16;
const CATALOG: &str = "load";

/// Who a user is and what they may see, fixed at setup.
#[derive(Debug, Clone)]
struct User {
    name: String,
    /// The SCIM id.
    id: String,
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
    /// The replica refused the connection: nothing was sent, so another replica may take the request.
    NotConnected,
    /// The connection broke before the answer came: the request may or may not have been carried out.
    Unanswered,
}

#[derive(Default)]
struct KindStats {
    latencies: Latencies,
    ok: u64,
    refused: u64,
    errors: u64,
    isolation_failures: u64,
    /// Requests left unanswered by the replica that was killed while they were in flight (not acknowledged).
    lost_in_flight: u64,
    /// A few distinct messages of errors and failures, to print.
    examples: BTreeSet<String>,
}

#[derive(Default)]
struct Stats {
    kinds: [KindStats; 4],
}

impl Stats {
    fn total(&self) -> u64 {
        self.kinds
            .iter()
            .map(|kind| {
                kind.ok + kind.refused + kind.errors + kind.isolation_failures + kind.lost_in_flight
            })
            .sum()
    }
    fn errors(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.errors).sum()
    }
    fn isolation_failures(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.isolation_failures).sum()
    }
    fn lost_in_flight(&self) -> u64 {
        self.kinds.iter().map(|kind| kind.lost_in_flight).sum()
    }
}

/// A replica as the clients see it, the way a load balancer does.
struct Replica {
    host: String,
    pid: u32,
    /// Cleared at its first connection failure; the clients pinned to it then go to the next healthy replica.
    healthy: AtomicBool,
    /// Set just before the run SIGKILLs it: a request it then leaves unanswered is lost in flight, not an error.
    killed: AtomicBool,
    /// Requests it answered while measuring.
    served: AtomicU64,
}

impl Replica {
    fn new(server: &Server) -> Replica {
        Replica {
            host: server.host.clone(),
            pid: server.pid,
            healthy: AtomicBool::new(true),
            killed: AtomicBool::new(false),
            served: AtomicU64::new(0),
        }
    }
}

/// A personal access token a server acknowledged (answered 200 with its id), checked for after the run.
struct Written {
    token_id: String,
    /// Index into the users.
    owner: usize,
    /// The replica that acknowledged it.
    replica: usize,
}

/// What all clients share.
struct Run {
    world: World,
    replicas: Vec<Replica>,
    http: reqwest::Client,
    weights: [u32; 4],
    deadline: Instant,
    /// Off during the warm-up.
    measuring: AtomicBool,
    stats: Mutex<Stats>,
    /// From the warm-up on.
    written: Mutex<Vec<Written>>,
}

impl Run {
    /// The replica for a client pinned to `pinned`: that one while it is healthy, else the next healthy one (or
    /// `pinned` itself when none is).
    fn route(&self, pinned: usize) -> usize {
        let count = self.replicas.len();
        (0..count)
            .map(|step| (pinned + step) % count)
            .find(|index| self.replicas[*index].healthy.load(Ordering::Relaxed))
            .unwrap_or(pinned)
    }

    /// Sends one request of `kind` as `user`, retrying on the next replica when one refuses the connection; what it
    /// came to, and the replica that last had it.
    async fn send(
        &self,
        kind: usize,
        user: usize,
        pinned: usize,
        rng: &mut rand::rngs::StdRng,
    ) -> (Outcome, String, usize) {
        let mut tries = 0;
        loop {
            let replica = self.route(pinned);
            let api = Api::new(
                &self.replicas[replica].host,
                &self.world.users[user].token,
                self.http.clone(),
            );
            let world = &self.world;
            let (outcome, detail) = match kind {
                0 => invoke_agent(&api, &world.users[user]).await,
                1 => run_sql(&api, world, &world.users[user], rng.random_range(0..7)).await,
                2 => query_vectors(&api, world, &world.users[user], rng).await,
                _ => create_token(&api, user, replica, &self.written).await,
            };
            if matches!(outcome, Outcome::NotConnected | Outcome::Unanswered) {
                self.replicas[replica]
                    .healthy
                    .store(false, Ordering::Relaxed);
            }
            tries += 1;
            if outcome != Outcome::NotConnected || tries == self.replicas.len() {
                return (outcome, detail, replica);
            }
        }
    }

    fn record(
        &self,
        kind: usize,
        outcome: Outcome,
        detail: String,
        elapsed: Duration,
        replica: usize,
    ) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let replica = &self.replicas[replica];
        if !matches!(outcome, Outcome::NotConnected | Outcome::Unanswered) {
            replica.served.fetch_add(1, Ordering::Relaxed);
        }
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        let kind = &mut stats.kinds[kind];
        kind.latencies.record(elapsed);
        match outcome {
            Outcome::Ok => kind.ok += 1,
            Outcome::Refused => kind.refused += 1,
            Outcome::IsolationFailure => kind.isolation_failures += 1,
            Outcome::Unanswered if replica.killed.load(Ordering::Relaxed) => {
                kind.lost_in_flight += 1
            }
            Outcome::Error | Outcome::NotConnected | Outcome::Unanswered => kind.errors += 1,
        }
        if outcome != Outcome::Ok && outcome != Outcome::Refused && kind.examples.len() < 5 {
            kind.examples.insert(format!("{outcome:?}: {detail}"));
        }
    }
}

/// One client: one request at a time, as a rotating user, on its replica, until the deadline.
async fn drive(run: Arc<Run>, client: usize) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed + client as u64);
    let total_weight: u32 = run.weights.iter().sum();
    let pinned = client % run.replicas.len();
    let mut turn = client;
    while Instant::now() < run.deadline {
        let user = turn % run.world.users.len();
        turn += 1;
        let mut pick = rng.random_range(0..total_weight.max(1));
        let kind = run
            .weights
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
        let begun = Instant::now();
        let (outcome, detail, replica) = run.send(kind, user, pinned, &mut rng).await;
        run.record(kind, outcome, detail, begun.elapsed(), replica);
    }
}

/// The resident memory of a server and of its agent workers.
#[derive(Debug, Clone, Copy, Default)]
struct Memory {
    server_kib: u64,
    workers_kib: u64,
    workers: usize,
}

impl Memory {
    fn of(pid: u32) -> Memory {
        let workers = children_of(pid);
        Memory {
            server_kib: rss_kib(pid).unwrap_or(0),
            workers_kib: workers.iter().filter_map(|child| rss_kib(*child)).sum(),
            workers: workers.len(),
        }
    }
}

#[derive(Debug, Clone)]
struct RssSample {
    seconds: f64,
    /// One per replica; zero once one is gone.
    replicas: Vec<Memory>,
}

/// CPU seconds used so far by a server and by each of its agent workers.
struct Cpu {
    server: f64,
    workers: HashMap<u32, f64>,
}

impl Cpu {
    fn of(pid: u32) -> Cpu {
        Cpu {
            server: cpu_seconds(pid).unwrap_or(0.0),
            workers: children_of(pid)
                .into_iter()
                .filter_map(|worker| Some((worker, cpu_seconds(worker)?)))
                .collect(),
        }
    }

    /// What was used since `before`: the server's time, and its workers' unless one of them exited (with a killed
    /// server), taking its time with it.
    fn since(&self, before: &Cpu) -> CpuUsed {
        let all_still_run = before
            .workers
            .keys()
            .all(|worker| self.workers.contains_key(worker));
        CpuUsed {
            server: self.server - before.server,
            workers: all_still_run.then(|| {
                // A fold from 0.0: `sum()` of no workers is -0.0, which prints as such.
                self.workers.iter().fold(0.0, |sum, (worker, now)| {
                    sum + now - before.workers.get(worker).unwrap_or(&0.0)
                })
            }),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct CpuUsed {
    server: f64,
    /// Unknown when a worker exited.
    workers: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    if options.users < 20 {
        bail!("--users must be at least 20");
    }
    if options.replicas == 0 {
        bail!("--replicas must be at least 1");
    }
    if options.replicas > 1 && options.database.is_none() {
        bail!(
            "--replicas above 1 needs --database: replicas share their metadata through PostgreSQL"
        );
    }
    if let Some(after) = options.kill_replica_after_secs {
        if options.replicas < 2 {
            bail!("--kill-replica-after-secs needs --replicas 2 or more");
        }
        if after >= options.duration_secs {
            bail!("--kill-replica-after-secs must be below --duration-secs");
        }
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
    let mut env = Vec::new();
    if let Some(database) = &options.database {
        env.push(("DEPUTY_DATABASE_URL", database.clone()));
    }
    // Replicas issue tokens for one public URL; it must reach a replica, since the agents call back at it.
    let balancer = match options.replicas {
        1 => None,
        _ => Some(Balancer::start().await?),
    };
    if let Some(balancer) = &balancer {
        env.push(("DEPUTY_PUBLIC_URL", balancer.url.clone()));
    }
    let first = Server::start(&deputy, &env).await?;
    println!(
        "server: {} pid {} data {} metadata on {} (binary {})",
        first.host,
        first.pid,
        first.data_dir().display(),
        options.database_kind(),
        deputy.display()
    );
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 2)
        .timeout(Duration::from_secs(120))
        .build()?;
    let admin = Api::new(&first.host, &first.admin_token, http.clone());
    let setup_started = Instant::now();
    let world = set_up(&first, &admin, &agent, &options).await?;
    println!(
        "setup: {} users, table with a row filter ({} rows), warehouse, vector index ({} vectors), agent with {} workers, obo on; {:.1} s",
        world.users.len(),
        world.note_owner.len(),
        options.vectors,
        options.agent_workers,
        setup_started.elapsed().as_secs_f64()
    );
    // The others start after the setup: a replica loads the vector indexes when it starts.
    let mut servers = vec![first];
    while servers.len() < options.replicas {
        let replica = servers[0].start_replica(&env).await?;
        println!(
            "replica: {} pid {} (log {})",
            replica.host,
            replica.pid,
            replica.log.display()
        );
        servers.push(replica);
    }
    if let Some(balancer) = &balancer {
        servers.iter().for_each(|server| balancer.add(server));
        println!(
            "public URL {} balances over {} replicas (the agents call back through it)",
            balancer.url,
            servers.len()
        );
    }

    let started = Instant::now();
    let warmup_end = started + Duration::from_secs(options.warmup_secs);
    let run = Arc::new(Run {
        world,
        replicas: servers.iter().map(Replica::new).collect(),
        http,
        weights: options.weights(),
        deadline: warmup_end + Duration::from_secs(options.duration_secs),
        measuring: AtomicBool::new(false),
        stats: Mutex::new(Stats::default()),
        written: Mutex::new(Vec::new()),
    });
    let samples = Arc::new(Mutex::new(Vec::<RssSample>::new()));
    let sampler = {
        let (samples, run, every) = (samples.clone(), run.clone(), options.rss_every_secs.max(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(every));
            while Instant::now() < run.deadline {
                tick.tick().await;
                let now = Instant::now();
                let seconds = if now < warmup_end {
                    -(warmup_end - now).as_secs_f64()
                } else {
                    (now - warmup_end).as_secs_f64()
                };
                let sample = RssSample {
                    seconds,
                    replicas: run
                        .replicas
                        .iter()
                        .map(|replica| Memory::of(replica.pid))
                        .collect(),
                };
                if let Ok(mut samples) = samples.lock() {
                    samples.push(sample);
                }
            }
        })
    };
    let clients: Vec<_> = (0..options.concurrency)
        .map(|client| tokio::spawn(drive(run.clone(), client)))
        .collect();
    let killer = options.kill_replica_after_secs.map(|after| {
        let run = run.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until((warmup_end + Duration::from_secs(after)).into()).await;
            let last = run.replicas.len() - 1;
            let victim = &run.replicas[last];
            victim.killed.store(true, Ordering::Relaxed);
            let killed = tokio::process::Command::new("kill")
                .args(["-KILL", &victim.pid.to_string()])
                .status()
                .await;
            let result = match killed {
                Ok(status) if status.success() => "done".to_owned(),
                Ok(status) => format!("`kill` failed ({status})"),
                Err(error) => format!("cannot run `kill`: {error}"),
            };
            println!(
                "  t={after:>5} s  SIGKILL replica {last} ({}, pid {}): {result}",
                victim.host, victim.pid
            );
        })
    });

    tokio::time::sleep_until(warmup_end.into()).await;
    let cpu_before: Vec<Cpu> = run
        .replicas
        .iter()
        .map(|replica| Cpu::of(replica.pid))
        .collect();
    let generator_cpu_before = cpu_seconds(std::process::id()).unwrap_or(0.0);
    run.measuring.store(true, Ordering::Relaxed);
    println!(
        "warm-up done ({} s); measuring for {} s with {} clients over {} replica(s) on {}, mix agent:sql:vector:write = {}:{}:{}:{}",
        options.warmup_secs,
        options.duration_secs,
        options.concurrency,
        options.replicas,
        options.database_kind(),
        options.agent_weight,
        options.sql_weight,
        options.vector_weight,
        options.write_weight
    );
    let mut last_total = 0;
    let mut last_time = Instant::now();
    while Instant::now() + Duration::from_secs(options.progress_every_secs) <= run.deadline {
        tokio::time::sleep(Duration::from_secs(options.progress_every_secs)).await;
        let (total, errors, lost, failures) = match run.stats.lock() {
            Ok(stats) => (
                stats.total(),
                stats.errors(),
                stats.lost_in_flight(),
                stats.isolation_failures(),
            ),
            Err(_) => (0, 0, 0, 0),
        };
        let rate = (total - last_total) as f64 / last_time.elapsed().as_secs_f64();
        last_total = total;
        last_time = Instant::now();
        let memory: Vec<String> = run
            .replicas
            .iter()
            .map(|replica| {
                let memory = Memory::of(replica.pid);
                format!("{}+{}", memory.server_kib / 1024, memory.workers_kib / 1024)
            })
            .collect();
        println!(
            "  t={:>5.0} s  {:>7.1} req/s  total {total}  errors {errors}  lost in flight {lost}  isolation failures {failures}  RSS server+workers MiB {}  load {}",
            warmup_end.elapsed().as_secs_f64(),
            rate,
            memory.join(", "),
            load_average()
        );
    }
    for client in clients {
        client.await?;
    }
    let measured = warmup_end.elapsed().as_secs_f64();
    sampler.abort();
    if let Some(killer) = killer {
        killer.await?;
    }
    let cpu_used: Vec<CpuUsed> = run
        .replicas
        .iter()
        .zip(&cpu_before)
        .map(|(replica, before)| Cpu::of(replica.pid).since(before))
        .collect();
    let generator_cpu = cpu_seconds(std::process::id()).unwrap_or(0.0) - generator_cpu_before;
    let alive: Vec<bool> = run
        .replicas
        .iter()
        .map(|replica| rss_kib(replica.pid).is_some())
        .collect();
    let audit = admin
        .call(Method::GET, "/api/2.0/deputy/audit?limit=1", None)
        .await
        .ok()
        .map(|reply| reply.status);
    let writes = check_writes(&admin, &run).await?;
    let stats = match run.stats.lock() {
        Ok(mut stats) => std::mem::take(&mut *stats),
        Err(_) => bail!("a client panicked while recording"),
    };
    let samples = samples
        .lock()
        .map(|samples| samples.clone())
        .unwrap_or_default();
    let summary = report(
        &options,
        &Measured {
            seconds: measured,
            stats: &stats,
            replicas: &run.replicas,
            alive: &alive,
            samples: &samples,
            cpu: &cpu_used,
            generator_cpu,
            writes: &writes,
        },
    );
    if audit != Some(200) {
        println!("after the run the server answered the audit route with {audit:?}");
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    // Replicas first: the first server removes the data directory they share.
    for server in servers.into_iter().rev() {
        server.stop().await?;
    }
    if stats.isolation_failures() > 0 || writes.wrong_owner > 0 {
        bail!(
            "{} isolation failures, {} tokens owned by someone other than their creator",
            stats.isolation_failures(),
            writes.wrong_owner
        );
    }
    if writes.missing > 0 {
        bail!("{} acknowledged writes lost", writes.missing);
    }
    Ok(())
}

/// What became of the acknowledged writes.
#[derive(Debug, Default)]
struct WriteCheck {
    /// How many each replica acknowledged.
    acknowledged: Vec<usize>,
    missing: usize,
    wrong_owner: usize,
}

/// Every token a server acknowledged must be listed afterwards (through the first server, never killed), owned by
/// the user who created it.
async fn check_writes(admin: &Api, run: &Run) -> anyhow::Result<WriteCheck> {
    let written = match run.written.lock() {
        Ok(mut written) => std::mem::take(&mut *written),
        Err(_) => bail!("a client panicked while writing"),
    };
    if written.is_empty() {
        return Ok(WriteCheck::default());
    }
    let listed = admin
        .ok(Method::GET, "/api/2.0/token-management/tokens", None)
        .await?;
    let owners: HashMap<&str, String> = listed["token_infos"]
        .as_array()
        .context("no token_infos in the token listing")?
        .iter()
        .filter_map(|info| Some((info["token_id"].as_str()?, info["owner_id"].to_string())))
        .collect();
    let mut check = WriteCheck {
        acknowledged: vec![0; run.replicas.len()],
        ..WriteCheck::default()
    };
    for write in &written {
        check.acknowledged[write.replica] += 1;
        match owners.get(write.token_id.as_str()) {
            None => check.missing += 1,
            Some(owner) if *owner != run.world.users[write.owner].id => check.wrong_owner += 1,
            Some(_) => {}
        }
    }
    Ok(check)
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
    for index in 0..options.users {
        let name = format!("load-user-{index:02}@example.com");
        let id = admin.create_user(&name).await?;
        let token = admin.token_for(&id, 24 * 3600).await?;
        users.push(User {
            name,
            id,
            token,
            // Two users in three read the table, one in five of them sees every row, half read the index: every
            // combination occurs among 20 users.
            reads_table: index % 3 != 2,
            auditor: index % 3 != 2 && index % 5 == 0,
            reads_index: index % 2 == 0,
        });
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
            .filter(|user| member(user))
            .map(|user| json!({ "value": user.id }))
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

/// What a request that got no HTTP answer came to: the replica refused the connection (nothing was sent), the
/// connection broke before the answer, or another failure (a timeout, say: an error).
fn no_answer(kind: &str, error: &anyhow::Error) -> (Outcome, String) {
    let outcome = match error.downcast_ref::<reqwest::Error>() {
        Some(error) if error.is_connect() => Outcome::NotConnected,
        Some(error) if error.is_timeout() => Outcome::Error,
        Some(_) => Outcome::Unanswered,
        None => Outcome::Error,
    };
    (outcome, format!("{kind}: {error:#}"))
}

/// A user creates a personal access token of their own (valid for an hour): the answer must carry its id and value.
/// The acknowledged ids are kept, to check after the run that none was lost.
async fn create_token(
    api: &Api,
    user: usize,
    replica: usize,
    written: &Mutex<Vec<Written>>,
) -> (Outcome, String) {
    let body = json!({ "lifetime_seconds": 3600, "comment": "deputy-load write" });
    let reply = match api
        .call(Method::POST, "/api/2.0/token/create", Some(&body))
        .await
    {
        Ok(reply) => reply,
        Err(error) => return no_answer("write", &error),
    };
    if reply.status != 200 {
        return (
            Outcome::Error,
            format!("write {}: {}", reply.status, short(&reply.body)),
        );
    }
    // The body holds a secret: never printed.
    let (Some(token_id), Some(_)) = (
        reply.body["token_info"]["token_id"].as_str(),
        reply.body["token_value"].as_str(),
    ) else {
        return (
            Outcome::Error,
            "write: an answer without token id or value".into(),
        );
    };
    if let Ok(mut written) = written.lock() {
        written.push(Written {
            token_id: token_id.to_owned(),
            owner: user,
            replica,
        });
    }
    (Outcome::Ok, String::new())
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
        Err(error) => return no_answer("agent", &error),
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
        Err(error) => return no_answer("sql", &error),
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
        Err(error) => return no_answer("vector", &error),
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

/// What the run measured, for the summary.
struct Measured<'a> {
    seconds: f64,
    stats: &'a Stats,
    replicas: &'a [Replica],
    /// Whether each replica was running at the end.
    alive: &'a [bool],
    samples: &'a [RssSample],
    /// CPU seconds each replica used while measuring.
    cpu: &'a [CpuUsed],
    /// CPU seconds this process (clients and balancer) used while measuring.
    generator_cpu: f64,
    writes: &'a WriteCheck,
}

/// Prints the summary and returns it as JSON.
fn report(options: &Options, measured: &Measured) -> Value {
    let seconds = measured.seconds;
    let stats = measured.stats;
    println!();
    println!(
        "measured {seconds:.1} s, {} clients, {} users, {} replica(s), metadata on {}; load average now {}",
        options.concurrency,
        options.users,
        options.replicas,
        options.database_kind(),
        load_average()
    );
    println!(
        "{:<8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7} {:>5} {:>10}",
        "kind",
        "requests",
        "req/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "refused",
        "errors",
        "lost",
        "isolation"
    );
    let mut kinds = serde_json::Map::new();
    let mut all = Latencies::new();
    for (name, kind) in KINDS.iter().zip(&stats.kinds) {
        let count = kind.latencies.count();
        all.add(&kind.latencies);
        println!(
            "{name:<8} {count:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8} {:>7} {:>5} {:>10}",
            count as f64 / seconds,
            kind.latencies.ms(0.5),
            kind.latencies.ms(0.9),
            kind.latencies.ms(0.99),
            kind.latencies.max_ms(),
            kind.refused,
            kind.errors,
            kind.lost_in_flight,
            kind.isolation_failures
        );
        kinds.insert(
            (*name).to_owned(),
            json!({
                "requests": count, "per_second": count as f64 / seconds,
                "p50_ms": kind.latencies.ms(0.5), "p90_ms": kind.latencies.ms(0.9),
                "p99_ms": kind.latencies.ms(0.99), "max_ms": kind.latencies.max_ms(),
                "refused_as_expected": kind.refused, "errors": kind.errors,
                "lost_in_flight": kind.lost_in_flight, "isolation_failures": kind.isolation_failures,
                "error_examples": kind.examples.iter().collect::<Vec<_>>(),
            }),
        );
    }
    println!(
        "{:<8} {:>9} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.1} {:>8} {:>7} {:>5} {:>10}",
        "all",
        all.count(),
        all.count() as f64 / seconds,
        all.ms(0.5),
        all.ms(0.9),
        all.ms(0.99),
        all.max_ms(),
        stats.kinds.iter().map(|kind| kind.refused).sum::<u64>(),
        stats.errors(),
        stats.lost_in_flight(),
        stats.isolation_failures()
    );
    for (name, kind) in KINDS.iter().zip(&stats.kinds) {
        for example in &kind.examples {
            println!("  {name}: {example}");
        }
    }

    let percent = |cpu: f64| 100.0 * cpu / seconds;
    let mut replicas = Vec::new();
    for (index, replica) in measured.replicas.iter().enumerate() {
        let served = replica.served.load(Ordering::Relaxed);
        let killed = replica.killed.load(Ordering::Relaxed);
        let state = match (killed, measured.alive[index]) {
            (true, _) => "killed",
            (false, true) => "alive",
            (false, false) => "GONE",
        };
        let cpu = measured.cpu[index];
        let workers = match cpu.workers {
            Some(workers) => format!("{workers:.1} s ({:.0}%)", percent(workers)),
            None => "unknown (some exited)".to_owned(),
        };
        println!(
            "replica {index} {} pid {}, {state} at the end: served {served} ({:.1} req/s); CPU server {:.1} s ({:.0}% of a core), agent workers {workers}",
            replica.host,
            replica.pid,
            served as f64 / seconds,
            cpu.server,
            percent(cpu.server),
        );
        let memory = memory_report(measured.samples, index, seconds);
        replicas.push(json!({
            "host": replica.host, "pid": replica.pid, "state": state,
            "served": served, "per_second": served as f64 / seconds,
            "cpu_seconds": { "server": cpu.server, "agent_workers": cpu.workers },
            "memory": memory,
        }));
    }
    println!(
        "load generator (clients{}) CPU {:.1} s ({:.0}% of a core)",
        if options.replicas > 1 {
            " and balancer"
        } else {
            ""
        },
        measured.generator_cpu,
        percent(measured.generator_cpu)
    );
    let writes = measured.writes;
    if options.write_weight > 0 {
        let by_replica: Vec<String> = writes.acknowledged.iter().map(usize::to_string).collect();
        println!(
            "writes: {} personal access tokens acknowledged (warm-up included; by replica {}); afterwards {} missing, {} with another owner",
            writes.acknowledged.iter().sum::<usize>(),
            by_replica.join(", "),
            writes.missing,
            writes.wrong_owner
        );
    }
    println!(
        "{} isolation failures, {} errors, {} lost in flight in {} requests",
        stats.isolation_failures(),
        stats.errors(),
        stats.lost_in_flight(),
        stats.total()
    );
    json!({
        "measured_seconds": seconds, "concurrency": options.concurrency, "users": options.users,
        "replicas": options.replicas, "database": options.database_kind(),
        "killed_replica_after_seconds": options.kill_replica_after_secs,
        "mix": {
            "agent": options.agent_weight, "sql": options.sql_weight,
            "vector": options.vector_weight, "write": options.write_weight,
        },
        "agent_workers": options.agent_workers,
        "requests": stats.total(), "per_second": stats.total() as f64 / seconds,
        "errors": stats.errors(), "lost_in_flight": stats.lost_in_flight(),
        "isolation_failures": stats.isolation_failures(),
        "writes": {
            "acknowledged_by_replica": writes.acknowledged,
            "missing": writes.missing, "wrong_owner": writes.wrong_owner,
        },
        "kinds": kinds, "per_replica": replicas,
        "load_generator_cpu_seconds": measured.generator_cpu, "load_average_end": load_average(),
    })
}

/// Prints the memory of one replica over the measured run and returns it as JSON. The baseline is the first sample
/// after the warm-up; the trend is a least-squares slope over the second half of the run, when caches and pools have
/// reached their size. A killed replica's figures end with its last sample alive.
fn memory_report(samples: &[RssSample], replica: usize, seconds: f64) -> Value {
    let measured: Vec<(f64, Memory)> = samples
        .iter()
        .filter(|sample| sample.seconds >= 0.0)
        .filter_map(|sample| Some((sample.seconds, *sample.replicas.get(replica)?)))
        .filter(|(_, memory)| memory.server_kib > 0)
        .collect();
    let (Some((_, first)), Some((last_seconds, last))) = (measured.first(), measured.last()) else {
        return Value::Null;
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let peak = measured
        .iter()
        .map(|(_, memory)| memory.server_kib)
        .max()
        .unwrap_or(0);
    let half: Vec<(f64, f64)> = measured
        .iter()
        .filter(|(at, _)| *at >= seconds / 2.0)
        .map(|(at, memory)| (*at, memory.server_kib as f64))
        .collect();
    let slope = slope_per_minute(&half) / 1024.0;
    println!(
        "  RSS {:.1} MiB after warm-up, {:.1} MiB at {last_seconds:.0} s, peak {:.1} MiB; second-half trend {slope:+.1} MiB/min; agent workers {} processes, {:.1} -> {:.1} MiB",
        mib(first.server_kib),
        mib(last.server_kib),
        mib(peak),
        last.workers,
        mib(first.workers_kib),
        mib(last.workers_kib)
    );
    let step = (measured.len() / 12).max(1);
    let timeline: Vec<String> = measured
        .iter()
        .step_by(step)
        .chain(measured.last())
        .map(|(at, memory)| format!("{at:.0}s:{:.1}", mib(memory.server_kib)))
        .collect();
    println!("  RSS over time (s: MiB): {}", timeline.join("  "));
    json!({
        "server_after_warmup_mib": mib(first.server_kib), "server_last_mib": mib(last.server_kib),
        "last_sample_seconds": last_seconds, "server_peak_mib": mib(peak),
        "second_half_slope_mib_per_min": slope,
        "workers_last_mib": mib(last.workers_kib), "workers": last.workers,
        "samples": measured.iter()
            .map(|(at, memory)| json!([at, memory.server_kib, memory.workers_kib]))
            .collect::<Vec<_>>(),
    })
}

/// Least-squares slope of `(seconds, value)` points, per minute.
fn slope_per_minute(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / n;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / n;
    let (mut covariance, mut variance) = (0.0, 0.0);
    for (x, y) in points {
        covariance += (x - mean_x) * (y - mean_y);
        variance += (x - mean_x).powi(2);
    }
    if variance == 0.0 {
        0.0
    } else {
        covariance / variance * 60.0
    }
}
