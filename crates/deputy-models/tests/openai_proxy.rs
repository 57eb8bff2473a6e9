//! The external-model backend against an OpenAI-compatible server written here (axum on 127.0.0.1:0). The server's
//! behaviour is chosen by the `model` name the backend sends, so each test configures the backend with one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use deputy_models::types::{ChatCompletionRequest, EmbeddingInput, EmbeddingRequest};
use deputy_models::{ModelBackend, ModelError, OpenAiCompatible, OpenAiConfig, SecretString};
use futures_util::StreamExt;
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789-secret";

#[derive(Default)]
struct Upstream {
    /// Calls per model name.
    calls: Mutex<HashMap<String, u32>>,
    /// The `Authorization` header of every call.
    authorizations: Mutex<Vec<String>>,
}

impl Upstream {
    fn record(&self, headers: &HeaderMap, body: &Value) -> (String, u32) {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        self.authorizations.lock().unwrap().push(authorization);
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        let mut calls = self.calls.lock().unwrap();
        let count = calls.entry(model.clone()).or_default();
        *count += 1;
        (model, *count)
    }

    fn calls(&self, model: &str) -> u32 {
        self.calls.lock().unwrap().get(model).copied().unwrap_or(0)
    }
}

fn completion(content: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "upstream-model",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}
    })
}

fn sse_chunk(delta: Value, finish_reason: Value) -> String {
    let chunk = json!({
        "id": "chatcmpl-2", "object": "chat.completion.chunk", "created": 1, "model": "upstream-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
    });
    format!("data: {chunk}\n\n")
}

async fn chat_completions(
    State(upstream): State<Arc<Upstream>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let (model, call) = upstream.record(&headers, &body);
    match model.as_str() {
        "canned" => {
            // The proxy must forward what it does not interpret.
            assert_eq!(body["response_format"], json!({"type": "text"}));
            assert_eq!(body["max_tokens"], 7);
            Json(completion("Hello there")).into_response()
        }
        "flaky" if call == 1 => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, "0")],
            Json(json!({"error": {"message": "rate limited"}})),
        )
            .into_response(),
        "flaky" => Json(completion("after retry")).into_response(),
        // A provider that echoes the key it refused, as some do.
        "broken" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": format!("boom; key was {KEY}")}})),
        )
            .into_response(),
        "unauthorized" => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": format!("Incorrect API key provided: {KEY}")}})),
        )
            .into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            Json(completion("too late")).into_response()
        }
        "stream" => {
            assert_eq!(body["stream"], true);
            let events = [
                ": comment lines are ignored\n\n".to_owned(),
                sse_chunk(json!({"role": "assistant", "content": ""}), Value::Null),
                sse_chunk(json!({"content": "Hel"}), Value::Null),
                sse_chunk(json!({"content": "lo"}), Value::Null),
                sse_chunk(json!({}), json!("stop")),
                "data: [DONE]\n\n".to_owned(),
            ]
            .concat();
            // Split the body at awkward places so events straddle network chunks.
            let bytes = events.into_bytes();
            let parts: Vec<Result<Vec<u8>, Infallible>> =
                bytes.chunks(37).map(|part| Ok(part.to_vec())).collect();
            Response::builder()
                .header(header::CONTENT_TYPE, "text/event-stream")
                .body(Body::from_stream(futures_util::stream::iter(parts)))
                .unwrap()
        }
        other => (StatusCode::NOT_FOUND, format!("no model {other}")).into_response(),
    }
}

async fn embeddings(
    State(upstream): State<Arc<Upstream>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    upstream.record(&headers, &body);
    let inputs: Vec<Value> = match &body["input"] {
        Value::String(_) => vec![body["input"].clone()],
        Value::Array(items) => items.clone(),
        _ => return (StatusCode::BAD_REQUEST, "bad input").into_response(),
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, _)| json!({"object": "embedding", "index": index, "embedding": [index as f32, 0.5]}))
        .collect();
    Json(json!({"object": "list", "data": data, "model": "upstream-embed"})).into_response()
}

async fn start_upstream() -> (SocketAddr, Arc<Upstream>) {
    let upstream = Arc::new(Upstream::default());
    let app = axum::Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (address, upstream)
}

fn backend(address: SocketAddr, model: &str) -> OpenAiCompatible {
    let mut config = OpenAiConfig::new(format!("http://{address}/v1/"), model)
        .with_api_key(SecretString::new(KEY));
    config.timeout = Duration::from_millis(500);
    config.retry_backoff = Duration::from_millis(10);
    OpenAiCompatible::new(config).unwrap()
}

fn chat_request() -> ChatCompletionRequest {
    let mut request: ChatCompletionRequest = serde_json::from_value(json!({
        "model": "my-endpoint",
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "text"}
    }))
    .unwrap();
    request.max_tokens = Some(7);
    request
}

/// Every way an error is shown: `Display`, `Debug`, and the Databricks code.
fn shown(error: &ModelError) -> String {
    format!("{error} {error:?} {}", error.error_code())
}

#[tokio::test]
async fn chat_is_proxied_with_the_key_and_the_endpoints_model() {
    let (address, upstream) = start_upstream().await;
    let response = backend(address, "canned")
        .chat(chat_request())
        .await
        .unwrap();
    assert_eq!(response.choices[0].message.content, "Hello there");
    assert_eq!(response.usage.unwrap().total_tokens, 7);
    assert_eq!(upstream.calls("canned"), 1);
    assert_eq!(
        *upstream.authorizations.lock().unwrap(),
        [format!("Bearer {KEY}")]
    );
}

#[tokio::test]
async fn streaming_parses_the_upstream_sse_into_chunks() {
    let (address, _) = start_upstream().await;
    let stream = backend(address, "stream")
        .chat_stream(chat_request())
        .await
        .unwrap();
    let chunks: Vec<_> = stream.map(|chunk| chunk.unwrap()).collect().await;
    assert_eq!(chunks.len(), 4);
    assert_eq!(
        chunks[0].choices[0].delta.role.as_deref(),
        Some("assistant")
    );
    let text: String = chunks
        .iter()
        .filter_map(|chunk| chunk.choices[0].delta.content.clone())
        .collect();
    assert_eq!(text, "Hello");
    assert_eq!(chunks[3].choices[0].finish_reason.as_deref(), Some("stop"));
}

#[tokio::test]
async fn rate_limits_are_retried() {
    let (address, upstream) = start_upstream().await;
    let response = backend(address, "flaky")
        .chat(chat_request())
        .await
        .unwrap();
    assert_eq!(response.choices[0].message.content, "after retry");
    assert_eq!(upstream.calls("flaky"), 2);
}

#[tokio::test]
async fn server_errors_are_retried_then_mapped_without_the_key() {
    let (address, upstream) = start_upstream().await;
    let error = backend(address, "broken")
        .chat(chat_request())
        .await
        .unwrap_err();
    // One attempt and the default two retries.
    assert_eq!(upstream.calls("broken"), 3);
    assert_eq!(error.upstream_status(), Some(500));
    assert_eq!(
        (error.error_code(), error.http_status()),
        ("TEMPORARILY_UNAVAILABLE", 503)
    );
    let shown = shown(&error);
    assert!(
        shown.contains("HTTP 500") && shown.contains("boom"),
        "{shown}"
    );
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn a_refused_key_is_not_retried_and_not_echoed() {
    let (address, upstream) = start_upstream().await;
    let error = backend(address, "unauthorized")
        .chat(chat_request())
        .await
        .unwrap_err();
    assert_eq!(upstream.calls("unauthorized"), 1);
    assert_eq!(
        (error.error_code(), error.http_status()),
        ("PERMISSION_DENIED", 403)
    );
    let shown = shown(&error);
    assert!(
        shown.contains("Incorrect API key provided: <redacted>"),
        "{shown}"
    );
    assert!(!shown.contains(KEY), "{shown}");
}

#[tokio::test]
async fn a_slow_upstream_times_out() {
    let (address, _) = start_upstream().await;
    let error = backend(address, "slow")
        .chat(chat_request())
        .await
        .unwrap_err();
    assert_eq!(error, ModelError::Timeout(Duration::from_millis(500)));
    assert_eq!(error.error_code(), "DEADLINE_EXCEEDED");
}

#[tokio::test]
async fn an_unreachable_upstream_is_unavailable_after_retries() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let error = backend(address, "canned")
        .chat(chat_request())
        .await
        .unwrap_err();
    assert!(matches!(error, ModelError::Unavailable(_)), "{error:?}");
    assert_eq!(error.http_status(), 503);
    assert!(!shown(&error).contains(KEY));
}

#[tokio::test]
async fn embeddings_are_proxied_for_one_input_or_many() {
    let (address, upstream) = start_upstream().await;
    let backend = backend(address, "embedder");
    let one = backend
        .embeddings(EmbeddingRequest::new(EmbeddingInput::One("a".into())))
        .await
        .unwrap();
    assert_eq!(one.data.len(), 1);
    let many = backend
        .embeddings(EmbeddingRequest::new(EmbeddingInput::Many(vec![
            "a".into(),
            "b".into(),
        ])))
        .await
        .unwrap();
    assert_eq!(many.data[1].embedding, [1.0, 0.5]);
    assert_eq!(upstream.calls("embedder"), 2);
}

#[test]
fn the_key_never_appears_in_debug_output() {
    let config =
        OpenAiConfig::new("http://127.0.0.1:1/v1", "gpt").with_api_key(SecretString::new(KEY));
    let backend = OpenAiCompatible::new(config.clone()).unwrap();
    for shown in [
        format!("{config:?}"),
        format!("{config:#?}"),
        format!("{backend:?}"),
    ] {
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
