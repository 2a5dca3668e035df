#!/usr/bin/env bash
# Builds llama-cpp-python (llama.cpp, from source, native CPU flags) into .venv-llamacpp for the
# side-by-side encoder benchmark and the reference-fixture script. Takes ~5 minutes once.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-llamacpp
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import llama_cpp" 2>/dev/null; then
  echo "$venv/bin/python"
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/pip" install --quiet numpy llama-cpp-python==0.3.36 >&2
echo "$venv/bin/python"
