//! Rust agents served by Deputy: implement [`ChatAgent`] and call [`serve`] from `main`.
//!
//! Deputy runs the binary as a worker process and speaks JSON lines with it on stdin/stdout (the protocol of the
//! Python runtime in `python/deputy-agent-runtime`): one `ready` line at start, then one request at a time, each
//! answered by a `result` (or `chunk`s and `done`) or an `error`. Each request brings the invoking user's
//! downscoped token, reachable only through that request's [`RequestContext`]; the endpoint's own (system) token is
//! in the file Deputy keeps fresh under `$SERVING_CREDENTIALS_DIR`.

use crate::{Credentials, WorkspaceClient};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::future::Future;
use std::io::Write;
use tokio::io::AsyncBufReadExt;

/// A chat message as MLflow's `ChatAgentMessage` has it; fields this crate does not model are kept in `extra`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatAgentMessage {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

impl ChatAgentMessage {
    /// An assistant message with a fresh id (MLflow requires ids on response messages).
    pub fn assistant(content: impl Into<String>) -> ChatAgentMessage {
        ChatAgentMessage {
            role: "assistant".into(),
            content: Some(content.into()),
            id: Some(format!("msg-{}", fresh_id())),
            extra: serde_json::Map::new(),
        }
    }
}

fn fresh_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatAgentRequest {
    pub messages: Vec<ChatAgentMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_inputs: Option<Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatAgentResponse {
    pub messages: Vec<ChatAgentMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_outputs: Option<Value>,
}

/// What one request knows: who invoked it and the credentials it may use.
pub struct RequestContext {
    pub request_id: String,
    /// The invoking user, as authenticated by Deputy (never what the client claimed).
    pub user_id: Option<String>,
    user_token: Option<String>,
    host: String,
    /// The worker's one HTTP client, shared by every request's workspace clients.
    http: reqwest::Client,
}

impl std::fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestContext")
            .field("request_id", &self.request_id)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

/// Why an agent could not answer. The message goes back to the caller.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    BadRequest(String),
    #[error("on-behalf-of-user access is off: this request carries no user credentials")]
    NoUserCredentials,
    #[error("{0}")]
    Failed(String),
}

impl AgentError {
    fn code(&self) -> &'static str {
        match self {
            AgentError::BadRequest(_) => "BAD_REQUEST",
            AgentError::NoUserCredentials | AgentError::Failed(_) => "INTERNAL_ERROR",
        }
    }
}

impl From<crate::ApiError> for AgentError {
    fn from(error: crate::ApiError) -> AgentError {
        AgentError::Failed(error.to_string())
    }
}

impl RequestContext {
    /// A client acting as the invoking user, with the token Deputy downscoped to the agent's declared scopes
    /// (the serving-user credential strategy). Fails when on-behalf-of access is off, as on Databricks.
    pub fn user_client(&self) -> Result<WorkspaceClient, AgentError> {
        let token = self
            .user_token
            .clone()
            .ok_or(AgentError::NoUserCredentials)?;
        Ok(WorkspaceClient::with_http_client(
            &self.host,
            Credentials::Token(token),
            self.http.clone(),
        ))
    }

    /// A client acting as the endpoint's own service principal (the serving-system strategy).
    pub fn system_client(&self) -> WorkspaceClient {
        WorkspaceClient::with_http_client(
            &self.host,
            Credentials::serving_system(),
            self.http.clone(),
        )
    }
}

/// A chat agent. One request at a time per worker process; Deputy runs several workers for concurrency.
pub trait ChatAgent: Send + Sync {
    fn predict(
        &self,
        request: ChatAgentRequest,
        context: &RequestContext,
    ) -> impl Future<Output = Result<ChatAgentResponse, AgentError>> + Send;
}

#[derive(Deserialize)]
struct WorkerRequest {
    id: String,
    #[serde(default)]
    stream: bool,
    payload: Value,
    user_token: Option<String>,
    user_id: Option<String>,
}

/// Runs the agent as a Deputy worker until stdin closes. Call it from `main` inside a tokio runtime. Stdin, when it
/// is a pipe (as Deputy starts workers), is made non-blocking: hand it to no child process.
pub async fn serve<A: ChatAgent>(agent: A) -> std::io::Result<()> {
    let host = std::env::var("DATABRICKS_MODEL_SERVING_HOST_URL").unwrap_or_default();
    let http = crate::new_http_client();
    write_line(&json!({ "type": "ready", "flavor": "chat_agent", "runtime": "deputy-sdk" }))?;
    let mut lines = tokio::io::BufReader::new(requests_from_stdin()?).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let request: WorkerRequest = match serde_json::from_str(&line) {
            Ok(request) => request,
            Err(error) => {
                write_line(&error_line(
                    None,
                    &AgentError::BadRequest(error.to_string()),
                ))?;
                continue;
            }
        };
        let context = RequestContext {
            request_id: request.id.clone(),
            user_id: request.user_id,
            user_token: request.user_token,
            host: host.clone(),
            http: http.clone(),
        };
        let answer = match serde_json::from_value::<ChatAgentRequest>(request.payload) {
            Ok(chat) => agent.predict(chat, &context).await,
            Err(error) => Err(AgentError::BadRequest(format!(
                "not a ChatAgent request: {error}"
            ))),
        };
        // The context (and the user's token in it) ends with the request.
        drop(context);
        match answer {
            Ok(response) if request.stream => {
                for message in response.messages {
                    let chunk = json!({ "delta": message });
                    write_line(&json!({ "id": request.id, "type": "chunk", "data": chunk }))?;
                }
                write_line(&json!({ "id": request.id, "type": "done" }))?;
            }
            Ok(response) => {
                write_line(&json!({ "id": request.id, "type": "result", "data": response }))?;
            }
            Err(error) => write_line(&error_line(Some(&request.id), &error))?,
        }
    }
    Ok(())
}

/// Stdin as the runtime reads it. Deputy hands a worker a pipe, which is read through the runtime's event loop:
/// tokio's own `stdin()` reads on a blocking-pool thread, which puts a hand-off between two threads (and their
/// wake-ups) in every request. Anything else (a file, a terminal) is read that way all the same.
fn requests_from_stdin() -> std::io::Result<Box<dyn tokio::io::AsyncRead + Unpin + Send>> {
    use std::os::fd::AsFd;
    let stdin = std::io::stdin().as_fd().try_clone_to_owned()?;
    match tokio::net::unix::pipe::Receiver::from_owned_fd(stdin) {
        Ok(pipe) => Ok(Box::new(pipe)),
        Err(_) => Ok(Box::new(tokio::io::stdin())),
    }
}

fn error_line(id: Option<&str>, error: &AgentError) -> Value {
    json!({ "id": id, "type": "error", "error_code": error.code(), "message": error.to_string() })
}

fn write_line(value: &Value) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, value)?;
    stdout.write_all(b"\n")?;
    stdout.flush()
}
