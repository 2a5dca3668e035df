#!/usr/bin/env python3
"""Checks a running `engine serve` with the official `openai` Python client (PyPI) and a
text-embeddings-inference-shaped request, against the engine's own `/embed` shape.

    python3 scripts/openai_client_check.py http://127.0.0.1:8080 [--key KEY] [TEXT ...]

Checks, for the given texts (or a few built in):
- `client.embeddings.create` (the client's default base64 transfer, and encoding_format="float",
  and one string as input) returns one vector per text, in order, equal to `/embed`'s
  `{"texts", "kind": "passage"}`; `extra_body={"input_type": "query"}` equals `kind: "query"`;
- `/v1/models` lists the served model; an unknown model raises `openai.NotFoundError` and a
  wrong `dimensions` `openai.UnprocessableEntityError` (422), with the server's message;
- TEI's `{"inputs": [...], "prompt_name": "passage"}` returns a bare list equal to the passage
  vectors, and without `prompt_name` the query vectors.

Prints one JSON object on stdout: {"model", "texts", "openai": [[...]], "openai_query": [[...]],
"tei": [[...]]}, so a caller can compare the vectors with `engine embed`'s. Exits non-zero, with
the reason on stderr, on any mismatch.
"""

import argparse
import json
import math
import sys
import urllib.error
import urllib.request

import openai

TOLERANCE = 1e-5
DEFAULT_TEXTS = [
    "Dense retrieval ranks passages by the inner product of embeddings.",
    "BM25 is a bag-of-words ranking function.",
    "hello",
]


def fail(message):
    print(f"openai_client_check: FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def post(base, path, body, key):
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        fail(f"POST {path} answered {e.code}: {e.read().decode(errors='replace')}")


def same(name, got, want):
    if len(got) != len(want):
        fail(f"{name}: {len(got)} vectors, expected {len(want)}")
    for i, (a, b) in enumerate(zip(got, want)):
        if len(a) != len(b):
            fail(f"{name}[{i}]: dimension {len(a)}, expected {len(b)}")
        worst = max(abs(x - y) for x, y in zip(a, b))
        if worst > TOLERANCE:
            fail(f"{name}[{i}] differs by {worst}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("url", help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--key", default="", help="API key (admin or read)")
    ap.add_argument("texts", nargs="*")
    args = ap.parse_intermixed_args()
    base = args.url.rstrip("/")
    texts = args.texts or DEFAULT_TEXTS

    client = openai.OpenAI(base_url=base + "/v1", api_key=args.key or "none", max_retries=0)
    models = [m.id for m in client.models.list().data]
    if len(models) != 1:
        fail(f"/v1/models lists {models}, expected one model")
    model = models[0]

    # The client asks for base64 unless told otherwise, and decodes it itself.
    r = client.embeddings.create(model=model, input=texts)
    if r.object != "list" or r.model != model:
        fail(f"response object {r.object!r} model {r.model!r}")
    if [d.index for d in r.data] != list(range(len(texts))):
        fail(f"indices {[d.index for d in r.data]}")
    if r.usage.prompt_tokens <= 0 or r.usage.total_tokens != r.usage.prompt_tokens:
        fail(f"usage {r.usage}")
    via_base64 = [list(map(float, d.embedding)) for d in r.data]
    as_float = client.embeddings.create(model=model, input=texts, encoding_format="float")
    via_float = [d.embedding for d in as_float.data]
    same("base64 vs float", via_base64, via_float)
    one = client.embeddings.create(model=model, input=texts[0], encoding_format="float")
    same("single string input", [one.data[0].embedding], via_float[:1])
    for v in via_float:
        norm = math.sqrt(sum(x * x for x in v))
        if abs(norm - 1.0) > 1e-4:
            fail(f"vector norm {norm}, expected 1")
    query = client.embeddings.create(
        model=model, input=texts, encoding_format="float", extra_body={"input_type": "query"}
    )
    via_query = [d.embedding for d in query.data]

    # Errors arrive as the client's own exception types.
    try:
        client.embeddings.create(model="no-such-model", input=texts[0])
        fail("an unknown model was accepted")
    except openai.NotFoundError as e:
        if "not served" not in str(e):
            fail(f"unknown model: unexpected message {e}")
    dim = len(via_float[0])
    try:
        client.embeddings.create(model=model, input=texts[0], dimensions=dim + 1)
        fail("a wrong dimensions was accepted")
    except openai.UnprocessableEntityError as e:
        if "dimensions" not in str(e):
            fail(f"dimensions: unexpected message {e}")

    # The engine's own shape, and TEI's.
    own = post(base, "/embed", {"texts": texts, "kind": "passage"}, args.key)["embeddings"]
    own_query = post(base, "/embed", {"texts": texts, "kind": "query"}, args.key)["embeddings"]
    same("openai vs /embed passage", via_float, own)
    same("openai input_type=query vs /embed query", via_query, own_query)
    tei = post(base, "/embed", {"inputs": texts, "prompt_name": "passage"}, args.key)
    if not isinstance(tei, list):
        fail(f"TEI /embed answered {type(tei).__name__}, expected a bare list")
    same("TEI prompt_name=passage vs /embed passage", tei, own)
    tei_query = post(base, "/embed", {"inputs": texts}, args.key)
    same("TEI default vs /embed query", tei_query, own_query)
    tei_one = post(base, "/embed", {"inputs": texts[0], "prompt_name": "passage"}, args.key)
    same("TEI single string", tei_one, own[:1])

    json.dump(
        {"model": model, "texts": texts, "openai": via_float, "openai_query": via_query, "tei": tei},
        sys.stdout,
    )
    print()
    print(
        f"openai_client_check: ok (openai {openai.__version__}, model {model}, {len(texts)} texts, dim {dim})",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
