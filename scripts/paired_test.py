#!/usr/bin/env python3
"""Paired comparison of two models' per-query nDCG@10 (`engine eval --per-query-out` files, or
JSON lines of examples/llama2vec_eval).

    scripts/paired_test.py A.json B.json [--rounds 100000]
    scripts/paired_test.py A1.json,A2.json B1.json,B2.json   # e.g. two training seeds each

A comma-separated list averages each query's nDCG@10 over its files before comparing.

Prints mean(B) - mean(A) over the queries both evaluated, a 95% bootstrap interval of that
difference, and a two-sided paired randomization test p-value (swap A/B per query at random):
the usual significance test in IR (Smucker et al., CIKM 2007). Standard library only.
"""
import argparse
import json
import random


def load(path):
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{") and "ndcg10_per_query" in line:
                r = json.loads(line)
                r.setdefault("model", path)
                r.setdefault("data", "")
                return r
    raise SystemExit(f"{path}: no llama2vec_eval result line with ndcg10_per_query")


def load_mean(paths):
    """One model's per-query nDCG@10, averaged over one or more result files (e.g. seeds)."""
    results = [load(p) for p in paths.split(",")]
    queries = set.intersection(*(set(r["ndcg10_per_query"]) for r in results))
    per_query = {q: sum(r["ndcg10_per_query"][q] for r in results) / len(results) for q in queries}
    return {"model": ",".join(r["model"] for r in results), "data": results[0]["data"],
            "ndcg10_per_query": per_query}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    ra, rb = load_mean(args.a), load_mean(args.b)
    qa, qb = ra["ndcg10_per_query"], rb["ndcg10_per_query"]
    common = sorted(set(qa) & set(qb))
    if not common:
        raise SystemExit("the two results share no query")
    diffs = [qb[q] - qa[q] for q in common]
    n = len(diffs)
    observed = sum(diffs) / n
    rng = random.Random(args.seed)
    extreme = 0
    for _ in range(args.rounds):
        s = sum(d if rng.random() < 0.5 else -d for d in diffs) / n
        extreme += abs(s) >= abs(observed) - 1e-12
    boots = sorted(sum(rng.choice(diffs) for _ in range(n)) / n for _ in range(2000))
    lo, hi = boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]
    print(json.dumps({
        "a": ra["model"], "b": rb["model"], "data": ra["data"], "queries": n,
        "mean_a": sum(qa[q] for q in common) / n, "mean_b": sum(qb[q] for q in common) / n,
        "diff_b_minus_a": observed, "ci95": [lo, hi],
        "p_two_sided": (extreme + 1) / (args.rounds + 1),
        "wins_b": sum(d > 0 for d in diffs), "wins_a": sum(d < 0 for d in diffs),
    }))


if __name__ == "__main__":
    main()
