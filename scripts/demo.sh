#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, fetch the model, build, index the
# sample corpus in data/sample and serve the search UI at http://127.0.0.1:8080/.
set -euo pipefail
cd "$(dirname "$0")/.."
ENGINE_SKIP_BROWSER=1 ./scripts/install-deps.sh
./scripts/fetch-model.sh
cargo build --release
bin="${CARGO_TARGET_DIR:-target}/release/engine"
"$bin" --config configs/demo.toml info
"$bin" --config configs/demo.toml index data/sample --db data/sample.db
"$bin" --config configs/demo.toml search --db data/sample.db -k 3 "why does bread rise"
echo "serving http://${ENGINE_ADDR:-127.0.0.1:8080}/ (Ctrl-C stops)"
exec "$bin" --config configs/demo.toml serve --db data/sample.db --addr "${ENGINE_ADDR:-127.0.0.1:8080}"
