#!/usr/bin/env bash
# Starts a throwaway PostgreSQL server (Debian's packages, installed if missing) on a free
# loopback port and prints its URL. `scripts/pg.sh stop DIR` stops one started earlier,
# `scripts/pg.sh start DIR` starts it again on the same port (the fault tests use both).
# The server keeps its files in $RUNWAY_PG_DIR (default: a new temporary folder).
set -euo pipefail

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_server() { # DIR PORT
  # fsync off: a test server's data need not survive a power cut, and it makes tests faster.
  as_postgres "$(pg_bin)/pg_ctl" -D "$1/data" -l "$1/log" -w \
    -o "-p $2 -k $1 -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c max_connections=400" \
    start >/dev/null
}

if [ "${1:-}" = "stop" ]; then
  as_postgres "$(pg_bin)/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null 2>&1 || true
  exit 0
fi
if [ "${1:-}" = "start" ]; then
  start_server "$2" "$(cat "$2/port")"
  exit 0
fi

if [ -z "$(pg_bin)" ] || [ ! -x "$(pg_bin)/initdb" ]; then
  echo "installing PostgreSQL from Debian's packages…" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN=$(pg_bin)

DIR=${RUNWAY_PG_DIR:-$(mktemp -d /tmp/runway-pg.XXXXXX)}
mkdir -p "$DIR"
if [ "$(id -u)" = 0 ]; then chown postgres: "$DIR"; fi
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_postgres "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
echo "$PORT" > "$DIR/port"
start_server "$DIR" "$PORT"
echo "postgres://postgres@127.0.0.1:$PORT/postgres"
