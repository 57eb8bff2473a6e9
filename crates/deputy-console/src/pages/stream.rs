//! Streamed answers, for the playground's script: the question goes to the agent with `stream: true` (as the
//! person, like every call), and the answer so far is relayed to the browser as server-sent events while the agent
//! writes it. When the agent finishes, the question and the whole answer are recorded in the conversation and the
//! last event names the conversation's page, which shows the answer with what ran for it. Without the script, the
//! same forms post to the plain routes in `agents` and the page appears when the answer is complete.

use crate::api::encode;
use crate::pages::agents::{
    asked, conversation_so_far, create_conversation, forget_conversation, history_messages,
    record_exchange,
};
use crate::{ConsoleError, ConsoleState, SignedIn};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use serde_json::{Value, json};

pub fn routes() -> Router<ConsoleState> {
    Router::new()
        .route("/console/agents/{name}/stream", post(start))
        .route("/console/conversations/{id}/stream", post(follow_up))
}

async fn start(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let question = asked(&state, &signed_in, &headers, &body)?;
    let id = create_conversation(&signed_in.api(), &name, &question).await?;
    Ok(relay(signed_in, id, name, Vec::new(), question, true).await)
}

async fn follow_up(
    State(state): State<ConsoleState>,
    signed_in: SignedIn,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let question = asked(&state, &signed_in, &headers, &body)?;
    let (name, history) = conversation_so_far(&signed_in.api(), &id).await?;
    Ok(relay(signed_in, id, name, history, question, false).await)
}

/// The answer as it arrives: messages by id (a ChatAgent streams deltas of several messages; the last is the
/// answer), and the sources once the agent names them.
#[derive(Default)]
struct Answer {
    messages: Vec<(Option<String>, String)>,
    sources: Vec<String>,
}

impl Answer {
    /// Takes one chunk of the agent's stream; `Err` is the agent's error.
    fn take(&mut self, chunk: &Value) -> Result<(), String> {
        if let Some(code) = chunk["error_code"].as_str() {
            return Err(chunk["message"].as_str().unwrap_or(code).to_owned());
        }
        let delta = &chunk["delta"];
        let (id, text) = match delta.is_object() {
            true => (
                delta["id"].as_str().map(str::to_owned),
                delta["content"].as_str(),
            ),
            false => (None, chunk["choices"][0]["delta"]["content"].as_str()),
        };
        if let Some(text) = text {
            match self.messages.last_mut() {
                Some((last, answer)) if *last == id => answer.push_str(text),
                _ => self.messages.push((id, text.to_owned())),
            }
        }
        if let Some(sources) = chunk["custom_outputs"]["sources"].as_array() {
            self.sources = sources
                .iter()
                .map(|source| {
                    source
                        .as_str()
                        .map_or_else(|| source.to_string(), str::to_owned)
                })
                .collect();
        }
        Ok(())
    }

    fn text(&self) -> &str {
        self.messages.last().map_or("", |(_, text)| text.as_str())
    }
}

fn event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Asks the agent with `stream: true` and relays the answer so far as events `{"text"}`, then `{"done": url}` once
/// recorded, or `{"error"}`. A refused first question leaves no empty conversation behind.
async fn relay(
    signed_in: SignedIn,
    conversation: String,
    endpoint: String,
    history: Vec<Value>,
    question: String,
    new_conversation: bool,
) -> Response {
    let mut messages = history_messages(&history);
    messages.push(json!({ "role": "user", "content": question }));
    let sent = signed_in
        .api()
        .send(
            Method::POST,
            &format!("/serving-endpoints/{}/invocations", encode(&endpoint)),
            Some(&json!({ "messages": messages, "stream": true })),
        )
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(failure) => return stream_of(vec![event(&json!({ "error": failure.message }))]),
    };
    if !response.status().is_success() {
        let failure = crate::api::json_answer(response).await.err();
        let message = failure.map_or_else(
            || "the agent did not answer".to_owned(),
            |failure| failure.message,
        );
        if new_conversation {
            forget_conversation(&signed_in.api(), &conversation).await;
        }
        return stream_of(vec![event(&json!({ "error": message }))]);
    }
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let mut chunks = response.into_body().into_data_stream();
    let events = async_stream(move |sender| async move {
        let mut answer = Answer::default();
        let mut pending = String::new();
        while let Some(bytes) = chunks.next().await {
            let Ok(bytes) = bytes else { break };
            pending.push_str(&String::from_utf8_lossy(&bytes));
            while let Some(end) = pending.find("\n\n") {
                let block: String = pending.drain(..end + 2).collect();
                for data in block.lines().filter_map(|line| line.strip_prefix("data:")) {
                    let data = data.trim();
                    if data == "[DONE]" {
                        continue;
                    }
                    let chunk: Value = serde_json::from_str(data).unwrap_or(Value::Null);
                    if let Err(message) = answer.take(&chunk) {
                        if new_conversation {
                            forget_conversation(&signed_in.api(), &conversation).await;
                        }
                        let _ = sender.send(event(&json!({ "error": message }))).await;
                        return;
                    }
                    if sender
                        .send(event(&json!({ "text": answer.text() })))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let recorded = record_exchange(
            &signed_in.api(),
            &conversation,
            &question,
            answer.text(),
            request_id.as_deref(),
            &answer.sources,
        )
        .await;
        let last = match recorded {
            Ok(()) => {
                json!({ "done": format!("/console/conversations/{}", encode(&conversation)) })
            }
            Err(failure) => json!({ "error": failure.message }),
        };
        let _ = sender.send(event(&last)).await;
    });
    event_stream_response(events)
}

/// A stream fed by a task through a small channel, so the agent's pace (not the buffer) sets the page's.
fn async_stream<F, Fut>(produce: F) -> EventStream
where
    F: FnOnce(tokio::sync::mpsc::Sender<Bytes>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(produce(sender));
    futures_util::stream::poll_fn(move |context| receiver.poll_recv(context)).boxed()
}

type EventStream = futures_util::stream::BoxStream<'static, Bytes>;

fn stream_of(events: Vec<Bytes>) -> Response {
    event_stream_response(futures_util::stream::iter(events).boxed())
}

fn event_stream_response(events: EventStream) -> Response {
    let body = Body::from_stream(events.map(Ok::<Bytes, std::convert::Infallible>));
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_of_one_message_join_and_a_new_id_starts_the_answer_anew() {
        let mut answer = Answer::default();
        for chunk in [
            json!({ "delta": { "id": "tool", "content": "searching" } }),
            json!({ "delta": { "id": "final", "content": "Falcon " } }),
            json!({ "delta": { "id": "final", "content": "launches" }, "custom_outputs": { "sources": ["Falcon plan"] } }),
        ] {
            answer.take(&chunk).unwrap();
        }
        assert_eq!(answer.text(), "Falcon launches");
        assert_eq!(answer.sources, ["Falcon plan"]);
        let refused =
            answer.take(&json!({ "error_code": "PERMISSION_DENIED", "message": "no consent" }));
        assert_eq!(refused, Err("no consent".to_owned()));
    }

    #[test]
    fn openai_style_chunks_are_read_too() {
        let mut answer = Answer::default();
        answer
            .take(&json!({ "choices": [{ "delta": { "content": "a" } }] }))
            .unwrap();
        answer
            .take(&json!({ "choices": [{ "delta": { "content": "b" } }] }))
            .unwrap();
        assert_eq!(answer.text(), "ab");
    }
}
