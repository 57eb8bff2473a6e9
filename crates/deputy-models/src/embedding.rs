//! The built-in embedding model: all-MiniLM-L6-v2 on candle's CPU backend.
//!
//! It reproduces the sentence-transformers pipeline the model was trained for: BERT, mean pooling over the
//! attention mask, L2 normalisation; inputs truncated at 256 tokens as in its `sentence_bert_config.json`.

use std::sync::Arc;

use async_trait::async_trait;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::backend::ModelBackend;
use crate::error::{LoadError, ModelError};
use crate::install::EmbeddingModelFiles;
use crate::types::{EmbeddingRequest, EmbeddingResponse};

/// The model's `max_seq_length`; longer inputs are truncated, as sentence-transformers does.
const MAX_SEQUENCE_TOKENS: usize = 256;
/// Inputs run through BERT in batches of at most this many, bounding memory for large requests.
const BATCH_SIZE: usize = 32;

/// All-MiniLM-L6-v2 as a [`ModelBackend`] offering embeddings of [`LocalEmbeddingModel::DIMENSIONS`] dimensions.
/// Cloning shares the loaded weights.
#[derive(Clone)]
pub struct LocalEmbeddingModel {
    inner: Arc<Inner>,
}

struct Inner {
    model: BertModel,
    tokenizer: Tokenizer,
}

impl std::fmt::Debug for LocalEmbeddingModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbeddingModel")
            .finish_non_exhaustive()
    }
}

impl LocalEmbeddingModel {
    pub const NAME: &'static str = "all-MiniLM-L6-v2";
    pub const DIMENSIONS: usize = 384;

    pub fn load(files: &EmbeddingModelFiles) -> Result<LocalEmbeddingModel, LoadError> {
        let config_text = std::fs::read_to_string(&files.config)
            .map_err(|error| LoadError::new(&files.config, error))?;
        let config: Config = serde_json::from_str(&config_text)
            .map_err(|error| LoadError::new(&files.config, error))?;
        let mut tokenizer = Tokenizer::from_file(&files.tokenizer)
            .map_err(|error| LoadError::new(&files.tokenizer, error))?;
        // The shipped tokenizer.json pads every input to 128 tokens and truncates there; sentence-transformers pads
        // to the longest input of the batch and truncates at 256, so the settings are replaced to match it.
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_SEQUENCE_TOKENS,
                ..TruncationParams::default()
            }))
            .map_err(|error| LoadError::new(&files.tokenizer, error))?;
        let weights =
            std::fs::read(&files.weights).map_err(|error| LoadError::new(&files.weights, error))?;
        let vars = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|error| LoadError::new(&files.weights, error))?;
        let model = BertModel::load(vars, &config)
            .map_err(|error| LoadError::new(&files.weights, error))?;
        Ok(LocalEmbeddingModel {
            inner: Arc::new(Inner { model, tokenizer }),
        })
    }

    /// Unit-length embeddings of `texts`, in order, and the number of tokens read. Blocking and CPU-bound.
    pub fn embed(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), ModelError> {
        let mut vectors = Vec::with_capacity(texts.len());
        let mut tokens = 0;
        for batch in texts.chunks(BATCH_SIZE) {
            let (batch_vectors, batch_tokens) = self.embed_batch(batch)?;
            vectors.extend(batch_vectors);
            tokens += batch_tokens;
        }
        Ok((vectors, tokens))
    }

    fn embed_batch(&self, texts: &[String]) -> Result<(Vec<Vec<f32>>, u32), ModelError> {
        let encodings = self
            .inner
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(ModelError::inference)?;
        let rows = |field: fn(&tokenizers::Encoding) -> &[u32]| -> Result<Tensor, ModelError> {
            let rows: Vec<Tensor> = encodings
                .iter()
                .map(|encoding| Tensor::new(field(encoding), &Device::Cpu))
                .collect::<Result<_, _>>()
                .map_err(ModelError::inference)?;
            Tensor::stack(&rows, 0).map_err(ModelError::inference)
        };
        let ids = rows(|encoding| encoding.get_ids())?;
        let type_ids = rows(|encoding| encoding.get_type_ids())?;
        let mask = rows(|encoding| encoding.get_attention_mask())?;
        let tokens: u32 = encodings
            .iter()
            .map(|encoding| encoding.get_attention_mask().iter().sum::<u32>())
            .sum();
        let pooled = mean_pooled_unit_vectors(&self.inner.model, &ids, &type_ids, &mask)
            .map_err(ModelError::inference)?;
        Ok((pooled, tokens))
    }
}

/// BERT's token states averaged over the real tokens (padding positions are zeroed by the mask and not counted),
/// then scaled to unit length.
fn mean_pooled_unit_vectors(
    model: &BertModel,
    ids: &Tensor,
    type_ids: &Tensor,
    mask: &Tensor,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let hidden = model.forward(ids, type_ids, Some(mask))?;
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?;
    let mean = summed.broadcast_div(&counts)?;
    let norms = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
    mean.broadcast_div(&norms)?.to_vec2::<f32>()
}

#[async_trait]
impl ModelBackend for LocalEmbeddingModel {
    async fn embeddings(&self, request: EmbeddingRequest) -> Result<EmbeddingResponse, ModelError> {
        let texts = request.input.into_vec();
        if texts.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`input` must not be empty".to_owned(),
            ));
        }
        let model = self.clone();
        let (vectors, tokens) = tokio::task::spawn_blocking(move || model.embed(&texts))
            .await
            .map_err(ModelError::inference)??;
        Ok(EmbeddingResponse::from_vectors(Self::NAME, vectors, tokens))
    }
}
