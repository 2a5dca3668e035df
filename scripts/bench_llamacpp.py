"""llama.cpp side of `engine bench encode`: embeds BATCH sequences of TOKENS tokens and times a
QUERY-TOKENS query. Each sequence is one llama_decode in a context of its own length: packing all
sequences into one context makes llama.cpp attend across the whole shared KV cache (32x the
attention work at 32 x 128), which measured 36 tok/s here instead of ~200.
Prints one JSON line: {"tokens_per_s", "query_p50_ms", "n_ctx"}."""
import argparse
import json
import statistics
import time

import llama_cpp

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--batch", type=int, default=32)
ap.add_argument("--tokens", type=int, default=128)
ap.add_argument("--query-tokens", type=int, default=16)
ap.add_argument("--threads", type=int, default=2)
a = ap.parse_args()

n_tok = a.batch * a.tokens


def load(n_ctx, n_seq):
    # n_ctx equal to one batch: attention spans the whole KV cache, so a larger context only
    # adds work (a 16-token query in a 4096 context is ~50x slower).
    return llama_cpp.Llama(
        model_path=a.model,
        embedding=True,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_LAST,
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_seq_max=n_seq,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        verbose=False,
    )


batch_llm = load(a.tokens, 1)
query_llm = load(max(32, a.query_tokens), 1)


def seq(n, offset):
    return [1000 + ((i * 37 + offset * 101) % 20000) for i in range(n)]


def run(llm, seqs):
    ctx = llm._ctx
    batch = llama_cpp.llama_batch_init(sum(len(s) for s in seqs), 0, len(seqs))
    try:
        k = 0
        for sid, s in enumerate(seqs):
            for pos, tok in enumerate(s):
                batch.token[k] = tok
                batch.pos[k] = pos
                batch.n_seq_id[k] = 1
                batch.seq_id[k][0] = sid
                batch.logits[k] = pos == len(s) - 1
                k += 1
        batch.n_tokens = k
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx.ctx), True)
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise SystemExit("llama_decode failed")
        for sid in range(len(seqs)):
            llama_cpp.llama_get_embeddings_seq(ctx.ctx, sid)
    finally:
        llama_cpp.llama_batch_free(batch)


seqs = [seq(a.tokens, i) for i in range(a.batch)]
run(batch_llm, seqs[:1])
t = time.perf_counter()
for s in seqs:
    run(batch_llm, [s])
tps = n_tok / (time.perf_counter() - t)
q = [seq(a.query_tokens, 7)]
run(query_llm, q)
times = []
for _ in range(7):
    t = time.perf_counter()
    run(query_llm, q)
    times.append((time.perf_counter() - t) * 1000)
print(json.dumps({"tokens_per_s": tps, "query_p50_ms": statistics.median(times), "n_ctx": a.tokens}))
