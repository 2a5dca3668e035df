#!/usr/bin/env bash
# The Llama2Vec claim on full corpora: (b) fine-tune the base, (c) adapt (EBAE + EBAR + LM) and
# then the same fine-tuning, both with the CPU recipe's fine-tuning settings
# (configs/recipe-finetune.toml, SciFact train + NFCorpus train), evaluated through
# `engine index` + `engine eval` on SciFact test and NFCorpus dev (scripts/eval-encoder.sh), then
# paired randomization tests of (c) vs (b). (a), the base, is in docs/results.md.
#
#   scripts/llama2vec_experiment.sh OUT_DIR [ADAPT_STEPS] [ROWS]
#
# ROWS = train (the reference: the 16 <sN> rows train during adaptation) or frozen
# (train.train_special_rows = false: last:4 back-propagates through 4 layers only, ~3x faster).
# Every stage is resumable and skipped once done, so the hours this takes on 2 CPU cores can
# be spread over several runs. ENGINE_BIN uses a prebuilt binary; SEED overrides train.seed.
# (b) may reuse scripts/train-encoder.sh's run: link OUT_DIR/ft_base to it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:?usage: OUT_DIR [ADAPT_STEPS] [ROWS]}
ADAPT_STEPS=${2:-300}
ROWS=${3:-train}
D=${DATASETS:-../shared/datasets}
M=${MODEL:-data/models/SmolLM2-135M-Instruct.Q4_1.gguf}
case "$ROWS" in train) SPECIAL=true ;; frozen) SPECIAL=false ;; *) echo "ROWS must be train or frozen" >&2; exit 2 ;; esac
if [[ -z "${ENGINE_BIN:-}" ]]; then
    cargo build --release --bin engine
fi
E=${ENGINE_BIN:-${CARGO_TARGET_DIR:-target}/release/engine}
export ENGINE_BIN=$E
mkdir -p "$OUT"
{ cat configs/experiment-adapt.toml; echo "train_special_rows = $SPECIAL"
  [[ -n "${SEED:-}" ]] && echo "seed = $SEED"; true; } > "$OUT/adapt.toml"
{ cat configs/recipe-finetune.toml; [[ -n "${SEED:-}" ]] && echo "seed = $SEED"; true; } > "$OUT/finetune.toml"
timed() { local s; s=$(date +%s); "$@"; echo "TIME $(( $(date +%s) - s )) s: $*"; }
resume() { [[ -f "$1/checkpoint/state.json" ]] && echo --resume; true; }
done_() { [[ -f "$1/model.safetensors" ]] && echo "skip: $1 exists"; }
done_ "$OUT/adapted" || timed "$E" --config "$OUT/adapt.toml" adapt --model "$M" \
    --corpus "$D/wikitext-2/wiki.train.tokens.shuffled" --corpus "$D/scifact/corpus.jsonl" \
    --corpus "$D/nfcorpus/corpus.jsonl" --out "$OUT/adapted" --max-steps "$ADAPT_STEPS" $(resume "$OUT/adapted")
for name in b c; do
    case $name in b) from=$M; dir=$OUT/ft_base ;; c) from=$OUT/adapted; dir=$OUT/ft_adapted ;; esac
    done_ "$dir" || timed "$E" --config "$OUT/finetune.toml" finetune --model "$from" \
        --train "$D/scifact" --train "$D/nfcorpus" --out "$dir" $(resume "$dir")
    scripts/eval-encoder.sh "$(realpath "$dir")" "$OUT/eval-$name" scifact:test nfcorpus:dev
done
for data in scifact nfcorpus; do
    for mode in dense hybrid; do
        echo "== $data $mode: (c) vs (b)"
        scripts/paired_test.py "$OUT/eval-b/$data-$mode.per-query.json" "$OUT/eval-c/$data-$mode.per-query.json"
    done
done
