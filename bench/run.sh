#!/usr/bin/env bash
# Quiver benchmarks. Usage:
#   bench/run.sh [tpch|copy|point|cluster|tpcb|bank|move|all] [--sf 1] [--target quiver|pg] [--target-dsn DSN] [more options]
# Options after the benchmark name go to the benchmark's script (see `bench/run.sh tpch --help`,
# `bench/run.sh bank --help`). Results: printed and written to bench/RESULTS.md.
# tpcb, bank and move also run Citus (1+2 workers) when it is built on the machine (../shared/peers/citus).
# The quiver binary: QUIVER_BIN, else $CARGO_TARGET_DIR/release/quiver, else .../debug/quiver.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
VENV="${QUIVER_VENV:-$HOME/.cache/quiver-venv}"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
if [ ! -x "$VENV/bin/python" ] || ! command -v tpchgen-cli >/dev/null 2>&1; then
  "$REPO/scripts/install-test-deps.sh"
fi
PY="$VENV/bin/python"

what="${1:-all}"
[ "$#" -gt 0 ] && shift
rc=0
run() { "$PY" "$HERE/$1" "${@:2}" || rc=$?; }
case "$what" in
  tpch)  run tpch.py "$@" ;;
  copy)  run copy_ingest.py "$@" ;;
  point) run point.py "$@" ;;
  cluster) run cluster.py "$@" ;;
  tpcb)  run tpcb.py "$@" ;;
  bank)  run bank.py "$@" ;;
  move)  run move.py "$@" ;;
  all)
    # --sf is for tpch and copy; point ignores it
    run tpch.py "$@"
    run copy_ingest.py "$@"
    run point.py "$@" ;;
  -h|--help|help) sed -n '2,7p' "$0"; exit 0 ;;
  *) echo "unknown benchmark '$what' (tpch|copy|point|cluster|tpcb|bank|move|all)" >&2; exit 2 ;;
esac
exit "$rc"
