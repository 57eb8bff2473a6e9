//! Request and response types in the OpenAI wire shape.
//!
//! They are the bodies of `/serving-endpoints/chat/completions` and `/serving-endpoints/embeddings` as well as what
//! an OpenAI-compatible upstream speaks, so they derive serde directly: converting them at the edge would copy the
//! same fields twice. Fields this crate does not interpret (`tools`, `response_format`, a message's `tool_calls`,
//! ...) are kept in `extra` so the external proxy forwards them unchanged and a local model can ignore them.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// One message of a chat conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    /// OpenAI also accepts `null` (assistant turns that only call tools) and a list of content parts; both are read
    /// as text, parts concatenated, so every backend sees a plain string.
    #[serde(default, deserialize_with = "content_as_text")]
    pub content: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> ChatMessage {
        ChatMessage {
            role: role.into(),
            content: content.into(),
            extra: Map::new(),
        }
    }
}

fn content_as_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Text(String),
        Parts(Vec<Part>),
    }
    #[derive(Deserialize)]
    struct Part {
        #[serde(default)]
        text: Option<String>,
    }
    Ok(match Option::<Content>::deserialize(deserializer)? {
        None => String::new(),
        Some(Content::Text(text)) => text,
        Some(Content::Parts(parts)) => parts.into_iter().filter_map(|part| part.text).collect(),
    })
}

/// `stop` is a single string or a list of strings on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopSequences {
    One(String),
    Many(Vec<String>),
}

impl StopSequences {
    /// The non-empty stop strings: an empty one would stop before the first token, which no caller means.
    pub fn to_vec(&self) -> Vec<String> {
        let all = match self {
            StopSequences::One(one) => vec![one.clone()],
            StopSequences::Many(many) => many.clone(),
        };
        all.into_iter().filter(|stop| !stop.is_empty()).collect()
    }
}

/// The body of a chat completion request.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatCompletionRequest {
    /// The caller's name for the model (on Deputy, the endpoint name). Backends substitute their own model name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSequences>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: u32,
    #[serde(default)]
    pub completion_tokens: u32,
    #[serde(default)]
    pub total_tokens: u32,
}

impl Usage {
    pub fn new(prompt_tokens: u32, completion_tokens: u32) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatMessage,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The body of a non-streaming chat completion response (`object: "chat.completion"`). The bookkeeping fields
/// default when absent, since not every OpenAI-compatible server sends all of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionResponse {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChatChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The incremental part of a streamed choice: the role in the first chunk, then pieces of content.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// One event of a streamed chat completion (`object: "chat.completion.chunk"`), sent as an SSE `data:` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub created: u64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// `input` of an embeddings request: one string or a batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

impl EmbeddingInput {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            EmbeddingInput::One(one) => vec![one],
            EmbeddingInput::Many(many) => many,
        }
    }
}

/// The body of an embeddings request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input: EmbeddingInput,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl EmbeddingRequest {
    pub fn new(input: EmbeddingInput) -> EmbeddingRequest {
        EmbeddingRequest {
            model: None,
            input,
            extra: Map::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Embedding {
    #[serde(default)]
    pub object: String,
    #[serde(default)]
    pub index: u32,
    pub embedding: Vec<f32>,
}

/// The body of an embeddings response (`object: "list"`), one entry per input in input order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingResponse {
    #[serde(default)]
    pub object: String,
    pub data: Vec<Embedding>,
    #[serde(default)]
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl EmbeddingResponse {
    /// A response for `vectors` in input order.
    pub fn from_vectors(
        model: &str,
        vectors: Vec<Vec<f32>>,
        prompt_tokens: u32,
    ) -> EmbeddingResponse {
        let data = vectors
            .into_iter()
            .zip(0u32..)
            .map(|(embedding, index)| Embedding {
                object: "embedding".to_owned(),
                index,
                embedding,
            })
            .collect();
        EmbeddingResponse {
            object: "list".to_owned(),
            data,
            model: model.to_owned(),
            usage: Some(Usage::new(prompt_tokens, 0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn message_content_accepts_null_and_parts() {
        let message: ChatMessage = serde_json::from_value(json!({
            "role": "user",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
        }))
        .unwrap();
        assert_eq!(message.content, "ab");
        let message: ChatMessage = serde_json::from_value(json!({
            "role": "assistant", "content": null, "tool_calls": [{"id": "x"}]
        }))
        .unwrap();
        assert_eq!(message.content, "");
        assert_eq!(message.extra["tool_calls"], json!([{"id": "x"}]));
    }

    #[test]
    fn request_keeps_unknown_fields_for_the_proxy() {
        let body = json!({
            "model": "ep", "messages": [{"role": "user", "content": "hi"}],
            "stop": "\n", "response_format": {"type": "json_object"}
        });
        let request: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        assert_eq!(request.stop, Some(StopSequences::One("\n".into())));
        assert_eq!(serde_json::to_value(&request).unwrap(), body);
    }

    #[test]
    fn embedding_input_is_a_string_or_a_list() {
        let one: EmbeddingRequest = serde_json::from_value(json!({"input": "a"})).unwrap();
        assert_eq!(one.input.into_vec(), vec!["a"]);
        let many: EmbeddingRequest = serde_json::from_value(json!({"input": ["a", "b"]})).unwrap();
        assert_eq!(many.input.into_vec(), vec!["a", "b"]);
    }
}
