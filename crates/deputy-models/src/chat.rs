//! The built-in chat model: SmolLM2-135M-Instruct (GGUF, Q4_1) on candle's quantized llama, CPU.
//!
//! The tokenizer is rebuilt from the GGUF metadata (byte-level BPE with SmolLM's digit splitting, as llama.cpp's
//! `smollm` pre-tokenizer), so the one pinned file is all the model needs. Prompts use the model's ChatML template.
//! Control tokens are inserted by id and message text is encoded without them, so a message that contains
//! `<|im_start|>` cannot forge a turn.

use std::io::Cursor;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use candle_core::{Device, Tensor};
use candle_transformers::generation::LogitsProcessor;
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use tokenizers::Tokenizer;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokio::sync::mpsc;

use crate::backend::{ChatStream, ModelBackend};
use crate::error::{LoadError, ModelError};
use crate::install::ChatModelFiles;
use crate::types::{
    ChatChoice, ChatCompletionChunk, ChatCompletionRequest, ChatCompletionResponse, ChatDelta,
    ChatMessage, ChunkChoice, Usage,
};

/// The chat template stored in the pinned GGUF. Prompts are built by [`render_prompt`], which implements exactly
/// this template; loading a file with another template fails rather than prompting the model wrongly.
const CHAT_TEMPLATE: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
const DEFAULT_SYSTEM_PROMPT: &str =
    "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
/// Without `max_tokens`, a local answer stops here: CPU time is the scarce resource on a local model.
const DEFAULT_MAX_TOKENS: u32 = 256;
/// OpenAI's default when the request names no temperature.
const DEFAULT_TEMPERATURE: f32 = 1.0;
/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const CONTROL_TOKEN_TYPE: i32 = 3;

/// SmolLM2-135M-Instruct as a [`ModelBackend`] offering chat completions. Cloning shares the loaded weights; each
/// request runs on its own copy of the (cheaply cloned, reference-counted) weights with a fresh KV cache.
#[derive(Clone)]
pub struct LocalChatModel {
    inner: Arc<Inner>,
}

struct Inner {
    /// Never run itself, so its KV cache stays empty and every clone starts clean.
    weights: ModelWeights,
    /// BPE without control tokens: message text can never turn into one.
    tokenizer: Tokenizer,
    im_start: u32,
    im_end: u32,
    /// Tokens that end the answer: `<|im_end|>` (the GGUF's eos) and `<|endoftext|>`.
    end_tokens: Vec<u32>,
}

impl std::fmt::Debug for LocalChatModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalChatModel").finish_non_exhaustive()
    }
}

impl LocalChatModel {
    pub const NAME: &'static str = "SmolLM2-135M-Instruct";

    pub fn load(files: &ChatModelFiles) -> Result<LocalChatModel, LoadError> {
        let path = &files.gguf;
        let error = |detail: &dyn std::fmt::Display| LoadError::new(path, detail);
        let mut file = std::fs::File::open(path).map_err(|e| error(&e))?;
        let content = gguf_file::Content::read(&mut file).map_err(|e| error(&e))?;
        let metadata = &content.metadata;
        let text = |key: &str| -> Result<String, LoadError> {
            metadata
                .get(key)
                .and_then(|value| value.to_string().ok())
                .cloned()
                .ok_or_else(|| error(&format!("metadata `{key}` missing")))
        };
        let strings = |key: &str| -> Result<Vec<String>, LoadError> {
            let values = metadata
                .get(key)
                .and_then(|value| value.to_vec().ok())
                .ok_or_else(|| error(&format!("metadata `{key}` missing")))?;
            values
                .iter()
                .map(|value| value.to_string().cloned().map_err(|e| error(&e)))
                .collect()
        };
        if text("tokenizer.chat_template")? != CHAT_TEMPLATE {
            return Err(error(
                &"unsupported chat template: expected SmolLM2's ChatML template",
            ));
        }
        if text("tokenizer.ggml.model")? != "gpt2" {
            return Err(error(
                &"unsupported tokenizer: expected byte-level BPE (`gpt2`)",
            ));
        }
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges = strings("tokenizer.ggml.merges")?;
        let token_types: Vec<i32> = metadata
            .get("tokenizer.ggml.token_type")
            .and_then(|value| value.to_vec().ok())
            .ok_or_else(|| error(&"metadata `tokenizer.ggml.token_type` missing"))?
            .iter()
            .map(|value| value.to_i32().map_err(|e| error(&e)))
            .collect::<Result<_, _>>()?;
        let eos = metadata
            .get("tokenizer.ggml.eos_token_id")
            .and_then(|value| value.to_u32().ok())
            .ok_or_else(|| error(&"metadata `tokenizer.ggml.eos_token_id` missing"))?;

        let vocab: Vocab = tokens.iter().cloned().zip(0u32..).collect();
        let control = |name: &str| -> Result<u32, LoadError> {
            let id = vocab
                .get(name)
                .copied()
                .ok_or_else(|| error(&format!("token `{name}` missing")))?;
            let is_control = usize::try_from(id)
                .ok()
                .and_then(|index| token_types.get(index))
                .is_some_and(|&kind| kind == CONTROL_TOKEN_TYPE);
            if is_control {
                Ok(id)
            } else {
                Err(error(&format!("token `{name}` is not a control token")))
            }
        };
        let im_start = control("<|im_start|>")?;
        let im_end = control("<|im_end|>")?;
        let end_of_text = control("<|endoftext|>")?;

        let merges = merges
            .iter()
            .map(|merge| {
                merge
                    .split_once(' ')
                    .map(|(left, right)| (left.to_owned(), right.to_owned()))
                    .ok_or_else(|| error(&format!("malformed merge `{merge}`")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| error(&e))?;
        let mut tokenizer = Tokenizer::new(bpe);
        tokenizer.with_pre_tokenizer(Some(Sequence::new(vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));

        let unpacked = dequantized_gguf(&content, &mut file).map_err(|e| error(&e))?;
        let mut reader = Cursor::new(unpacked);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| error(&e))?;
        let weights =
            ModelWeights::from_gguf(content, &mut reader, &Device::Cpu).map_err(|e| error(&e))?;
        Ok(LocalChatModel {
            inner: Arc::new(Inner {
                weights,
                tokenizer,
                im_start,
                im_end,
                end_tokens: vec![eos, end_of_text],
            }),
        })
    }

    /// The prompt token ids for `messages` under the model's chat template, ending with the assistant's turn.
    pub fn prompt_tokens(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, ModelError> {
        let inner = &self.inner;
        let mut ids = Vec::new();
        for (role, content) in render_prompt(messages) {
            ids.push(inner.im_start);
            ids.extend(self.encode(&format!("{role}\n"))?);
            if let Some(content) = content {
                ids.extend(self.encode(content)?);
                ids.push(inner.im_end);
                ids.extend(self.encode("\n")?);
            }
        }
        Ok(ids)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .inner
            .tokenizer
            .encode(text, false)
            .map_err(ModelError::inference)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Runs a whole generation, calling `on_text` with each piece of answer text as soon as it is final (no stop
    /// string can still begin in it). Stops early when `on_text` returns `false`. Blocking and CPU-bound.
    pub fn generate(
        &self,
        request: &ChatCompletionRequest,
        mut on_text: impl FnMut(&str) -> bool,
    ) -> Result<Generation, ModelError> {
        let settings = Settings::of(request)?;
        let prompt = self.prompt_tokens(&request.messages)?;
        let room = MAX_SEQ_LEN.saturating_sub(prompt.len());
        if room == 0 {
            return Err(ModelError::InvalidRequest(format!(
                "the prompt has {} tokens; this model reads at most {MAX_SEQ_LEN}",
                prompt.len()
            )));
        }
        let max_tokens = usize::try_from(settings.max_tokens)
            .unwrap_or(usize::MAX)
            .min(room);
        let mut weights = self.inner.weights.clone();
        let mut sampler = LogitsProcessor::new(
            settings.seed,
            Some(f64::from(settings.temperature)),
            settings.top_p.map(f64::from),
        );
        let mut emitter = TextEmitter::new(settings.stop);
        let mut generated: Vec<u32> = Vec::new();
        let mut finish_reason = FinishReason::Length;
        let mut input = prompt.clone();
        let mut position = 0;
        while generated.len() < max_tokens {
            let logits =
                next_logits(&mut weights, &input, position).map_err(ModelError::inference)?;
            position += input.len();
            let next = sampler.sample(&logits).map_err(ModelError::inference)?;
            if self.inner.end_tokens.contains(&next) {
                finish_reason = FinishReason::Stop;
                break;
            }
            generated.push(next);
            let text = self
                .inner
                .tokenizer
                .decode(&generated, false)
                .map_err(ModelError::inference)?;
            let (piece, stopped) = emitter.step(&text);
            if !piece.is_empty() && !on_text(piece) {
                break;
            }
            if stopped {
                finish_reason = FinishReason::Stop;
                break;
            }
            input = vec![next];
        }
        if !emitter.stopped {
            let text = self
                .inner
                .tokenizer
                .decode(&generated, false)
                .map_err(ModelError::inference)?;
            let piece = emitter.finish(&text);
            if !piece.is_empty() {
                on_text(piece);
            }
        }
        Ok(Generation {
            prompt_tokens: prompt.len(),
            completion_tokens: generated.len(),
            finish_reason,
        })
    }
}

/// The GGUF with every quantized tensor expanded to f32, serialised in memory for `ModelWeights::from_gguf`.
///
/// candle's quantized kernels are vectorised only when the whole build targets AVX (`-C target-cpu`), and Q4_1 has no
/// vectorised kernel at all, so the packed weights run through scalar code: ~2 tokens/s on this project's 2-core
/// machines. Expanded, the 135M weights take ~540 MB and go through gemm's runtime-detected SIMD kernels at ~14
/// tokens/s, faster than llama.cpp on the packed file, and the greedy answers still match llama.cpp's (see the
/// tests). Worth it for a model this small; a larger one would want the packed path.
fn dequantized_gguf(
    content: &gguf_file::Content,
    file: &mut std::fs::File,
) -> candle_core::Result<Vec<u8>> {
    let mut tensors = Vec::with_capacity(content.tensor_infos.len());
    for name in content.tensor_infos.keys() {
        let tensor = content.tensor(file, name, &Device::Cpu)?;
        let tensor = match tensor.dtype() {
            GgmlDType::F32 => tensor,
            _ => QTensor::quantize(&tensor.dequantize(&Device::Cpu)?, GgmlDType::F32)?,
        };
        tensors.push((name.as_str(), tensor));
    }
    let metadata: Vec<(&str, &gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(key, value)| (key.as_str(), value))
        .collect();
    let tensors: Vec<(&str, &QTensor)> = tensors
        .iter()
        .map(|(name, tensor)| (*name, tensor))
        .collect();
    let mut buffer = Cursor::new(Vec::new());
    gguf_file::write(&mut buffer, &metadata, &tensors)?;
    Ok(buffer.into_inner())
}

/// The logits for the token after `input`, which continues the sequence at `position`.
fn next_logits(
    weights: &mut ModelWeights,
    input: &[u32],
    position: usize,
) -> candle_core::Result<Tensor> {
    let input = Tensor::new(input, &Device::Cpu)?.unsqueeze(0)?;
    weights.forward(&input, position)?.squeeze(0)
}

/// How a generation ended, and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub finish_reason: FinishReason,
}

impl Generation {
    fn usage(&self) -> Usage {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        Usage::new(count(self.prompt_tokens), count(self.completion_tokens))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn or a stop string appeared.
    Stop,
    /// `max_tokens` (or the context window) ran out.
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The sampling settings of a request, validated.
struct Settings {
    max_tokens: u32,
    temperature: f32,
    top_p: Option<f32>,
    seed: u64,
    stop: Vec<String>,
}

impl Settings {
    fn of(request: &ChatCompletionRequest) -> Result<Settings, ModelError> {
        if request.messages.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`messages` must not be empty".to_owned(),
            ));
        }
        let temperature = request.temperature.unwrap_or(DEFAULT_TEMPERATURE);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ModelError::InvalidRequest(format!(
                "`temperature` must be between 0 and 2, got {temperature}"
            )));
        }
        if let Some(top_p) = request
            .top_p
            .filter(|top_p| !(0.0..=1.0).contains(top_p) || *top_p == 0.0)
        {
            return Err(ModelError::InvalidRequest(format!(
                "`top_p` must be in (0, 1], got {top_p}"
            )));
        }
        let max_tokens = request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            return Err(ModelError::InvalidRequest(
                "`max_tokens` must be at least 1".to_owned(),
            ));
        }
        // Without a seed each request samples differently, as callers of a sampling API expect; the clock is a
        // good enough source for that and needs no extra dependency.
        let seed = request.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |elapsed| elapsed.as_nanos() as u64)
        });
        Ok(Settings {
            max_tokens,
            temperature,
            top_p: request.top_p,
            seed,
            stop: request
                .stop
                .as_ref()
                .map(|stop| stop.to_vec())
                .unwrap_or_default(),
        })
    }
}

/// The turns of the ChatML prompt as (role, content); the last is the open assistant turn without content. Follows
/// [`CHAT_TEMPLATE`]: a default system turn comes first unless the conversation starts with one.
fn render_prompt(messages: &[ChatMessage]) -> Vec<(&str, Option<&str>)> {
    let mut turns = Vec::with_capacity(messages.len() + 2);
    if messages.first().is_some_and(|first| first.role != "system") {
        turns.push(("system", Some(DEFAULT_SYSTEM_PROMPT)));
    }
    turns.extend(
        messages
            .iter()
            .map(|message| (message.role.as_str(), Some(message.content.as_str()))),
    );
    turns.push(("assistant", None));
    turns
}

/// Turns the growing decoded answer into final pieces: text is held back while it might be the start of a stop
/// string or an incomplete UTF-8 sequence, and everything from a stop string on is dropped.
struct TextEmitter {
    stops: Vec<String>,
    emitted: usize,
    stopped: bool,
}

impl TextEmitter {
    fn new(stops: Vec<String>) -> TextEmitter {
        TextEmitter {
            stops,
            emitted: 0,
            stopped: false,
        }
    }

    /// The new final text in `text` (the whole answer so far) and whether a stop string was reached.
    fn step<'t>(&mut self, text: &'t str) -> (&'t str, bool) {
        // A token boundary inside a multi-byte character decodes to U+FFFD until the rest arrives.
        let settled = text.trim_end_matches('\u{FFFD}');
        if let Some(stop_at) = self.first_stop(settled) {
            self.stopped = true;
            return (settled.get(self.emitted..stop_at).unwrap_or_default(), true);
        }
        let safe_end = settled.len() - self.pending_stop_prefix(settled);
        let piece = settled.get(self.emitted..safe_end).unwrap_or_default();
        self.emitted = self.emitted.max(safe_end);
        (piece, false)
    }

    /// The rest of the answer once generation has ended.
    fn finish<'t>(&mut self, text: &'t str) -> &'t str {
        let end = self.first_stop(text).unwrap_or(text.len());
        let piece = text.get(self.emitted..end).unwrap_or_default();
        self.emitted = end;
        piece
    }

    /// INVARIANT: a stop string never begins before `emitted`, since any text that could begin one was held back.
    fn first_stop(&self, text: &str) -> Option<usize> {
        self.stops
            .iter()
            .filter_map(|stop| text.find(stop.as_str()))
            .min()
    }

    /// The length of the longest end of `text` that is a proper beginning of some stop string.
    fn pending_stop_prefix(&self, text: &str) -> usize {
        text.char_indices()
            .map(|(start, _)| start)
            .filter(|&start| {
                let tail = &text[start..];
                self.stops
                    .iter()
                    .any(|stop| stop.len() > tail.len() && stop.starts_with(tail))
            })
            .map(|start| text.len() - start)
            .max()
            .unwrap_or(0)
    }
}

fn new_completion_id() -> String {
    format!("chatcmpl-{}", uuid::Uuid::new_v4().simple())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn chunk(
    id: &str,
    created: u64,
    delta: ChatDelta,
    finish_reason: Option<&str>,
) -> ChatCompletionChunk {
    ChatCompletionChunk {
        id: id.to_owned(),
        object: "chat.completion.chunk".to_owned(),
        created,
        model: LocalChatModel::NAME.to_owned(),
        choices: vec![ChunkChoice {
            index: 0,
            delta,
            finish_reason: finish_reason.map(str::to_owned),
        }],
        usage: None,
    }
}

#[async_trait]
impl ModelBackend for LocalChatModel {
    async fn chat(
        &self,
        request: ChatCompletionRequest,
    ) -> Result<ChatCompletionResponse, ModelError> {
        let model = self.clone();
        let (content, generation) = tokio::task::spawn_blocking(move || {
            let mut content = String::new();
            let generation = model.generate(&request, |piece| {
                content.push_str(piece);
                true
            })?;
            Ok::<_, ModelError>((content, generation))
        })
        .await
        .map_err(ModelError::inference)??;
        Ok(ChatCompletionResponse {
            id: new_completion_id(),
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: Self::NAME.to_owned(),
            choices: vec![ChatChoice {
                index: 0,
                message: ChatMessage::new("assistant", content),
                finish_reason: Some(generation.finish_reason.as_str().to_owned()),
            }],
            usage: Some(generation.usage()),
        })
    }

    async fn chat_stream(&self, request: ChatCompletionRequest) -> Result<ChatStream, ModelError> {
        // Invalid requests fail here, before the stream starts, so the caller can still answer with a status.
        Settings::of(&request)?;
        let id = new_completion_id();
        let created = unix_now();
        // A small buffer: tokens are produced far slower than any client reads, and a gone client is noticed at
        // the next send, which stops the generation.
        let (sender, receiver) = mpsc::channel::<Result<ChatCompletionChunk, ModelError>>(16);
        let model = self.clone();
        tokio::task::spawn_blocking(move || {
            let role = ChatDelta {
                role: Some("assistant".to_owned()),
                content: Some(String::new()),
                ..ChatDelta::default()
            };
            if sender
                .blocking_send(Ok(chunk(&id, created, role, None)))
                .is_err()
            {
                return;
            }
            let result = model.generate(&request, |piece| {
                let delta = ChatDelta {
                    content: Some(piece.to_owned()),
                    ..ChatDelta::default()
                };
                sender
                    .blocking_send(Ok(chunk(&id, created, delta, None)))
                    .is_ok()
            });
            let last = result.map(|generation| {
                let mut last = chunk(
                    &id,
                    created,
                    ChatDelta::default(),
                    Some(generation.finish_reason.as_str()),
                );
                last.usage = Some(generation.usage());
                last
            });
            // The client may be gone already; then there is nobody to tell.
            let _ = sender.blocking_send(last);
        });
        Ok(Box::pin(futures_util::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.map(|item| (item, receiver)) },
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut emitter = TextEmitter::new(stops.iter().map(|stop| stop.to_string()).collect());
        let mut text = String::new();
        let mut out = String::new();
        for piece in pieces {
            text.push_str(piece);
            let (new, stopped) = emitter.step(&text);
            out.push_str(new);
            if stopped {
                return (out, true);
            }
        }
        out.push_str(emitter.finish(&text));
        (out, false)
    }

    #[test]
    fn stop_strings_cut_the_answer_even_across_tokens() {
        assert_eq!(
            run(&["END"], &["Hello ", "E", "N", "D", " more"]),
            ("Hello ".to_owned(), true)
        );
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".to_owned(), true));
        assert_eq!(run(&["xyz"], &["ab", "xy"]), ("abxy".to_owned(), false));
        assert_eq!(run(&[], &["a", "b"]), ("ab".to_owned(), false));
    }

    #[test]
    fn held_back_text_is_released_when_no_stop_follows() {
        let mut emitter = TextEmitter::new(vec!["END".to_owned()]);
        assert_eq!(emitter.step("say E"), ("say ", false));
        assert_eq!(emitter.step("say EX"), ("EX", false));
    }

    #[test]
    fn incomplete_characters_wait_for_their_bytes() {
        let mut emitter = TextEmitter::new(Vec::new());
        assert_eq!(emitter.step("caf\u{FFFD}"), ("caf", false));
        assert_eq!(emitter.step("café"), ("é", false));
    }

    #[test]
    fn the_template_adds_a_default_system_turn() {
        let user = [ChatMessage::new("user", "hi")];
        assert_eq!(
            render_prompt(&user),
            [
                ("system", Some(DEFAULT_SYSTEM_PROMPT)),
                ("user", Some("hi")),
                ("assistant", None)
            ]
        );
        let with_system = [
            ChatMessage::new("system", "be brief"),
            ChatMessage::new("user", "hi"),
        ];
        assert_eq!(render_prompt(&with_system).len(), 3);
    }

    #[test]
    fn settings_reject_out_of_range_values() {
        let request = |temperature, max_tokens| ChatCompletionRequest {
            messages: vec![ChatMessage::new("user", "hi")],
            temperature,
            max_tokens,
            ..ChatCompletionRequest::default()
        };
        assert!(Settings::of(&request(Some(2.5), None)).is_err());
        assert!(Settings::of(&request(Some(0.0), Some(0))).is_err());
        assert!(Settings::of(&ChatCompletionRequest::default()).is_err());
        let settings = Settings::of(&request(None, None)).unwrap();
        assert_eq!((settings.temperature, settings.max_tokens), (1.0, 256));
    }
}
