//! The one interface behind every serving endpoint that runs a model.

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;

use crate::error::ModelError;
use crate::types::{
    ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, EmbeddingRequest,
    EmbeddingResponse,
};

/// A streamed chat completion: `chat.completion.chunk` events in order, ending after the chunk that carries a
/// `finish_reason`. An `Err` item ends the stream.
pub type ChatStream = Pin<Box<dyn Stream<Item = Result<ChatCompletionChunk, ModelError>> + Send>>;

/// A model behind a serving endpoint: an external provider or a built-in local model. Serving, vector search and
/// Genie hold an `Arc<dyn ModelBackend>` and never care which one it is.
///
/// A backend offers the tasks it implements; the others answer [`ModelError::Unsupported`].
#[async_trait]
pub trait ModelBackend: Send + Sync {
    /// A chat completion, whole. `request.stream` is ignored.
    async fn chat(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, ModelError> {
        let _ = request;
        Err(ModelError::Unsupported("chat completions"))
    }

    /// A chat completion as a stream of chunks. Errors found before the first chunk (bad request, upstream refusal)
    /// are returned here, so the serving layer can still answer with an error status instead of a broken stream.
    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChatStream, ModelError> {
        let _ = request;
        Err(ModelError::Unsupported("chat completions"))
    }

    /// Embeddings of each input, in input order.
    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse, ModelError> {
        let _ = request;
        Err(ModelError::Unsupported("embeddings"))
    }
}
