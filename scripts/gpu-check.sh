#!/usr/bin/env bash
# The GPU measurements of the CUDA build, as one script for a lent GPU machine (which has the
# NVIDIA driver and a PyTorch environment with the CUDA 13 libraries, but no Rust): build here
# with `scripts/cuda-build.sh`, then run this there from the repository root, e.g. through the
# device tool with carry ["target/cuda/release/engine", "data/models"].
#
#   scripts/gpu-check.sh [OUT_DIR]      (default: $OUT, else runs/gpu-check)
#
# It writes OUT_DIR/summary.txt and one file per stage:
#   1. `engine info` on cuda, and that `--device auto` picks it;
#   2. `engine bench encode` on cuda (bf16, f32; 32 x 128, 128 x 256) and `engine bench train`;
#   3. cosine of 100 SciFact passages and 20 queries embedded on cuda (bf16) and on the CPU
#      (f32): the minimum must be >= 0.999 (exit 1 otherwise);
#   4. end to end: `engine index` of Cranfield on cuda, then `engine eval` (dense, bm25, hybrid).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-runs/gpu-check}}
mkdir -p "$OUT"
E=${ENGINE_BIN:-target/cuda/release/engine}
MODEL=${MODEL:-$PWD/encoders/smollm2-135m-llama2vec-scifact}
D=${DATASETS:-../shared/datasets}
[[ -x $E ]] || { echo "no CUDA build at $E: run scripts/cuda-build.sh first" >&2; exit 2; }
# The CUDA libraries the binary loads at run time (cuBLAS, cuRAND, NVRTC): from the Python
# environment's nvidia wheels when the system has none.
libs=$(python3 - <<'PY' 2>/dev/null || true
import glob, os, site
dirs = set()
for base in site.getsitepackages() + [site.getusersitepackages()]:
    for lib in glob.glob(os.path.join(base, "nvidia", "**", "lib*.so*"), recursive=True):
        dirs.add(os.path.dirname(lib))
print(":".join(sorted(dirs)))
PY
)
export LD_LIBRARY_PATH=${libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
timed() { local s; s=$(date +%s.%N); "$@"; echo "TIME $(echo "$(date +%s.%N) - $s" | bc) s: $*" >> "$OUT/times.txt"; }

# 1. the device is found, and auto picks it
ENGINE__MODEL__DEVICE=cuda "$E" info --model "$MODEL" | tee "$OUT/info-cuda.json"
ENGINE__MODEL__DEVICE=auto "$E" info --model "$MODEL" > "$OUT/info-auto.json"
python3 -c "import json,sys; sys.exit(json.load(open(sys.argv[1]))['device'] != 'cuda')" "$OUT/info-auto.json" \
    || { echo "--device auto did not pick cuda" >&2; exit 1; }

# 2. speed
export ENGINE__MODEL__DEVICE=cuda
timed "$E" bench encode --model "$MODEL" --dtypes bf16,f32 --batch 32 --tokens 128 | tee "$OUT/bench-encode-32x128.txt"
timed "$E" bench encode --model "$MODEL" --dtypes bf16 --batch 128 --tokens 256 | tee "$OUT/bench-encode-128x256.txt"
timed "$E" bench train --model "$MODEL" | tee "$OUT/bench-train.txt" || echo "bench train failed" | tee -a "$OUT/summary.txt"

# 3. agreement with the CPU f32 embeddings
python3 - "$D/scifact" "$OUT" <<'PY'
import json, sys
d, out = sys.argv[1], sys.argv[2]
docs = [json.loads(l) for l in open(f"{d}/corpus.jsonl")][:100]
qs = [json.loads(l) for l in open(f"{d}/queries.jsonl")][:20]
open(f"{out}/passage.txt", "w").write("".join((x["title"] + " " + x["text"]).replace("\n", " ")[:1500] + "\n" for x in docs))
open(f"{out}/query.txt", "w").write("".join(x["text"].replace("\n", " ") + "\n" for x in qs))
PY
for kind in passage query; do
    f=$OUT/$kind.txt
    ENGINE__MODEL__DTYPE=bf16 "$E" embed --model "$MODEL" --kind $kind --file "$f" > "$OUT/emb-cuda-$kind.jsonl"
    ENGINE__MODEL__DEVICE=cpu ENGINE__MODEL__DTYPE=f32 "$E" embed --model "$MODEL" --kind $kind --file "$f" > "$OUT/emb-cpu-$kind.jsonl"
done
python3 - "$OUT" <<'PY' | tee -a "$OUT/summary.txt"
import json, math, sys
out = sys.argv[1]
worst = 1.0
for kind in ("passage", "query"):
    a = [json.loads(l)["embedding"] for l in open(f"{out}/emb-cuda-{kind}.jsonl")]
    b = [json.loads(l)["embedding"] for l in open(f"{out}/emb-cpu-{kind}.jsonl")]
    cos = [sum(x * y for x, y in zip(u, v)) / math.sqrt(sum(x * x for x in u) * sum(y * y for y in v)) for u, v in zip(a, b)]
    print(f"cosine cuda bf16 vs cpu f32, {len(cos)} {kind}s: min {min(cos):.5f} mean {sum(cos) / len(cos):.5f}")
    worst = min(worst, min(cos))
sys.exit(0 if worst >= 0.999 else 1)
PY

# 4. end to end on Cranfield
cat > "$OUT/eval.toml" <<TOML
[model]
path = "$MODEL"
dtype = "bf16"
device = "cuda"
[index]
backend = "flat"
TOML
timed "$E" --config "$OUT/eval.toml" index "$D/cranfield" --db "$OUT/db-cranfield" | tail -3 | tee "$OUT/index-cranfield.txt"
for mode in bm25 dense hybrid; do
    "$E" --config "$OUT/eval.toml" eval --db "$OUT/db-cranfield" --dataset "$D/cranfield" --split test --mode $mode > "$OUT/cranfield-$mode.json"
    python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print('cranfield', sys.argv[2], 'nDCG@10 %.4f' % r['ndcg@10'])" "$OUT/cranfield-$mode.json" $mode | tee -a "$OUT/summary.txt"
done
cat "$OUT/times.txt" >> "$OUT/summary.txt"
echo "done: $OUT/summary.txt"
