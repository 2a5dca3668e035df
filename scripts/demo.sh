#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, fetch the model, build, then embed
# a sentence with the default encoder.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE_SKIP_BROWSER=1 ./scripts/install-deps.sh
./scripts/fetch-model.sh
cargo build --release
bin="${CARGO_TARGET_DIR:-target}/release/engine"
"$bin" info
"$bin" embed --kind query "What is dense retrieval?" | cut -c1-200
