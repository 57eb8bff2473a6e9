"""The Python side of `cargo bench -p deputy-models`: the same measurements with the reference packages.

    python benches/reference.py [MODELS_DIR]

MODELS_DIR defaults to $DEPUTY_MODEL_CACHE, else ~/.cache/deputy/models: the files Deputy's installer verified.
Measures whichever of sentence-transformers (embeddings/s at batch 32) and llama-cpp-python (greedy tokens/s over
64 new tokens) is installed, with the same inputs as benches/models.rs.
"""

import os
import sys
import time

BATCH = 32
EMBEDDING_ROUNDS = 5
CHAT_TOKENS = 64
CHAT_ROUNDS = 3
CHAT_PROMPT = "Write a long story about a dragon who learns to bake bread."

models_dir = (
    sys.argv[1]
    if len(sys.argv) > 1
    else os.environ.get("DEPUTY_MODEL_CACHE") or os.path.expanduser("~/.cache/deputy/models")
)
threads = os.cpu_count()
print(f"python reference benchmark ({threads} threads)")

try:
    import torch
    from sentence_transformers import SentenceTransformer
except ImportError as error:
    print(f"embeddings: sentence-transformers not installed ({error})")
else:
    torch.set_num_threads(threads)
    # The installer keeps only the files Deputy needs; sentence-transformers reads the same config, weights and
    # tokenizer and falls back to mean pooling, which is what this model uses.
    model = SentenceTransformer(os.path.join(models_dir, "all-minilm-l6-v2"), device="cpu")
    sentences = [
        f"Sentence number {i} talks about data governance, catalogs and agents in a short way." for i in range(BATCH)
    ]
    model.encode(sentences, batch_size=BATCH, normalize_embeddings=True)
    started = time.perf_counter()
    for _ in range(EMBEDDING_ROUNDS):
        model.encode(sentences, batch_size=BATCH, normalize_embeddings=True)
    per_second = BATCH * EMBEDDING_ROUNDS / (time.perf_counter() - started)
    print(f"embeddings (sentence-transformers, batch {BATCH}): {per_second:.1f} embeddings/s")

try:
    from llama_cpp import Llama
except ImportError as error:
    print(f"chat: llama-cpp-python not installed ({error})")
else:
    llm = Llama(
        model_path=os.path.join(models_dir, "smollm2-135m-instruct", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        n_ctx=2048,
        n_threads=threads,
        verbose=False,
    )
    prompt = (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        f"<|im_start|>user\n{CHAT_PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    )
    tokens = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    decode_time = 0.0
    decoded = 0
    for _ in range(CHAT_ROUNDS):
        llm.reset()
        started = time.perf_counter()
        first = None
        count = 0
        for token in llm.generate(tokens, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
            if first is None:
                first = time.perf_counter()
            if token == llm.token_eos():
                break
            count += 1
            if count == CHAT_TOKENS:
                break
        end = time.perf_counter()
        decode_time += end - first
        decoded += count - 1
        print(f"chat round: {len(tokens)} prompt + {count} new tokens in {end - started:.2f} s "
              f"(prompt and first token {first - started:.2f} s)")
    print(f"chat (llama-cpp-python, greedy, {CHAT_TOKENS} tokens): {decoded / decode_time:.1f} tokens/s")
