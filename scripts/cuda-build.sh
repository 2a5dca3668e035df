#!/usr/bin/env bash
# The CUDA build: installs the CUDA 13.0 toolchain (nvcc, runtime headers, CCCL, NVRTC) from
# PyPI into the git-ignored folder .cuda/ (or CUDA_TOOLKIT_DIR; a no-op when it is there), then builds
# `--features cuda` into target/cuda, leaving target/cuda/release/engine.
#
#   scripts/cuda-build.sh            # cargo build --release --features cuda
#   scripts/cuda-build.sh check      # cargo check --features cuda (what CI runs: no GPU needed)
#
# The wheels are pinned to 13.0, the CUDA version of the lent GPU machine's driver (580): PTX
# from a newer nvcc would not load there. CUDA_COMPUTE_CAP (default 90, H100/H200) picks the
# architecture the kernels are compiled for when no GPU is visible. The binary loads the CUDA
# libraries (libcuda, cuBLAS, cuRAND, NVRTC) at run time: on the GPU machine they come from
# the driver and its PyTorch environment (LD_LIBRARY_PATH, see scripts/gpu-check.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-build}
TOOLKIT=${CUDA_TOOLKIT_DIR:-$PWD/.cuda}
CUDA_VERSION=13.0
pins=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88
      nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85 nvidia-cuda-nvrtc==13.0.88)
root=$TOOLKIT/nvidia/cu13
if [[ ! -x $root/bin/nvcc || ! -f $TOOLKIT/.pins || "$(cat "$TOOLKIT/.pins")" != "${pins[*]}" ]]; then
    echo "installing the CUDA $CUDA_VERSION toolchain from PyPI into $TOOLKIT"
    rm -rf "$TOOLKIT"
    python3 -m pip install --quiet --no-warn-script-location --target "$TOOLKIT" "${pins[@]}" \
        || python3 -m pip install --quiet --break-system-packages --no-warn-script-location \
            --target "$TOOLKIT" "${pins[@]}"
    echo "${pins[*]}" > "$TOOLKIT/.pins"
fi
# The wheels split the toolkit into parts that nvcc expects in one tree: CCCL's headers sit in
# include/cccl, and cudarc's build reads the version from CUDA_ROOT.
[[ -e $root/lib64 ]] || ln -s lib "$root/lib64"
for d in cuda cub thrust nv; do
    [[ -e $root/include/$d || ! -e $root/include/cccl/$d ]] || ln -s "cccl/$d" "$root/include/$d"
done
export CUDA_ROOT=$root CUDA_PATH=$root CUDA_HOME=$root
export PATH=$root/bin:$PATH
export LD_LIBRARY_PATH=$root/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
nvcc --version | tail -2
case $MODE in
    # check shares the CPU build's folder when one is set (CI's), so FAISS is not rebuilt.
    check) export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/cuda}
           cargo check --release --features cuda --lib --bins ;;
    build) export CARGO_TARGET_DIR=target/cuda
           cargo build --release --features cuda --bin engine
           echo "built $CARGO_TARGET_DIR/release/engine" ;;
    *) echo "usage: scripts/cuda-build.sh [build|check]" >&2; exit 2 ;;
esac
