#!/usr/bin/env bash
# Real-process tests: start the quiver binary (QUIVER_BIN, default $CARGO_TARGET_DIR/debug/quiver)
# and drive it with psycopg and psql. `tests/python/run.sh --pg` runs the same tests against a
# throwaway PostgreSQL 15 to show they are right. Extra arguments go to pytest.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${QUIVER_VENV:-$HOME/.cache/quiver-venv}"
if [ ! -x "$VENV/bin/python" ]; then
  QUIVER_SKIP_TPCHGEN=1 "$REPO/scripts/install-test-deps.sh"
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
exec "$VENV/bin/python" -m pytest "$HERE" "$@"
