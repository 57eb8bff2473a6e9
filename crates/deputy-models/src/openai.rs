//! The external-model backend: a proxy to any OpenAI-compatible provider (OpenAI, vLLM, Ollama, llama.cpp server).
//!
//! Requests are forwarded with the endpoint's own model name and key; retryable failures (429 and 5xx answers,
//! refused connections) are retried with bounded exponential backoff, honouring `Retry-After`; streaming responses
//! are parsed from the upstream's SSE `data:` lines into chunks as they arrive.

use std::collections::VecDeque;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, Response, StatusCode};
use serde::Serialize;
use serde_json::Value;

use crate::backend::{ChatStream, ModelBackend};
use crate::error::ModelError;
use crate::secret::SecretString;
use crate::types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingRequest,
    EmbeddingResponse,
};

/// The longest wait between two attempts, whatever the backoff or the upstream's `Retry-After` asks for: a caller
/// waiting on a serving endpoint is better served by an error than by a minute of silence.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);
/// Upstream error messages are cut to this many characters; some providers answer errors with whole HTML pages.
const MAX_UPSTREAM_MESSAGE_CHARS: usize = 1000;

/// Where and how to reach an OpenAI-compatible provider. `Debug` shows everything but the key.
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root, including the version segment: `https://api.openai.com/v1`, `http://127.0.0.1:11434/v1`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer ...`; local servers such as Ollama need none.
    pub api_key: Option<SecretString>,
    /// The provider's model name, which replaces the caller's `model` (the endpoint name).
    pub model: String,
    /// The limit for one attempt to get an answer; when streaming, also the longest silence between two events.
    pub timeout: Duration,
    /// Attempts after the first one for retryable failures.
    pub max_retries: u32,
    /// The first retry delay; each further retry doubles it, up to [`MAX_RETRY_DELAY`].
    pub retry_backoff: Duration,
}

impl OpenAiConfig {
    /// A config with a 60 s timeout and two retries starting at 250 ms.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>) -> OpenAiConfig {
        OpenAiConfig {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            timeout: Duration::from_secs(60),
            max_retries: 2,
            retry_backoff: Duration::from_millis(250),
        }
    }

    pub fn with_api_key(mut self, api_key: SecretString) -> OpenAiConfig {
        self.api_key = Some(api_key);
        self
    }
}

/// A [`ModelBackend`] that proxies to an OpenAI-compatible provider.
#[derive(Debug, Clone)]
pub struct OpenAiCompatible {
    config: OpenAiConfig,
    client: Client,
}

impl OpenAiCompatible {
    pub fn new(config: OpenAiConfig) -> Result<OpenAiCompatible, ModelError> {
        let client = deputy_outbound::client_builder()
            .map_err(|error| ModelError::Unavailable(error.to_string()))?
            .connect_timeout(config.timeout)
            .build()
            .map_err(|error| {
                ModelError::Unavailable(format!("cannot build the HTTP client: {error}"))
            })?;
        Ok(OpenAiCompatible { config, client })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.config.base_url.trim_end_matches('/'))
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) => key.redact_from(text),
            None => text.to_owned(),
        }
    }

    /// POSTs `body` until it succeeds, fails for good, or the retries run out. Only the response head is awaited
    /// under the timeout; the caller reads the body.
    async fn post(&self, path: &str, body: &impl Serialize) -> Result<Response, ModelError> {
        let url = self.url(path);
        let mut attempt = 0;
        loop {
            let mut request = self.client.post(&url).json(body);
            if let Some(key) = &self.config.api_key {
                request = request.bearer_auth(key.expose());
            }
            let (error, retry_after) =
                match tokio::time::timeout(self.config.timeout, request.send()).await {
                    Err(_) => return Err(ModelError::Timeout(self.config.timeout)),
                    Ok(Ok(response)) if response.status().is_success() => return Ok(response),
                    Ok(Ok(response)) => {
                        let retry_after = retry_after(&response);
                        (self.upstream_error(response).await, retry_after)
                    }
                    Ok(Err(error)) if error.is_connect() => (
                        ModelError::Unavailable(self.redact(&error.to_string())),
                        None,
                    ),
                    Ok(Err(error)) => {
                        return Err(ModelError::Unavailable(self.redact(&error.to_string())));
                    }
                };
            let retryable = match &error {
                ModelError::Upstream { status, .. } => *status == 429 || *status >= 500,
                ModelError::Unavailable(_) => true,
                _ => false,
            };
            if !retryable || attempt >= self.config.max_retries {
                return Err(error);
            }
            let backoff = self
                .config
                .retry_backoff
                .saturating_mul(2u32.saturating_pow(attempt));
            let delay = retry_after.unwrap_or(backoff).min(MAX_RETRY_DELAY);
            tracing::debug!(%url, attempt, ?delay, %error, "retrying upstream model call");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// The error for a non-success answer: its status and the provider's message, without the key.
    async fn upstream_error(&self, response: Response) -> ModelError {
        let status = response.status();
        let body = tokio::time::timeout(self.config.timeout, response.text())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
        ModelError::Upstream {
            status: status.as_u16(),
            message: self.redact(&upstream_message(status, &body)),
        }
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        response: Response,
    ) -> Result<T, ModelError> {
        let bytes = tokio::time::timeout(self.config.timeout, response.bytes())
            .await
            .map_err(|_| ModelError::Timeout(self.config.timeout))?
            .map_err(|error| ModelError::Unavailable(self.redact(&error.to_string())))?;
        serde_json::from_slice(&bytes).map_err(|error| {
            ModelError::Unavailable(format!("unreadable upstream response: {error}"))
        })
    }
}

#[async_trait]
impl ModelBackend for OpenAiCompatible {
    async fn chat(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, ModelError> {
        request.model = Some(self.config.model.clone());
        request.stream = None;
        let response = self.post("chat/completions", &request).await?;
        self.read_json(response).await
    }

    async fn chat_stream(
        &self,
        mut request: ChatCompletionRequest,
    ) -> Result<ChatStream, ModelError> {
        request.model = Some(self.config.model.clone());
        request.stream = Some(true);
        let response = self.post("chat/completions", &request).await?;
        let state = StreamState {
            bytes: Box::pin(response.bytes_stream()),
            decoder: SseDecoder::default(),
            pending: VecDeque::new(),
            idle_timeout: self.config.timeout,
            finished: false,
        };
        Ok(Box::pin(futures_util::stream::unfold(state, next_chunk)))
    }

    async fn embeddings(
        &self,
        mut request: EmbeddingRequest,
    ) -> Result<EmbeddingResponse, ModelError> {
        request.model = Some(self.config.model.clone());
        let response = self.post("embeddings", &request).await?;
        self.read_json(response).await
    }
}

fn retry_after(response: &Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds))
}

/// The human part of an upstream error body: OpenAI's `{"error": {"message"}}`, Ollama's `{"error": "..."}`, a bare
/// `{"message"}`, or the text itself.
fn upstream_message(status: StatusCode, body: &str) -> String {
    let json: Option<Value> = serde_json::from_str(body).ok();
    let from_json = json.as_ref().and_then(|json| {
        json.pointer("/error/message")
            .or_else(|| json.get("error"))
            .or_else(|| json.get("message"))
            .and_then(Value::as_str)
    });
    let message = match from_json {
        Some(message) => message.trim(),
        None if body.trim().is_empty() => status.canonical_reason().unwrap_or("no message"),
        None => body.trim(),
    };
    message.chars().take(MAX_UPSTREAM_MESSAGE_CHARS).collect()
}

/// The unfold state of a streamed response. Generic over the byte stream so reqwest's chunk type need not be named.
struct StreamState<S> {
    bytes: S,
    decoder: SseDecoder,
    pending: VecDeque<Result<ChatCompletionChunk, ModelError>>,
    idle_timeout: Duration,
    finished: bool,
}

async fn next_chunk<S, B>(
    mut state: StreamState<S>,
) -> Option<(Result<ChatCompletionChunk, ModelError>, StreamState<S>)>
where
    S: futures_util::Stream<Item = reqwest::Result<B>> + Unpin,
    B: AsRef<[u8]>,
{
    loop {
        if let Some(item) = state.pending.pop_front() {
            return Some((item, state));
        }
        if state.finished {
            return None;
        }
        match tokio::time::timeout(state.idle_timeout, state.bytes.next()).await {
            Err(_) => {
                state.finished = true;
                state
                    .pending
                    .push_back(Err(ModelError::Timeout(state.idle_timeout)));
            }
            Ok(None) => {
                state.finished = true;
                state.pending.extend(state.decoder.finish());
            }
            Ok(Some(Err(error))) => {
                state.finished = true;
                state.pending.push_back(Err(ModelError::Unavailable(format!(
                    "upstream stream broke: {error}"
                ))));
            }
            Ok(Some(Ok(bytes))) => {
                state.pending.extend(state.decoder.push(bytes.as_ref()));
                if state.decoder.done {
                    state.finished = true;
                }
            }
        }
    }
}

/// Splits an SSE byte stream into `data:` payloads and parses them as chunks. Comments, `event:` and `id:` lines are
/// skipped; `data: [DONE]` ends the stream; an `{"error": ...}` payload becomes an error that ends it too.
#[derive(Debug, Default)]
struct SseDecoder {
    buffer: Vec<u8>,
    done: bool,
}

impl SseDecoder {
    fn push(&mut self, bytes: &[u8]) -> Vec<Result<ChatCompletionChunk, ModelError>> {
        self.buffer.extend_from_slice(bytes);
        let mut items = Vec::new();
        while let Some(end) = self.buffer.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=end).collect();
            if self.done {
                continue;
            }
            if let Some(item) = self.line(&line) {
                let failed = item.is_err();
                items.push(item);
                if failed {
                    self.done = true;
                }
            }
        }
        items
    }

    /// The last line, when the upstream closed without a final newline.
    fn finish(&mut self) -> Vec<Result<ChatCompletionChunk, ModelError>> {
        let rest = std::mem::take(&mut self.buffer);
        if self.done {
            return Vec::new();
        }
        self.done = true;
        self.line(&rest).into_iter().collect()
    }

    fn line(&mut self, line: &[u8]) -> Option<Result<ChatCompletionChunk, ModelError>> {
        let line = String::from_utf8_lossy(line);
        let data = line
            .trim_end_matches(['\r', '\n'])
            .strip_prefix("data:")?
            .trim_start();
        if data == "[DONE]" {
            self.done = true;
            return None;
        }
        let value: Value = match serde_json::from_str(data) {
            Ok(value) => value,
            Err(error) => {
                return Some(Err(ModelError::Unavailable(format!(
                    "unreadable stream event: {error}"
                ))));
            }
        };
        if value.get("error").is_some() {
            let message = upstream_message(StatusCode::INTERNAL_SERVER_ERROR, data);
            return Some(Err(ModelError::Unavailable(format!(
                "upstream error in stream: {message}"
            ))));
        }
        Some(
            serde_json::from_value(value).map_err(|error| {
                ModelError::Unavailable(format!("unreadable stream event: {error}"))
            }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk_json(content: &str) -> String {
        format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":0,"delta":{{"content":"{content}"}},"finish_reason":null}}]}}"#
        )
    }

    #[test]
    fn decoder_handles_split_lines_comments_and_done() {
        let mut decoder = SseDecoder::default();
        let text = format!(
            ": keep-alive\r\ndata: {}\r\n\r\ndata: {}\n\ndata: [DONE]\n\ndata: {}\n",
            chunk_json("a"),
            chunk_json("b"),
            chunk_json("ignored")
        );
        let (first, second) = text.as_bytes().split_at(40);
        let mut items = decoder.push(first);
        items.extend(decoder.push(second));
        items.extend(decoder.finish());
        let contents: Vec<String> = items
            .into_iter()
            .map(|item| item.unwrap().choices[0].delta.content.clone().unwrap())
            .collect();
        assert_eq!(contents, ["a", "b"]);
        assert!(decoder.done);
    }

    #[test]
    fn decoder_turns_error_events_into_errors() {
        let mut decoder = SseDecoder::default();
        let items = decoder.push(b"data: {\"error\": {\"message\": \"overloaded\"}}\n");
        assert!(
            matches!(&items[..], [Err(ModelError::Unavailable(message))] if message.contains("overloaded"))
        );
        assert!(decoder.done);
    }

    #[test]
    fn upstream_messages_from_common_shapes() {
        let status = StatusCode::BAD_REQUEST;
        assert_eq!(
            upstream_message(status, r#"{"error":{"message":"bad model"}}"#),
            "bad model"
        );
        assert_eq!(
            upstream_message(status, r#"{"error":"no such model"}"#),
            "no such model"
        );
        assert_eq!(upstream_message(status, "plain text"), "plain text");
        assert_eq!(upstream_message(status, ""), "Bad Request");
        assert_eq!(
            upstream_message(status, &"x".repeat(5000)).len(),
            MAX_UPSTREAM_MESSAGE_CHARS
        );
    }
}
