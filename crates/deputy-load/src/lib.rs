//! What the load generator and the on-behalf-of benchmark share: a real `deputy serve` started on a fresh data
//! directory on 127.0.0.1 (and stopped with it), a small JSON client for the public API, latency histograms, and the
//! resident memory of a process read from `/proc`.
//!
//! Everything here talks to loopback only; every loop that sends requests is bounded by a count or a deadline.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
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

/// A `deputy serve` this process started on a fresh data directory; killed (and the directory removed) on drop.
pub struct Server {
    pub host: String,
    pub admin_token: String,
    pub pid: u32,
    pub data_dir: tempfile::TempDir,
    pub binary: PathBuf,
    child: Child,
}

impl Server {
    /// Starts `binary serve` on a free port of 127.0.0.1 with `env` added, and waits for `/healthz`.
    pub async fn start(binary: &Path, env: &[(&str, String)]) -> anyhow::Result<Server> {
        if !binary.is_file() {
            bail!(
                "no deputy binary at `{}`: build it with `cargo build --release -p deputy` or pass --deputy",
                binary.display()
            );
        }
        let data_dir = tempfile::Builder::new().prefix("deputy-load-").tempdir()?;
        let port = free_port()?;
        let host = format!("http://127.0.0.1:{port}");
        let log = std::fs::File::create(data_dir.path().join("server.log"))?;
        let child = Command::new(binary)
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir.path())
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
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
                data_dir.path().join("server.log").display()
            );
        }
        let admin_token = std::fs::read_to_string(data_dir.path().join("admin-token"))?
            .trim()
            .to_owned();
        Ok(Server {
            host,
            admin_token,
            pid,
            data_dir,
            binary: binary.to_path_buf(),
            child,
        })
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

/// The ids of the direct children of `pid` (the server's agent workers), from `/proc/*/stat`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|stat| {
                    // `pid (comm) state ppid ...`: comm may hold spaces, so read after the last `)`.
                    let rest = &stat[stat.rfind(')')? + 1..];
                    rest.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(pid)
        })
        .collect()
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
