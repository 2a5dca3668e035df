#!/usr/bin/env bash
# Full-corpus evaluation of one encoder through `engine index` + `engine eval` only: for each
# dataset, index the whole corpus (exact `flat` backend, bf16 kernel, llama2vec pooling), then
# evaluate BM25, dense and hybrid (the default fusion) with per-query nDCG@10, and run paired
# randomization tests of dense and hybrid against BM25. Every stage's wall time is printed.
#
#   scripts/eval-encoder.sh MODEL OUT_DIR [DATASET:SPLIT ...]
#
# Default datasets: scifact:test nfcorpus:dev cranfield:test. A dataset whose database is
# complete is not re-indexed (`engine index` resumes an interrupted one). ENGINE_BIN uses a
# prebuilt binary; POOLING (default llama2vec) overrides the pooling. ALPHAS="0.1 0.2 ..." also
# evaluates hybrid with RRF and with convex fusion at each dense weight (`eval.hybrid_alpha`),
# each tested against BM25: the sweep behind the default alpha.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${1:?usage: MODEL OUT_DIR [DATASET:SPLIT ...]}
# Absolute: a relative model.path in a config file is read relative to the file's folder.
MODEL=$(realpath "$MODEL")
OUT=${2:?usage: MODEL OUT_DIR [DATASET:SPLIT ...]}
shift 2
SETS=("$@")
[[ ${#SETS[@]} -eq 0 ]] && SETS=(scifact:test nfcorpus:dev cranfield:test)
D=${DATASETS:-../shared/datasets}
E=${ENGINE_BIN:-${CARGO_TARGET_DIR:-target}/release/engine}
mkdir -p "$OUT"
cat > "$OUT/eval.toml" <<TOML
[model]
path = "$MODEL"
dtype = "bf16"
[encoder]
pooling = "${POOLING:-llama2vec}"
template = "llama2vec"
max_passage_tokens = 256
[index]
backend = "flat"
TOML
timed() { local s; s=$(date +%s); "$@"; echo "TIME $(( $(date +%s) - s )) s: $*" >&2; }
for spec in "${SETS[@]}"; do
    name=${spec%%:*}
    split=${spec##*:}
    db=$OUT/db-$name
    timed "$E" --config "$OUT/eval.toml" index "$D/$name" --db "$db"
    for mode in bm25 dense hybrid; do
        timed "$E" --config "$OUT/eval.toml" eval --db "$db" --dataset "$D/$name" --split "$split" \
            --mode "$mode" --run-out "$OUT/$name-$mode.run" --per-query-out "$OUT/$name-$mode.per-query.json" \
            > "$OUT/$name-$mode.json"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], 'nDCG@10 %.4f  R@100 %.4f' % (r['ndcg@10'], r['recall@100']))" \
            "$OUT/$name-$mode.json" "$name" "$mode"
    done
    for mode in dense hybrid; do
        echo "== $name: $mode vs bm25"
        scripts/paired_test.py "$OUT/$name-bm25.per-query.json" "$OUT/$name-$mode.per-query.json"
    done
    [[ -z ${ALPHAS:-} ]] && continue
    for fusion in rrf ${ALPHAS}; do
        variant=hybrid-$fusion
        if [[ $fusion == rrf ]]; then eval_toml='fusion = "rrf"'; else eval_toml="fusion = \"convex\"
hybrid_alpha = $fusion"; fi
        { cat "$OUT/eval.toml"; printf '[eval]\n%s\n' "$eval_toml"; } > "$OUT/$variant.toml"
        "$E" --config "$OUT/$variant.toml" eval --db "$db" --dataset "$D/$name" --split "$split" \
            --mode hybrid --per-query-out "$OUT/$name-$variant.per-query.json" > "$OUT/$name-$variant.json"
        python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], sys.argv[3], 'nDCG@10 %.4f  R@100 %.4f' % (r['ndcg@10'], r['recall@100']))" \
            "$OUT/$name-$variant.json" "$name" "$variant"
        scripts/paired_test.py "$OUT/$name-bm25.per-query.json" "$OUT/$name-$variant.per-query.json"
    done
done
