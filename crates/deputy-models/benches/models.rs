//! `cargo bench -p deputy-models`: throughput of the built-in models on this machine, printed as plain figures so
//! they can be set beside `benches/reference.py` (sentence-transformers and llama-cpp-python on the same files).
//!
//! - embeddings/s: batches of 32 sentences through all-MiniLM-L6-v2;
//! - chat tokens/s: SmolLM2-135M-Instruct, greedy, 64 new tokens, counting decode time only after the prompt.

use std::time::{Duration, Instant};

use deputy_models::types::{ChatCompletionRequest, ChatMessage};
use deputy_models::{LocalChatModel, LocalEmbeddingModel, default_models_dir, install_models};

const BATCH: usize = 32;
const EMBEDDING_ROUNDS: usize = 5;
const CHAT_TOKENS: u32 = 64;
const CHAT_ROUNDS: usize = 3;
/// Asks for a long answer, so the model does not end its turn before 64 tokens.
const CHAT_PROMPT: &str = "Write a long story about a dragon who learns to bake bread.";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("deputy-models benchmark ({threads} threads)");
    let started = Instant::now();
    let files = install_models(&default_models_dir())?;
    // Seconds on a cold cache (download, extraction, verification); milliseconds once installed.
    println!("install_models: {:.2} s", started.elapsed().as_secs_f64());

    let embedder = LocalEmbeddingModel::load(&files.embedding)?;
    let sentences: Vec<String> = (0..BATCH)
        .map(|i| format!("Sentence number {i} talks about data governance, catalogs and agents in a short way."))
        .collect();
    embedder.embed(&sentences)?;
    let started = Instant::now();
    for _ in 0..EMBEDDING_ROUNDS {
        embedder.embed(&sentences)?;
    }
    let per_second = (BATCH * EMBEDDING_ROUNDS) as f64 / started.elapsed().as_secs_f64();
    println!("embeddings (all-MiniLM-L6-v2, batch {BATCH}): {per_second:.1} embeddings/s");

    let chat = LocalChatModel::load(&files.chat)?;
    let request = ChatCompletionRequest {
        messages: vec![ChatMessage::new("user", CHAT_PROMPT)],
        max_tokens: Some(CHAT_TOKENS),
        temperature: Some(0.0),
        ..ChatCompletionRequest::default()
    };
    let mut decode_time = Duration::ZERO;
    let mut decoded = 0;
    for _ in 0..CHAT_ROUNDS {
        // The first piece of text marks the end of prompt processing; what follows is decoding.
        let started = Instant::now();
        let mut first_piece: Option<Instant> = None;
        let generation = chat.generate(&request, |_| {
            first_piece.get_or_insert_with(Instant::now);
            true
        })?;
        let end = Instant::now();
        let first = first_piece.unwrap_or(end);
        decode_time += end - first;
        decoded += generation.completion_tokens.saturating_sub(1);
        println!(
            "chat round: {} prompt + {} new tokens in {:.2} s (prompt and first token {:.2} s)",
            generation.prompt_tokens,
            generation.completion_tokens,
            (end - started).as_secs_f64(),
            (first - started).as_secs_f64()
        );
    }
    let per_second = decoded as f64 / decode_time.as_secs_f64();
    println!(
        "chat (SmolLM2-135M-Instruct Q4_1, greedy, {CHAT_TOKENS} tokens): {per_second:.1} tokens/s"
    );
    Ok(())
}
