//! What the on-behalf-of path costs: the same trivial agent invoked directly through the worker protocol (this
//! process speaks JSON lines to a worker it started, no server), and through a real release `deputy serve`
//! (authenticate, authorize, token exchange, audit, worker round trip) with on-behalf-of access on and off; for a
//! Rust agent and a Python MLflow ChatAgent, and the same ChatAgent under `mlflow models serve`.
//!
//! Latency is one request at a time (p50/p99); throughput is `--concurrency` clients for `--throughput-secs`, with
//! as many workers. The sides run interleaved, `--rounds` times, so a burst of load from elsewhere on the machine
//! lands on all of them; the report gives the median over rounds.
//!
//! ```sh
//! scripts/bench-obo.sh                       # builds, makes the MLflow venv if needed, runs this
//! target/release/deputy-obo-bench --rounds 5 --requests 2000 --mlflow-python /path/to/venv/bin/python
//! ```

use anyhow::{Context, bail};
use clap::Parser;
use deputy_load::{
    Api, Latencies, Server, answers_within, free_port, load_average, median, repository_root,
    sibling_binary,
};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

#[derive(Parser, Debug)]
#[command(about = "Latency the on-behalf-of path adds over invoking the agent's worker directly")]
struct Options {
    /// The release `deputy` binary (default: next to this one).
    #[arg(long)]
    deputy: Option<PathBuf>,
    /// The trivial Rust agent (default: `trivial-agent` next to this one).
    #[arg(long)]
    rust_agent: Option<PathBuf>,
    /// Sequential requests per side and round (after a warm-up of 200).
    #[arg(long, default_value_t = 2000)]
    requests: usize,
    /// Interleaved rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Concurrent clients (and workers per side) for throughput.
    #[arg(long, default_value_t = 2)]
    concurrency: usize,
    /// Seconds of throughput measurement per side and round.
    #[arg(long, default_value_t = 5)]
    throughput_secs: u64,
    /// Python with the agent runtime's requirements, for Deputy's workers and the direct Python worker (default:
    /// `$DEPUTY_AGENT_PYTHON`, else `~/.cache/deputy/test-venv/bin/python`). Empty: skip the Python sides.
    #[arg(long, env = "DEPUTY_AGENT_PYTHON")]
    agent_python: Option<String>,
    /// Python with the full `mlflow` (for `mlflow models serve` and to save the model directory). Without it the
    /// MLflow side is skipped and the Python agent is the models-from-code file.
    #[arg(long, env = "DEPUTY_BENCH_MLFLOW_PYTHON")]
    mlflow_python: Option<PathBuf>,
    /// uvicorn workers of `mlflow models serve` (default: `--concurrency`, as many as Deputy's workers).
    #[arg(long)]
    mlflow_workers: Option<usize>,
    /// The trivial ChatAgent (models-from-code file).
    #[arg(long)]
    python_agent: Option<PathBuf>,
    /// Also write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

const USER: &str = "obo-bench@example.com";
const WARMUP: usize = 200;

/// A worker process this benchmark started and speaks the protocol with, as Deputy's supervisor does.
struct DirectWorker {
    /// Held so the worker is killed when this is dropped (`kill_on_drop`).
    _child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    next_id: u64,
    user_token: String,
    expected: String,
}

impl DirectWorker {
    async fn spawn(
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        dir: &Path,
        expected: &str,
    ) -> anyhow::Result<DirectWorker> {
        let mut child = Command::new(program)
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(key, value)| (key, value)))
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot run `{}`", program.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the worker's pipes are missing");
        };
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(180), lines.next_line())
            .await
            .context("the worker was not ready within 180 s")??
            .context("the worker exited before it was ready")?;
        let ready: Value = serde_json::from_str(&ready)?;
        if ready["type"] != "ready" {
            bail!("the worker did not start: {ready}");
        }
        Ok(DirectWorker {
            _child: child,
            stdin,
            lines,
            next_id: 0,
            // The size of a real on-behalf-of token; its content does not matter to a trivial agent.
            user_token: format!("eyJ{}", "a".repeat(700)),
            expected: expected.to_owned(),
        })
    }

    async fn invoke(&mut self) -> anyhow::Result<()> {
        self.next_id += 1;
        let id = format!("direct-{}", self.next_id);
        let mut line = serde_json::to_vec(&json!({
            "id": id, "stream": false,
            "payload": { "messages": [{ "role": "user", "content": "hi" }] },
            "user_token": self.user_token, "user_id": USER,
        }))?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        self.stdin.flush().await?;
        let reply = self.lines.next_line().await?.context("the worker exited")?;
        let reply: Value = serde_json::from_str(&reply)?;
        if reply["type"] != "result" || reply["id"] != id.as_str() {
            bail!("unexpected worker answer: {reply}");
        }
        check_content(&reply["data"], &self.expected)
    }
}

fn check_content(answer: &Value, expected: &str) -> anyhow::Result<()> {
    let content = answer["messages"]
        .as_array()
        .and_then(|messages| messages.last())
        .and_then(|message| message["content"].as_str());
    if content != Some(expected) {
        bail!("expected `{expected}`, got {answer}");
    }
    Ok(())
}

/// One client of one side.
enum Target {
    Direct(Box<DirectWorker>),
    Http {
        http: reqwest::Client,
        url: String,
        token: Option<String>,
        expected: String,
    },
}

impl Target {
    async fn invoke(&mut self) -> anyhow::Result<()> {
        match self {
            Target::Direct(worker) => worker.invoke().await,
            Target::Http {
                http,
                url,
                token,
                expected,
            } => {
                let mut request = http
                    .post(url.as_str())
                    .json(&json!({ "messages": [{ "role": "user", "content": "hi" }] }));
                if let Some(token) = token {
                    request = request.bearer_auth(token);
                }
                let response = request.send().await?;
                let status = response.status();
                let body: Value = response.json().await?;
                if !status.is_success() {
                    bail!("{url} answered {status}: {body}");
                }
                check_content(&body, expected)
            }
        }
    }
}

/// One thing measured: a way to invoke the trivial agent, with whether Deputy's on-behalf-of switch must be on.
struct Side {
    name: &'static str,
    obo: Option<bool>,
    targets: Vec<Target>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
    all: Latencies,
}

impl Side {
    fn new(name: &'static str, obo: Option<bool>, targets: Vec<Target>) -> Side {
        Side {
            name,
            obo,
            targets,
            p50: Vec::new(),
            p99: Vec::new(),
            rate: Vec::new(),
            all: Latencies::new(),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let deputy = options
        .deputy
        .clone()
        .unwrap_or_else(|| sibling_binary("deputy"));
    let rust_agent = options
        .rust_agent
        .clone()
        .unwrap_or_else(|| sibling_binary("trivial-agent"));
    if !rust_agent.is_file() {
        bail!(
            "no trivial agent at `{}`: `cargo build --release -p deputy-load`",
            rust_agent.display()
        );
    }
    let agent_python = options.agent_python.clone().or_else(|| {
        let default = std::env::var_os("HOME")
            .map(|home| Path::new(&home).join(".cache/deputy/test-venv/bin/python"))?;
        default.is_file().then(|| default.display().to_string())
    });
    let agent_python = agent_python.filter(|python| !python.is_empty());
    let runtime_dir = repository_root().join("python/deputy-agent-runtime");
    let python_agent = options
        .python_agent
        .clone()
        .unwrap_or_else(|| runtime_dir.join("tests/agents/trivial_chat_agent.py"));
    let scratch = tempfile::Builder::new()
        .prefix("deputy-obo-bench-")
        .tempdir()?;

    // The Python agent: an MLflow model directory saved by the real mlflow when it is there (both Deputy and
    // `mlflow models serve` then host the very same directory), else the models-from-code file.
    let mut python_model = python_agent.clone();
    if agent_python.is_some()
        && let Some(mlflow_python) = &options.mlflow_python
    {
        let dir = scratch.path().join("trivial-model");
        let status = Command::new(mlflow_python)
            .arg("-c")
            .arg("import sys, mlflow; mlflow.pyfunc.save_model(path=sys.argv[1], python_model=sys.argv[2])")
            .arg(&dir)
            .arg(&python_agent)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await?;
        if !status.success() {
            bail!(
                "cannot save the MLflow model with `{}`",
                mlflow_python.display()
            );
        }
        python_model = dir;
    }

    let mut server_env = vec![];
    if let Some(python) = &agent_python {
        server_env.push(("DEPUTY_AGENT_PYTHON", python.clone()));
    }
    let server = Server::start(&deputy, &server_env).await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency * 4)
        // One write per request even if the body goes out apart from the headers (no Nagle wait on the server's
        // delayed ACK).
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(60))
        .build()?;
    let admin = Api::new(&server.host, &server.admin_token, http.clone());
    let user_id = admin.create_user(USER).await?;
    let user_token = admin.token_for(&user_id, 24 * 3600).await?;
    let workers = options.concurrency.to_string();
    let admin_ref = &admin;
    let deploy = |path: String, name: &'static str| {
        let (server, workers, admin) = (&server, workers.clone(), admin_ref);
        async move {
            server
                .cli(&[
                    "agents",
                    "deploy",
                    &path,
                    "--name",
                    name,
                    "--user-scope",
                    "iam.scim",
                    "--workers",
                    &workers,
                ])
                .await?;
            let endpoint = admin
                .ok(
                    Method::GET,
                    &format!("/api/2.0/serving-endpoints/{name}"),
                    None,
                )
                .await?;
            let id = endpoint["id"]
                .as_str()
                .context("no endpoint id")?
                .to_owned();
            admin
                .ok(
                    Method::PATCH,
                    &format!("/api/2.0/permissions/serving-endpoints/{id}"),
                    Some(&json!({ "access_control_list": [{ "user_name": USER, "permission_level": "CAN_QUERY" }] })),
                )
                .await?;
            anyhow::Ok(())
        }
    };
    let http_targets = |name: &str, expected: &str| -> Vec<Target> {
        (0..options.concurrency)
            .map(|_| Target::Http {
                http: http.clone(),
                url: format!("{}/serving-endpoints/{name}/invocations", server.host),
                token: Some(user_token.clone()),
                expected: expected.to_owned(),
            })
            .collect()
    };

    let credentials = scratch.path().join("credentials");
    std::fs::create_dir_all(&credentials)?;
    std::fs::write(
        credentials.join("model-dependencies-oauth-token"),
        json!({ "OAUTH_TOKEN": [{ "oauthTokenValue": "system-token-of-the-direct-worker" }] })
            .to_string(),
    )?;
    let mut worker_env = vec![
        ("IS_IN_DB_MODEL_SERVING_ENV".to_owned(), "true".to_owned()),
        (
            "DATABRICKS_MODEL_SERVING_HOST_URL".to_owned(),
            "http://127.0.0.1:9".to_owned(),
        ),
        (
            "SERVING_CREDENTIALS_DIR".to_owned(),
            credentials.display().to_string(),
        ),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ("PYTHONPATH".to_owned(), runtime_dir.display().to_string()),
        ("HOME".to_owned(), scratch.path().display().to_string()),
    ];
    for key in ["PATH", "LANG", "LC_ALL", "TZ"] {
        if let Ok(value) = std::env::var(key) {
            worker_env.push((key.to_owned(), value));
        }
    }

    let rust_expected = format!("ok {USER}");
    let mut sides = Vec::new();
    let mut direct = Vec::new();
    for _ in 0..options.concurrency {
        let worker = DirectWorker::spawn(
            &rust_agent,
            &[],
            &worker_env,
            scratch.path(),
            &rust_expected,
        )
        .await?;
        direct.push(Target::Direct(Box::new(worker)));
    }
    sides.push(Side::new("rust: worker directly", None, direct));
    deploy(rust_agent.display().to_string(), "rust-trivial").await?;
    sides.push(Side::new(
        "rust: deputy, obo on",
        Some(true),
        http_targets("rust-trivial", &rust_expected),
    ));
    sides.push(Side::new(
        "rust: deputy, obo off",
        Some(false),
        http_targets("rust-trivial", &rust_expected),
    ));

    let mut mlflow: Option<Child> = None;
    if let Some(python) = &agent_python {
        let mut direct = Vec::new();
        let args = [
            "-m".to_owned(),
            "deputy_agent_runtime".to_owned(),
            "--model".to_owned(),
            python_model.display().to_string(),
        ];
        for _ in 0..options.concurrency {
            let worker =
                DirectWorker::spawn(Path::new(python), &args, &worker_env, scratch.path(), "ok")
                    .await?;
            direct.push(Target::Direct(Box::new(worker)));
        }
        sides.push(Side::new("python: worker directly", None, direct));
        deploy(python_model.display().to_string(), "py-trivial").await?;
        sides.push(Side::new(
            "python: deputy, obo on",
            Some(true),
            http_targets("py-trivial", "ok"),
        ));
        sides.push(Side::new(
            "python: deputy, obo off",
            Some(false),
            http_targets("py-trivial", "ok"),
        ));
        if let Some(mlflow_python) = &options.mlflow_python {
            let (child, url) = start_mlflow(
                mlflow_python,
                &python_model,
                options.mlflow_workers.unwrap_or(options.concurrency),
                &http,
            )
            .await?;
            mlflow = Some(child);
            let targets = (0..options.concurrency)
                .map(|_| Target::Http {
                    http: http.clone(),
                    url: url.clone(),
                    token: None,
                    expected: "ok".into(),
                })
                .collect();
            sides.push(Side::new("python: mlflow models serve", None, targets));
        }
    } else {
        println!("no Python for the agent runtime (--agent-python): the Python sides are skipped");
    }

    let mut obo_state = None;
    println!(
        "server {} (binary {}), {} sequential requests per side and round after {WARMUP} warm-up, {} rounds, throughput with {} clients for {} s",
        server.host,
        deputy.display(),
        options.requests,
        options.rounds,
        options.concurrency,
        options.throughput_secs
    );
    let result = run_rounds(&options, &admin, &mut sides, &mut obo_state).await;
    if let Some(child) = mlflow.take() {
        stop_group(child).await;
    }
    result?;
    let summary = report(&sides);
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)?)?;
    }
    server.stop().await?;
    Ok(())
}

async fn run_rounds(
    options: &Options,
    admin: &Api,
    sides: &mut [Side],
    obo_state: &mut Option<bool>,
) -> anyhow::Result<()> {
    for round in 0..options.rounds {
        println!("round {} (load average {})", round + 1, load_average());
        for side in sides.iter_mut() {
            if let Some(obo) = side.obo
                && *obo_state != Some(obo)
            {
                admin
                    .ok(
                        Method::PATCH,
                        "/api/2.0/deputy/settings",
                        Some(&json!({ "obo-enabled": obo })),
                    )
                    .await?;
                *obo_state = Some(obo);
            }
            let Some(first) = side.targets.first_mut() else {
                continue;
            };
            for _ in 0..WARMUP {
                first.invoke().await?;
            }
            let mut latencies = Latencies::new();
            for _ in 0..options.requests {
                let started = Instant::now();
                first.invoke().await?;
                latencies.record(started.elapsed());
            }
            let targets = std::mem::take(&mut side.targets);
            // Untimed first: a pool starts its further workers only when requests overlap, and a Python worker
            // takes seconds to start.
            let (targets, _, _) = throughput(targets, 2).await?;
            let (targets, count, elapsed) = throughput(targets, options.throughput_secs).await?;
            side.targets = targets;
            let rate = count as f64 / elapsed;
            println!(
                "  {:<28} p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>7.2} ms   {:>7.0} /s ({} clients)",
                side.name,
                latencies.ms(0.5),
                latencies.ms(0.99),
                latencies.max_ms(),
                rate,
                options.concurrency
            );
            side.p50.push(latencies.ms(0.5));
            side.p99.push(latencies.ms(0.99));
            side.rate.push(rate);
            side.all.add(&latencies);
        }
    }
    Ok(())
}

/// Every target invokes in a loop of its own until the deadline; the number done and the seconds it took.
async fn throughput(targets: Vec<Target>, seconds: u64) -> anyhow::Result<(Vec<Target>, u64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = targets
        .into_iter()
        .map(|mut target| {
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    target.invoke().await?;
                    done += 1;
                }
                anyhow::Ok((target, done))
            })
        })
        .collect();
    let mut targets = Vec::new();
    let mut total = 0;
    for task in tasks {
        let (target, done) = task.await??;
        targets.push(target);
        total += done;
    }
    Ok((targets, total, started.elapsed().as_secs_f64()))
}

/// `mlflow models serve` on a free port of 127.0.0.1, in a process group of its own (it runs uvicorn under a
/// shell), ready when `/ping` answers.
async fn start_mlflow(
    python: &Path,
    model: &Path,
    workers: usize,
    http: &reqwest::Client,
) -> anyhow::Result<(Child, String)> {
    let port = free_port()?;
    let bin = python.parent().map(Path::to_path_buf).unwrap_or_default();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let child = Command::new(python)
        .args(["-m", "mlflow", "models", "serve", "-m"])
        .arg(model)
        .args(["--env-manager", "local", "-h", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg("-w")
        .arg(workers.to_string())
        .env("PATH", path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start mlflow models serve")?;
    let base = format!("http://127.0.0.1:{port}");
    let ping = format!("{base}/ping");
    if !answers_within(
        http,
        &ping,
        Duration::from_secs(180),
        Duration::from_millis(200),
    )
    .await
    {
        stop_group(child).await;
        bail!("mlflow models serve did not answer /ping within 180 s");
    }
    Ok((child, format!("{base}/invocations")))
}

/// Stops a process group this benchmark started (by its id), then reaps its leader.
async fn stop_group(mut child: Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill")
            .args(["-TERM", "--", &format!("-{pid}")])
            .status()
            .await;
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .status()
                .await;
        }
    }
    let _ = child.kill().await;
}

fn report(sides: &[Side]) -> Value {
    println!();
    println!(
        "median over rounds (ms; throughput in invocations/s), load average now {}",
        load_average()
    );
    println!(
        "{:<30} {:>9} {:>9} {:>10} {:>10} {:>9}",
        "side", "p50", "p99", "p99 all", "max all", "per s"
    );
    let mut rows = serde_json::Map::new();
    for side in sides {
        println!(
            "{:<30} {:>9.3} {:>9.3} {:>10.3} {:>10.2} {:>9.0}",
            side.name,
            median(&side.p50),
            median(&side.p99),
            side.all.ms(0.99),
            side.all.max_ms(),
            median(&side.rate)
        );
        rows.insert(
            side.name.to_owned(),
            json!({
                "p50_ms_median": median(&side.p50), "p99_ms_median": median(&side.p99),
                "p50_ms_rounds": side.p50, "p99_ms_rounds": side.p99, "per_second_rounds": side.rate,
                "per_second_median": median(&side.rate), "p99_ms_all": side.all.ms(0.99),
                "max_ms_all": side.all.max_ms(), "requests": side.all.count(),
            }),
        );
    }
    let find = |name: &str| sides.iter().find(|side| side.name == name);
    let mut differences = serde_json::Map::new();
    for (label, a, b) in [
        (
            "rust: on-behalf-of path over the worker",
            "rust: deputy, obo on",
            "rust: worker directly",
        ),
        (
            "rust: exchange + audit alone (obo on - off)",
            "rust: deputy, obo on",
            "rust: deputy, obo off",
        ),
        (
            "python: on-behalf-of path over the worker",
            "python: deputy, obo on",
            "python: worker directly",
        ),
        (
            "python: exchange + audit alone (obo on - off)",
            "python: deputy, obo on",
            "python: deputy, obo off",
        ),
        (
            "python: deputy (obo on) - mlflow models serve",
            "python: deputy, obo on",
            "python: mlflow models serve",
        ),
    ] {
        let (Some(a), Some(b)) = (find(a), find(b)) else {
            continue;
        };
        // Per round, then the median: both sides of a difference ran in the same round.
        let per_round = |x: &[f64], y: &[f64]| -> f64 {
            median(&x.iter().zip(y).map(|(x, y)| x - y).collect::<Vec<_>>())
        };
        let (p50, p99) = (per_round(&a.p50, &b.p50), per_round(&a.p99, &b.p99));
        let rate = median(&a.rate) / median(&b.rate);
        println!("{label:<48} adds p50 {p50:+.3} ms, p99 {p99:+.3} ms; throughput ratio {rate:.2}");
        differences.insert(
            label.to_owned(),
            json!({ "p50_ms": p50, "p99_ms": p99, "throughput_ratio": rate }),
        );
    }
    json!({ "sides": rows, "differences": differences, "load_average_end": load_average() })
}
