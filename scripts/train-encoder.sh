#!/usr/bin/env bash
# The trained-encoder recipe, end to end on CPU: contrastive fine-tuning of the base
# SmolLM2-135M (configs/recipe-finetune.toml) on SciFact train (TRAIN overrides: a list of
# dataset folders, e.g. TRAIN="$D/scifact $D/nfcorpus"), then the
# trained tensors written as a delta folder that loads over the base.
#
#   scripts/train-encoder.sh [OUT_DIR] [DELTA_DIR]
#
# OUT_DIR (default runs/encoder) receives the full trained folder; DELTA_DIR (default
# runs/encoder-delta) the delta (the tensors training changed, over the base). 731 s alone on 2
# Zen 4 cores (300 steps, 128-token passages, with BM25 mining; session 14). The shipped
# encoders/smollm2-135m-llama2vec-scifact came from an earlier build (bf16 only in the frozen
# layers' projections), which reproduces it bit for bit; this one's delta matches it in quality
# (docs/results.md, "Training at the speed of the kernels").
# ENGINE_BIN uses a prebuilt binary; STEPS overrides train.max_steps.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/encoder}
DELTA=${2:-runs/encoder-delta}
D=${DATASETS:-../shared/datasets}
BASE=${BASE:-data/models/SmolLM2-135M-Instruct.Q4_1.gguf}
./scripts/fetch-model.sh
if [[ -z "${ENGINE_BIN:-}" ]]; then
    cargo build --release --bin engine
fi
E=${ENGINE_BIN:-${CARGO_TARGET_DIR:-target}/release/engine}
steps=()
[[ -n "${STEPS:-}" ]] && steps=(--max-steps "$STEPS")
resume=()
[[ -f "$OUT/checkpoint/state.json" ]] && resume=(--resume)
s=$(date +%s)
train=()
for t in ${TRAIN:-$D/scifact}; do train+=(--train "$t"); done
"$E" --config configs/recipe-finetune.toml finetune --model "$BASE" \
    "${train[@]}" --out "$OUT" "${steps[@]}" "${resume[@]}"
echo "TIME finetune $(( $(date +%s) - s )) s"
"$E" export-delta --model "$OUT" --base "$BASE" --out "$DELTA"
