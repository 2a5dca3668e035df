#!/usr/bin/env bash
# The Llama2Vec claim at small scale: (a) base, (b) finetune only, (c) adapt then the same
# finetune, evaluated on SciFact test and NFCorpus dev (reduced corpora, exact scan).
#
#   scripts/llama2vec_experiment.sh OUT_DIR [ADAPT_STEPS] [FINETUNE_STEPS] [ROWS]
#
# ROWS = train (the reference: the 16 <sN> rows train) or frozen (train.train_special_rows =
# false: last:4 back-propagates through 4 layers only, ~3x faster). Every step's wall time is
# printed; set ENGINE_BIN / EVAL_BIN to use prebuilt binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: OUT_DIR [ADAPT_STEPS] [FINETUNE_STEPS] [ROWS]}
ADAPT_STEPS=${2:-60}
FT_STEPS=${3:-60}
ROWS=${4:-train}
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
    { cat "configs/experiment-$stage.toml"; echo "train_special_rows = $SPECIAL"; } > "$OUT/$stage.toml"
done
timed() { local s; s=$(date +%s); "$@"; echo "TIME $(( $(date +%s) - s )) s: $*"; }
timed "$E" --config "$OUT/adapt.toml" adapt --model "$M" --corpus "$D/wikitext-2/wiki.train.tokens.shuffled" \
    --corpus "$D/scifact/corpus.jsonl" --corpus "$D/nfcorpus/corpus.jsonl" --out "$OUT/adapted" --max-steps "$ADAPT_STEPS"
timed "$E" --config "$OUT/finetune.toml" finetune --model "$M" --train "$D/scifact" --out "$OUT/ft_base" --max-steps "$FT_STEPS"
timed "$E" --config "$OUT/finetune.toml" finetune --model "$OUT/adapted" --train "$D/scifact" --out "$OUT/ft_adapted" --max-steps "$FT_STEPS"
for m in "$M" "$OUT/ft_base" "$OUT/ft_adapted"; do
    timed "$V" "$m" "$D/scifact" test 100 300 128
    timed "$V" "$m" "$D/nfcorpus" dev 30 100 128
done
