#!/usr/bin/env bash
# Load test of `engine serve` with wrk (Debian package `wrk`): POST /search at 16 and 64
# connections, printing req/s, p50/p99 latency, 429 and 5xx counts and the server's RSS.
#
#   scripts/load-test.sh [DB]
#
# Without DB, data/sample is indexed with configs/demo.toml (the default, trained encoder) into
# a temporary database. With STORE=postgres://... the server serves that PostgreSQL store
# instead (data/sample is indexed into it first when no DB argument is given). DURATION (seconds per run, default 30), CONNECTIONS (default "16 64"),
# MODE (hybrid | dense | bm25, default hybrid), CONFIG (default configs/demo.toml) and
# ENGINE_BIN (default the release build) change the run. DIM=N sends a random N-number query
# `vector` with each search, so dense mode measures the store rather than the encoder.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "load-test: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
E=${ENGINE_BIN:-${CARGO_TARGET_DIR:-target}/release/engine}
CONFIG=${CONFIG:-configs/demo.toml}
DURATION=${DURATION:-30}
WORK=$(mktemp -d)
DB=${1:-$WORK/db}
if [[ -n ${STORE:-} ]]; then TARGET=(--store "$STORE"); else TARGET=(--db "$DB"); fi
if [[ -z ${1:-} ]]; then
    "$E" --config "$CONFIG" index data/sample "${TARGET[@]}" >/dev/null
fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$E" --config "$CONFIG" serve "${TARGET[@]}" --addr "127.0.0.1:$PORT" 2>"$WORK/serve.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$WORK"' EXIT
until curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null; do
    kill -0 $PID 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.2
done
rss_mb() { awk -v k="$1:" '$1 == k { printf "%.0f", $2 / 1024 }' "/proc/$PID/status"; }
# Warm the encoder so the first run does not pay for it.
curl -s "http://127.0.0.1:$PORT/search" -H 'content-type: application/json' \
    -d "{\"query\": \"warm up\", \"mode\": \"${MODE:-hybrid}\"}" >/dev/null
echo "idle RSS $(rss_mb VmRSS) MB; mode ${MODE:-hybrid}; $DURATION s per run; $(nproc) cores"
for c in ${CONNECTIONS:-16 64}; do
    # wrk needs a connection per thread at least.
    line=$(MODE=${MODE:-hybrid} wrk -t"$((c < 2 ? 1 : 2))" -c"$c" -d"${DURATION}s" --timeout 30s \
        -s scripts/wrk-search.lua "http://127.0.0.1:$PORT" | grep '^LOAD ')
    echo "connections $c: ${line#LOAD } rss_mb $(rss_mb VmRSS) peak_rss_mb $(rss_mb VmHWM)"
done
