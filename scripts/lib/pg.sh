#!/usr/bin/env bash
# Throwaway PostgreSQL 15 server for tests and benchmarks.
#
# As a library:   source scripts/lib/pg.sh; pg_start; psql "$PG_DSN" ...; pg_stop
#                 (pg_start installs an EXIT trap that stops the server; call
#                 pg_stop yourself if you replace that trap.)
# As a command:   scripts/lib/pg.sh run -- CMD ARGS...   runs CMD with PGHOST,
#                 PGPORT, PGUSER, PGDATABASE and PG_DSN exported, then stops PG.
#
# The server runs as the `postgres` OS user (PostgreSQL refuses root) on a free
# loopback port, with a temp data dir made by `initdb -A trust -U $PG_USER`.
# Readiness is checked with pg_isready, never with a sleep.
#
# Knobs: PG_USER (default quiver), PG_DB (default quiver), PG_BIN_DIR,
#        PG_EXTRA_OPTS (extra "-c name=value" options for postgres),
#        PG_READY_TIMEOUT (seconds, default 60), PG_PORT (default: a free port).

PG_BIN_DIR="${PG_BIN_DIR:-/usr/lib/postgresql/15/bin}"
PG_USER="${PG_USER:-quiver}"
PG_DB="${PG_DB:-quiver}"

_PG_AS=()
if [ "$(id -u)" -eq 0 ]; then _PG_AS=(setpriv --reuid=postgres --regid=postgres --init-groups); fi
_pg_as_postgres() { "${_PG_AS[@]}" "$@"; }

pg_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

pg_start() {
  local timeout="${PG_READY_TIMEOUT:-60}"
  PG_TMP="$(mktemp -d /tmp/quiver-pg.XXXXXX)"
  PGDATA_DIR="$PG_TMP/data"
  mkdir -p "$PGDATA_DIR"
  if [ "$(id -u)" -eq 0 ]; then chown -R postgres:postgres "$PG_TMP"; fi
  if ! _pg_as_postgres "$PG_BIN_DIR/initdb" -D "$PGDATA_DIR" -A trust -U "$PG_USER" \
        --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_TMP/initdb.log" 2>&1; then
    echo "pg.sh: initdb failed:" >&2; cat "$PG_TMP/initdb.log" >&2; return 1
  fi
  PGPORT_="${PG_PORT:-$(pg_free_port)}"
  # shellcheck disable=SC2086
  # not through the function: $! must be the server's own pid (setpriv execs it)
  "${_PG_AS[@]}" "$PG_BIN_DIR/postgres" -D "$PGDATA_DIR" -p "$PGPORT_" -k /tmp \
      -c listen_addresses=127.0.0.1 ${PG_EXTRA_OPTS:-} >"$PG_TMP/server.log" 2>&1 &
  PG_PID=$!
  trap pg_stop EXIT
  local deadline=$((SECONDS + timeout))
  until "$PG_BIN_DIR/pg_isready" -q -h 127.0.0.1 -p "$PGPORT_" -U "$PG_USER" -d postgres -t 1; do
    if ! kill -0 "$PG_PID" 2>/dev/null; then
      echo "pg.sh: postgres exited during startup:" >&2; cat "$PG_TMP/server.log" >&2; return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "pg.sh: postgres not ready after ${timeout}s:" >&2; cat "$PG_TMP/server.log" >&2; return 1
    fi
  done
  if [ "$PG_DB" != "postgres" ]; then
    "$PG_BIN_DIR/createdb" -h 127.0.0.1 -p "$PGPORT_" -U "$PG_USER" "$PG_DB" 2>/dev/null || true
  fi
  export PGHOST=127.0.0.1 PGPORT="$PGPORT_" PGUSER="$PG_USER" PGDATABASE="$PG_DB"
  export PG_DSN="host=127.0.0.1 port=$PGPORT_ user=$PG_USER dbname=$PG_DB"
  export PG_PID PGDATA_DIR PG_TMP
  echo "pg.sh: PostgreSQL $("$PG_BIN_DIR/postgres" --version | awk '{print $3}') ready on 127.0.0.1:$PGPORT_ (pid $PG_PID, data $PGDATA_DIR)" >&2
}

pg_stop() {
  if [ -n "${PG_PID:-}" ] && kill -0 "$PG_PID" 2>/dev/null; then
    kill -INT "$PG_PID" 2>/dev/null || true   # fast shutdown
    wait "$PG_PID" 2>/dev/null || true
  fi
  PG_PID=""
  if [ -n "${PG_TMP:-}" ] && [ -d "$PG_TMP" ] && [ -z "${PG_KEEP:-}" ]; then rm -rf "$PG_TMP"; fi
  PG_TMP=""
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    run)
      shift; [ "${1:-}" = "--" ] && shift
      [ "$#" -gt 0 ] || { echo "usage: $0 run -- CMD ARGS..." >&2; exit 2; }
      pg_start
      set +e; "$@"; rc=$?; set -e
      pg_stop; trap - EXIT
      exit "$rc" ;;
    *) echo "usage: $0 run -- CMD ARGS...   (or source it and call pg_start / pg_stop)" >&2; exit 2 ;;
  esac
fi
