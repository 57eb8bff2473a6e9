//! Agent worker processes and the pool that hands each request to one of them.
//!
//! A worker is a child process speaking JSON lines on stdin/stdout: the Python runtime in
//! `python/deputy-agent-runtime`, or a Rust agent built on `deputy_sdk::agent::serve`. It announces itself with a
//! `ready` line, then handles **one request at a time**: that is what keeps one request's user token away from every
//! other request, since the token lives in the worker only while its request runs. A worker that dies or hangs is
//! killed and replaced on the next request; the server never waits on it past the request timeout.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// How a worker process is started.
#[derive(Debug, Clone)]
pub struct WorkerCommand {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The whole environment of the worker: the server's own is not inherited, so no credential of the server's
    /// leaks into agent code (and the SDK never sees two authentication methods at once).
    pub env: Vec<(String, String)>,
    pub working_dir: PathBuf,
    /// The worker's stderr (agent logs, tracebacks) is appended here.
    pub log_file: PathBuf,
}

/// One request as the worker receives it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRequest {
    pub id: String,
    pub stream: bool,
    pub payload: Value,
    /// The invoking user's downscoped token; `None` when on-behalf-of access is off.
    pub user_token: Option<String>,
    pub user_id: Option<String>,
}

/// What a worker writes back.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WorkerLine {
    Ready,
    Fatal {
        message: String,
    },
    Result {
        id: String,
        data: Value,
    },
    Chunk {
        id: String,
        data: Value,
    },
    Done {
        id: String,
    },
    Error {
        id: Option<String>,
        error_code: String,
        message: String,
    },
}

/// What the serving layer gets from a request: chunks for a streamed request, one result otherwise, or an error
/// (which ends a stream).
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerEvent {
    Chunk(Value),
    Result(Value),
    Error { error_code: String, message: String },
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("the agent could not be started: {0}")]
    Start(String),
    #[error("all of the agent's workers are busy")]
    Busy,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    async fn spawn(command: &WorkerCommand, startup: Duration) -> Result<Worker, WorkerError> {
        let start_error = |what: &str, error: &dyn std::fmt::Display| {
            WorkerError::Start(format!("{what}: {error}"))
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&command.log_file)
            .map_err(|error| start_error("cannot open the worker log", &error))?;
        let mut child = Command::new(&command.program)
            .args(&command.args)
            .env_clear()
            .envs(command.env.iter().map(|(key, value)| (key, value)))
            .current_dir(&command.working_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|error| {
                start_error(
                    &format!("cannot run `{}`", command.program.display()),
                    &error,
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(WorkerError::Start("the worker's pipes are missing".into()));
        };
        let mut worker = Worker {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        };
        match tokio::time::timeout(startup, worker.next_line()).await {
            Ok(Ok(WorkerLine::Ready)) => Ok(worker),
            Ok(Ok(WorkerLine::Fatal { message })) => Err(WorkerError::Start(message)),
            Ok(Ok(other)) => Err(WorkerError::Start(format!(
                "the worker spoke before it was ready: {other:?}"
            ))),
            Ok(Err(message)) => Err(WorkerError::Start(format!(
                "{message} (see {})",
                command.log_file.display()
            ))),
            Err(_) => Err(WorkerError::Start(format!(
                "the worker was not ready within {} s",
                startup.as_secs()
            ))),
        }
    }

    /// The next protocol line; `Err` when the worker exited or wrote something that is not the protocol.
    async fn next_line(&mut self) -> Result<WorkerLine, String> {
        match self.lines.next_line().await {
            Ok(Some(line)) => serde_json::from_str(&line)
                .map_err(|error| format!("the agent worker broke the protocol: {error}")),
            Ok(None) => Err("the agent worker exited".into()),
            Err(error) => Err(format!("cannot read from the agent worker: {error}")),
        }
    }

    async fn send(&mut self, request: &WorkerRequest) -> Result<(), String> {
        let mut line = serde_json::to_vec(request).map_err(|error| error.to_string())?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .map_err(|error| format!("the agent worker is gone: {error}"))?;
        self.stdin.flush().await.map_err(|error| error.to_string())
    }

    /// Runs one request to its end, forwarding events. Returns whether the worker can take another request.
    async fn run(&mut self, request: &WorkerRequest, events: &mpsc::Sender<WorkerEvent>) -> bool {
        if let Err(message) = self.send(request).await {
            let _ = events.send(crashed(message)).await;
            return false;
        }
        loop {
            let line = match self.next_line().await {
                Ok(line) => line,
                Err(message) => {
                    let _ = events.send(crashed(message)).await;
                    return false;
                }
            };
            // A client that went away does not stop the worker mid-answer: the answer is read to its end so the
            // next request starts on a clean line.
            match line {
                WorkerLine::Chunk { id, data } if id == request.id => {
                    let _ = events.send(WorkerEvent::Chunk(data)).await;
                }
                WorkerLine::Result { id, data } if id == request.id => {
                    let _ = events.send(WorkerEvent::Result(data)).await;
                    return true;
                }
                WorkerLine::Done { id } if id == request.id => return true,
                // A line the worker could not parse has no id; it still answers this request.
                WorkerLine::Error {
                    id,
                    error_code,
                    message,
                } if id.as_ref().is_none_or(|id| *id == request.id) => {
                    let _ = events
                        .send(WorkerEvent::Error {
                            error_code,
                            message,
                        })
                        .await;
                    return true;
                }
                other => {
                    let message = format!("the agent worker answered out of turn: {other:?}");
                    let _ = events.send(crashed(message)).await;
                    return false;
                }
            }
        }
    }
}

fn crashed(message: String) -> WorkerEvent {
    WorkerEvent::Error {
        error_code: "INTERNAL_ERROR".into(),
        message: format!("the agent failed: {message}; its worker is restarted"),
    }
}

/// A pool's workers at one moment: configured, running (a busy worker counts as running), busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolHealth {
    pub workers: usize,
    pub running: usize,
    pub busy: usize,
}

/// The workers of one endpoint. Idle slots hold a running worker or `None` (to be started on next use).
pub struct AgentPool {
    command: WorkerCommand,
    slots: usize,
    idle: Mutex<Vec<Option<Worker>>>,
    permits: Arc<Semaphore>,
    startup_timeout: Duration,
    request_timeout: Duration,
}

impl AgentPool {
    pub fn new(
        command: WorkerCommand,
        workers: usize,
        startup_timeout: Duration,
        request_timeout: Duration,
    ) -> AgentPool {
        let workers = workers.max(1);
        AgentPool {
            command,
            slots: workers,
            idle: Mutex::new((0..workers).map(|_| None).collect()),
            permits: Arc::new(Semaphore::new(workers)),
            startup_timeout,
            request_timeout,
        }
    }

    /// One of the pool's request slots: a worker serves one request at a time.
    async fn acquire_permit(&self) -> Result<OwnedSemaphorePermit, WorkerError> {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| WorkerError::Busy)
    }

    /// How many of the pool's workers are running (idle and ready, or serving a request) and how many are busy.
    pub fn health(&self) -> PoolHealth {
        let workers = self.slots;
        let busy = workers.saturating_sub(self.permits.available_permits());
        let idle_running = self
            .idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .filter(|slot| slot.is_some())
            .count();
        PoolHealth {
            workers,
            running: idle_running + busy,
            busy,
        }
    }

    /// Starts one worker now (instead of on the first request), so deploying reports a broken agent at once.
    pub async fn warm_up(&self) -> Result<(), WorkerError> {
        let permit = self.acquire_permit().await?;
        let mut slot = self.take_slot();
        if slot.is_none() {
            slot = Some(Worker::spawn(&self.command, self.startup_timeout).await?);
        }
        self.put_slot(slot);
        drop(permit);
        Ok(())
    }

    fn take_slot(&self) -> Option<Worker> {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .pop()
            .flatten()
    }

    fn put_slot(&self, slot: Option<Worker>) {
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(slot);
    }

    /// Hands the request to a free worker (waiting for one if all are busy) and returns its events as they come.
    pub async fn invoke(
        self: &Arc<Self>,
        request: WorkerRequest,
    ) -> Result<mpsc::Receiver<WorkerEvent>, WorkerError> {
        let permit = self.acquire_permit().await?;
        let mut worker = match self.take_slot() {
            Some(worker) => worker,
            None => match Worker::spawn(&self.command, self.startup_timeout).await {
                Ok(worker) => worker,
                Err(error) => {
                    self.put_slot(None);
                    return Err(error);
                }
            },
        };
        let (events, receiver) = mpsc::channel(64);
        let pool = self.clone();
        tokio::spawn(async move {
            let reusable =
                match tokio::time::timeout(pool.request_timeout, worker.run(&request, &events))
                    .await
                {
                    Ok(reusable) => reusable,
                    Err(_) => {
                        let message =
                            format!("no answer within {} s", pool.request_timeout.as_secs());
                        let _ = events.send(crashed(message)).await;
                        false
                    }
                };
            if reusable {
                pool.put_slot(Some(worker));
            } else {
                let _ = worker.child.start_kill();
                pool.put_slot(None);
            }
            drop(permit);
        });
        Ok(receiver)
    }
}
