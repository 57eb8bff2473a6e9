//! What the load generator and the on-behalf-of benchmark share: a real `deputy serve` started on a fresh data
//! directory on 127.0.0.1 (and stopped with it), replicas of it with a balancer in front, a small JSON client for the
//! public API, latency histograms, and the resident memory and CPU time of a process read from `/proc`.
//!
//! Everything here talks to loopback only; every loop that sends requests is bounded by a count or a deadline.

use anyhow::{Context, bail};
use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

/// Where the release binaries built next to the running one are (`target/release/`).
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
        .unwrap_or_default()
        .join(name)
}

/// The repository's root, as seen from this crate's sources.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A free TCP port on 127.0.0.1 (bound, read, released).
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A `deputy serve` this process started, on a data directory of its own; killed on drop, and its directory removed.
/// Replicas started with [`Server::start_replica`] use this server's data directory as their shared storage (drop
/// them first).
pub struct Server {
    pub host: String,
    pub admin_token: String,
    pub pid: u32,
    pub binary: PathBuf,
    /// Where the server's output goes: `server.log` in its data directory.
    pub log: PathBuf,
    address: SocketAddr,
    // Declared before the data directory, so the server is killed before its directory goes.
    child: Child,
    data_dir: tempfile::TempDir,
}

impl Server {
    /// Starts `binary serve` on a fresh data directory and a free port of 127.0.0.1 with `env` added, and waits
    /// for `/healthz`.
    pub async fn start(binary: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        if !binary.is_file() {
            bail!(
                "no deputy binary at `{}`: build it with `cargo build --release -p deputy` or pass --deputy",
                binary.display()
            );
        }
        Server::spawn(binary, env).await
    }

    /// Starts another `deputy serve` on a data directory of its own and a free port, with this server's data
    /// directory as its shared storage (tables, vector indexes, agents), and waits for `/healthz`: a replica, when
    /// `env` names the same database and public URL as this server's.
    pub async fn start_replica(&self, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let mut env = env.to_vec();
        env.push(("DEPUTY_STORAGE_DIR", self.data_dir().display().to_string()));
        Server::spawn(&self.binary, &env).await
    }

    async fn spawn(binary: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        let data_dir = tempfile::Builder::new().prefix("deputy-load-").tempdir()?;
        let port = free_port()?;
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        let host = format!("http://{address}");
        let directory = data_dir.path().to_owned();
        let log_path = directory.join("server.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(&directory)
            .arg("--listen")
            .arg(address.to_string())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(key, value)| (key, value)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run `{}`", binary.display()))?;
        let pid = child.id().context("the server exited at once")?;
        let healthz = format!("{host}/healthz");
        let http = reqwest::Client::new();
        if !answers_within(
            &http,
            &healthz,
            Duration::from_secs(60),
            Duration::from_millis(100),
        )
        .await
        {
            bail!(
                "the server did not answer /healthz within 60 s (log: {})",
                log_path.display()
            );
        }
        let admin_token = std::fs::read_to_string(directory.join("admin-token"))?
            .trim()
            .to_owned();
        Ok(Server {
            host,
            admin_token,
            pid,
            binary: binary.to_path_buf(),
            log: log_path,
            address,
            child,
            data_dir,
        })
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    /// Runs a `deputy` client command against this server as the admin, e.g. `["agents", "deploy", ...]`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let output = Command::new(&self.binary)
            .args(args)
            .env("DATABRICKS_HOST", &self.host)
            .env("DATABRICKS_TOKEN", &self.admin_token)
            .stdin(Stdio::null())
            .output()
            .await?;
        if !output.status.success() {
            bail!(
                "`deputy {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// A round-robin TCP balancer on 127.0.0.1 in front of replicas, as a load balancer would be: each connection goes
/// to the next replica that accepts it, so a killed one is skipped. Replicas that run agents need such an address as
/// their public URL, since their agents call back at it; it starts before them, and each is added once it is up.
pub struct Balancer {
    pub url: String,
    backends: Arc<Mutex<Vec<SocketAddr>>>,
    accepting: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start() -> anyhow::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let backends = Arc::new(Mutex::new(Vec::new()));
        let accepting = tokio::spawn(balance(listener, backends.clone()));
        Ok(Balancer {
            url,
            backends,
            accepting,
        })
    }

    pub fn add(&self, server: &Server) {
        if let Ok(mut backends) = self.backends.lock() {
            backends.push(server.address);
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

async fn balance(listener: TcpListener, backends: Arc<Mutex<Vec<SocketAddr>>>) {
    let mut turn = 0;
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            // Out of file descriptors, say: try again later rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let mut candidates = backends
            .lock()
            .map(|backends| backends.clone())
            .unwrap_or_default();
        if !candidates.is_empty() {
            let first = turn % candidates.len();
            candidates.rotate_left(first);
        }
        turn += 1;
        tokio::spawn(async move {
            for backend in candidates {
                if let Ok(mut server) = TcpStream::connect(backend).await {
                    // Small requests and answers, each written at once: no Nagle delay on either leg.
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

/// The answer to one API call: status and JSON body (`Value::Null` when the body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
}

/// A JSON client for one host and one bearer token.
#[derive(Clone)]
pub struct Api {
    pub host: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(host: &str, token: &str, http: reqwest::Client) -> Api {
        Api {
            host: host.to_owned(),
            token: token.to_owned(),
            http,
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api::new(&self.host, token, self.http.clone())
    }

    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Reply> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.host))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply { status, body })
    }

    /// A call that must succeed (2xx); its body.
    pub async fn ok(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let reply = self.call(method.clone(), path, body).await?;
        if !(200..300).contains(&reply.status) {
            bail!("{method} {path} answered {}: {}", reply.status, reply.body);
        }
        Ok(reply.body)
    }

    pub async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.ok(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates a user and returns its SCIM id.
    pub async fn create_user(&self, name: &str) -> anyhow::Result<String> {
        let user = self
            .post(
                "/api/2.0/preview/scim/v2/Users",
                &serde_json::json!({ "userName": name }),
            )
            .await?;
        user["id"]
            .as_str()
            .map(str::to_owned)
            .context("the created user has no id")
    }

    /// An admin-made personal access token for a principal (all of its scopes).
    pub async fn token_for(
        &self,
        principal_id: &str,
        lifetime_seconds: u64,
    ) -> anyhow::Result<String> {
        let token = self
            .post(
                "/api/2.0/token-management/on-behalf-of/tokens",
                &serde_json::json!({ "application_id": principal_id, "lifetime_seconds": lifetime_seconds }),
            )
            .await?;
        token["token_value"]
            .as_str()
            .map(str::to_owned)
            .context("no token_value in the answer")
    }

    /// Runs one SQL statement on a warehouse and waits for it; its answer (`status.state` is SUCCEEDED or FAILED).
    pub async fn sql(&self, warehouse: &str, statement: &str) -> anyhow::Result<Reply> {
        let reply = self
            .call(
                reqwest::Method::POST,
                "/api/2.0/sql/statements",
                Some(&serde_json::json!({
                    "statement": statement, "warehouse_id": warehouse, "wait_timeout": "30s",
                })),
            )
            .await?;
        if reply.status != 200 {
            return Ok(reply);
        }
        let mut reply = reply;
        let deadline = Instant::now() + Duration::from_secs(120);
        while matches!(
            reply.body["status"]["state"].as_str(),
            Some("PENDING" | "RUNNING")
        ) {
            if Instant::now() > deadline {
                bail!("statement still running after 120 s: {statement}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            let id = reply.body["statement_id"]
                .as_str()
                .context("no statement_id")?
                .to_owned();
            reply = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/2.0/sql/statements/{id}"),
                    None,
                )
                .await?;
        }
        Ok(reply)
    }

    /// A SQL statement that must succeed.
    pub async fn sql_ok(&self, warehouse: &str, statement: &str) -> anyhow::Result<Value> {
        let reply = self.sql(warehouse, statement).await?;
        if reply.body["status"]["state"] != "SUCCEEDED" {
            bail!("`{statement}` failed ({}): {}", reply.status, reply.body);
        }
        Ok(reply.body)
    }
}

/// Latencies in microseconds, 1 µs to 10 minutes, 3 significant digits.
pub struct Latencies(hdrhistogram::Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Latencies::new()
    }
}

impl Latencies {
    pub fn new() -> Latencies {
        // Constant bounds and precision that hdrhistogram accepts: the error arm is never taken.
        match hdrhistogram::Histogram::new_with_bounds(1, 600_000_000, 3) {
            Ok(histogram) => Latencies(histogram),
            Err(error) => panic!("hdrhistogram refused constant bounds: {error}"),
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.0.saturating_record(micros);
    }

    pub fn add(&mut self, other: &Latencies) {
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The latency at `quantile` (0.5, 0.99, ...) in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.0.value_at_quantile(quantile) as f64 / 1000.0
    }

    pub fn max_ms(&self) -> f64 {
        self.0.max() as f64 / 1000.0
    }

    pub fn mean_ms(&self) -> f64 {
        self.0.mean() / 1000.0
    }
}

/// `VmRSS` of a process in KiB, from `/proc/PID/status`.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// The fields of `/proc/PID/stat` after `pid (comm)` (comm may hold spaces, so they are read after the last `)`):
/// state, ppid, ...
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The ids of the direct children of `pid` (the server's agent workers), from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            stat_fields(*child).and_then(|fields| fields.get(1)?.parse::<u32>().ok()) == Some(pid)
        })
        .collect()
}

/// The CPU time (user and system) a process has used so far, in seconds, from `/proc/PID/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let fields = stat_fields(pid)?;
    let ticks = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // utime and stime, in clock ticks: Linux reports them at USER_HZ = 100 per second on every architecture.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// The one-minute load average, to print next to figures measured on a shared machine.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The median of some figures (of interleaved rounds).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Whether `url` answers a GET with a success status within `limit`, asked every `every` (each try bounded to 2 s):
/// how the benchmarks wait for a server they started.
pub async fn answers_within(
    http: &reqwest::Client,
    url: &str,
    limit: Duration,
    every: Duration,
) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let up = http
            .get(url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success());
        if up {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(every).await;
    }
}
