"""Writes tests/fixtures/llamacpp_hidden.json: llama.cpp's final-norm hidden states (embeddings
on, pooling none) and token ids for a few fixed texts on the default GGUF, the independent
reference the engine's forward is checked against (tests/reference_llamacpp.rs).

Usage: $(scripts/llamacpp-venv.sh) scripts/make_reference_fixture.py data/models/SmolLM2-135M-Instruct.Q4_1.gguf
"""
import json
import sys

import llama_cpp

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Dense retrieval embeds queries and passages with 2 encoders in 1998.",
    '"Paris is the capital of France", summarize the above passage within eight words:',
]

model = sys.argv[1]
llm = llama_cpp.Llama(
    model_path=model,
    embedding=True,
    pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
    n_ctx=256,
    n_threads=2,
    verbose=False,
)
cases = []
for text in TEXTS:
    # The same call embed() makes: BOS only if the GGUF asks for it (SmolLM2 does not).
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    hidden = llm.embed(text, normalize=False)
    assert len(hidden) == len(ids), (len(hidden), len(ids))
    cases.append(
        {"text": text, "ids": ids, "hidden": [[round(x, 5) for x in row] for row in hidden]}
    )
json.dump(
    {
        "made_by": "scripts/make_reference_fixture.py with llama-cpp-python "
        + llama_cpp.__version__,
        "model": "SmolLM2-135M-Instruct.Q4_1.gguf (sha256 b179c952...)",
        "cases": cases,
    },
    open("tests/fixtures/llamacpp_hidden.json", "w"),
)
print("wrote", sum(len(c["ids"]) for c in cases), "positions")
