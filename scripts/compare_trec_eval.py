#!/usr/bin/env python3
"""Check the engine's retrieval metrics against pytrec_eval (trec_eval's own C code).

Usage:
    python3 -m venv /tmp/venv-eval && /tmp/venv-eval/bin/pip install pytrec_eval-terrier
    /tmp/venv-eval/bin/python scripts/compare_trec_eval.py QRELS RUN [--places 4]

QRELS is a BEIR qrels TSV (header line, CRLF accepted) or a TREC qrels file; RUN a TREC run
(`qid Q0 docid rank score tag`). The script runs `cargo run --release --example trec_metrics`
on the same two files (set ENGINE_TREC_METRICS to a built binary to skip cargo) and compares
the mean and every per-query value. Exit status 1 if any differs at the given decimal places.

Metric mapping (pytrec_eval measure -> engine):
    ndcg_cut_10 -> ndcg@10, recall_10 -> recall@10, recall_100 -> recall@100,
    map_cut_100 -> map@100, recip_rank on the run cut to its top 10 -> mrr@10.
The top 10 for MRR uses trec_eval's order (score descending, then docid descending), the order
trec_eval itself ranks by. Judged queries missing from the run get an empty result, which
pytrec_eval scores as 0 - the same convention as the engine and BEIR.
"""

import argparse
import json
import os
import subprocess
import sys

import pytrec_eval

MEASURES = {"ndcg_cut_10": "ndcg@10", "recall_10": "recall@10", "recall_100": "recall@100",
            "map_cut_100": "map@100"}


def read_qrels(path):
    qrels = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            cols = line.split("\t") if "\t" in line else line.split()
            if len(cols) == 4:
                cols = [cols[0], cols[2], cols[3]]
            q, d, g = cols
            try:
                g = int(g)
            except ValueError:
                if i == 0:
                    continue  # BEIR header
                raise
            qrels.setdefault(q, {})[d] = g
    return qrels


def read_run(path):
    run = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            cols = line.split()
            if cols:
                run.setdefault(cols[0], {})[cols[2]] = float(cols[4])
    return run


def engine_metrics(qrels_path, run_path):
    binary = os.environ.get("ENGINE_TREC_METRICS")
    cmd = ([binary] if binary else
           ["cargo", "run", "--release", "--quiet", "--example", "trec_metrics", "--"])
    out = subprocess.run(cmd + [qrels_path, run_path, "--per-query"], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("qrels")
    ap.add_argument("run")
    ap.add_argument("--places", type=int, default=4)
    args = ap.parse_args()

    qrels = read_qrels(args.qrels)
    run = read_run(args.run)
    for q in qrels:
        run.setdefault(q, {})
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(MEASURES)).evaluate(run)
    top10 = {q: dict(sorted(docs.items(), key=lambda x: (x[1], x[0]), reverse=True)[:10])
             for q, docs in run.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    ref = {q: {MEASURES[m]: v for m, v in ms.items()} for q, ms in per_query.items()}
    for q in ref:
        ref[q]["mrr@10"] = rr[q]["recip_rank"]

    eng = engine_metrics(args.qrels, args.run)
    names = ["ndcg@10", "mrr@10", "recall@10", "recall@100", "map@100"]
    tol = 0.5 * 10 ** -args.places
    ok = True
    print(f"queries: pytrec_eval {len(ref)}, engine {eng['queries']}")
    ok &= len(ref) == eng["queries"]
    print(f"{'metric':<12}{'pytrec_eval':>14}{'engine':>14}{'max |diff| per query':>24}")
    for n in names:
        mean_ref = sum(r[n] for r in ref.values()) / len(ref)
        worst = max(abs(ref[q][n] - eng["per_query"][q][n]) for q in ref)
        same = round(mean_ref, args.places) == round(eng[n], args.places) and worst < tol
        ok &= same
        print(f"{n:<12}{mean_ref:>14.{args.places}f}{eng[n]:>14.{args.places}f}{worst:>24.2e}"
              f"  {'OK' if same else 'MISMATCH'}")
    print("agree to", args.places, "decimals" if ok else "decimals: NO")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
