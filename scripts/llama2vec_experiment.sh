#!/usr/bin/env bash
# The Llama2Vec claim at small scale: (a) base, (b) finetune only, (c) adapt then the same
# finetune, evaluated on SciFact test and NFCorpus dev (reduced corpora, exact scan).
#
#   scripts/llama2vec_experiment.sh OUT_DIR [ADAPT_STEPS] [FINETUNE_STEPS] [ROWS]
#
# ROWS = train (the reference: the 16 <sN> rows train) or frozen (train.train_special_rows =
# false: last:4 back-propagates through 4 layers only, ~3x faster). Every step's wall time is
# printed; set ENGINE_BIN / EVAL_BIN to use prebuilt binaries. Evaluation size and precision:
# SCIFACT_QUERIES (default 300 = all of test), NFCORPUS_QUERIES (60), EXTRA_DOCS (300),
# EVAL_DTYPE (bf16 where the CPU has AVX-512 BF16, else set f32). SEED overrides train.seed for
# both stages (another fine-tuning seed: link OUT/adapted to an earlier run's to reuse it).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: OUT_DIR [ADAPT_STEPS] [FINETUNE_STEPS] [ROWS]}
ADAPT_STEPS=${2:-60}
FT_STEPS=${3:-60}
ROWS=${4:-train}
SCIFACT_QUERIES=${SCIFACT_QUERIES:-300}
NFCORPUS_QUERIES=${NFCORPUS_QUERIES:-60}
EXTRA_DOCS=${EXTRA_DOCS:-300}
EVAL_DTYPE=${EVAL_DTYPE:-bf16}
D=${DATASETS:-../shared/datasets}
M=${MODEL:-data/models/SmolLM2-135M-Instruct.Q4_1.gguf}
case "$ROWS" in train) SPECIAL=true ;; frozen) SPECIAL=false ;; *) echo "ROWS must be train or frozen" >&2; exit 2 ;; esac
if [[ -z "${ENGINE_BIN:-}" || -z "${EVAL_BIN:-}" ]]; then
    cargo build --release --bin engine --example llama2vec_eval
fi
TARGET=${CARGO_TARGET_DIR:-target}
E=${ENGINE_BIN:-$TARGET/release/engine}
V=${EVAL_BIN:-$TARGET/release/examples/llama2vec_eval}
mkdir -p "$OUT"
for stage in adapt finetune; do
    { cat "configs/experiment-$stage.toml"; echo "train_special_rows = $SPECIAL"
      [[ -n "${SEED:-}" ]] && echo "seed = $SEED"; true; } > "$OUT/$stage.toml"
done
timed() { local s; s=$(date +%s); "$@"; echo "TIME $(( $(date +%s) - s )) s: $*"; }
# A stage whose output folder already holds a model is skipped, so a rerun only redoes what is missing.
done_() { [[ -f "$1/model.safetensors" ]] && echo "skip: $1 exists"; }
done_ "$OUT/adapted" || timed "$E" --config "$OUT/adapt.toml" adapt --model "$M" --corpus "$D/wikitext-2/wiki.train.tokens.shuffled" \
    --corpus "$D/scifact/corpus.jsonl" --corpus "$D/nfcorpus/corpus.jsonl" --out "$OUT/adapted" --max-steps "$ADAPT_STEPS"
done_ "$OUT/ft_base" || timed "$E" --config "$OUT/finetune.toml" finetune --model "$M" --train "$D/scifact" --out "$OUT/ft_base" --max-steps "$FT_STEPS"
done_ "$OUT/ft_adapted" || timed "$E" --config "$OUT/finetune.toml" finetune --model "$OUT/adapted" --train "$D/scifact" --out "$OUT/ft_adapted" --max-steps "$FT_STEPS"
# (a) base, (b) finetune only, (c) adapt then finetune; one JSON result per model and dataset.
for name in a b c; do
    case $name in a) m=$M ;; b) m=$OUT/ft_base ;; c) m=$OUT/ft_adapted ;; esac
    for spec in "scifact test $SCIFACT_QUERIES" "nfcorpus dev $NFCORPUS_QUERIES"; do
        read -r data split queries <<< "$spec"
        result=$OUT/eval-$name-$data.json
        if grep -qs ndcg10_per_query "$result"; then echo "skip: $result exists"; continue; fi
        timed "$V" "$m" "$D/$data" "$split" "$queries" "$EXTRA_DOCS" 128 llama2vec "$EVAL_DTYPE" | tee "$result"
    done
done
# Paired randomization tests on per-query nDCG@10: the claim is (c) > (b).
for data in scifact nfcorpus; do
    scripts/paired_test.py "$OUT/eval-b-$data.json" "$OUT/eval-c-$data.json"
    scripts/paired_test.py "$OUT/eval-a-$data.json" "$OUT/eval-b-$data.json"
done
