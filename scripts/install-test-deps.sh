#!/usr/bin/env bash
# Installs what Quiver's tests and benchmarks need. Idempotent, non-interactive,
# and fast when everything is already there.
#   - Debian: postgresql-client (psql, pgbench) and postgresql (a PG 15 server to compare with)
#   - Python venv at ${QUIVER_VENV:-$HOME/.cache/quiver-venv} with the test/bench packages
#   - tpchgen-cli (its PyPI wheel; cargo install --locked when that fails) for TPC-H data
# Set QUIVER_SKIP_TPCHGEN=1 to skip tpchgen-cli (only the benchmarks need it).
set -euo pipefail

log() { printf 'install-test-deps: %s\n' "$*"; }

VENV="${QUIVER_VENV:-$HOME/.cache/quiver-venv}"
PY_PKGS=("psycopg[binary]" pytest duckdb datafusion pyarrow jsonschema kubernetes-validate pyyaml tpchgen-cli)
# import names to check the venv is complete
PY_IMPORTS="psycopg pytest duckdb datafusion pyarrow jsonschema kubernetes_validate yaml"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- Debian packages -------------------------------------------------------
apt_missing=()
for bin in psql pgbench pg_isready; do
  if ! command -v "$bin" >/dev/null 2>&1 && [ ! -x "/usr/lib/postgresql/15/bin/$bin" ]; then
    apt_missing+=(postgresql-client); break
  fi
done
if [ ! -x /usr/lib/postgresql/15/bin/postgres ] || [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  apt_missing+=(postgresql)
fi
if ! command -v setpriv >/dev/null 2>&1; then apt_missing+=(util-linux); fi
PYTHON="${PYTHON:-python3}"
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  apt_missing+=(python3 python3-venv)
elif [ ! -x "$VENV/bin/python" ] && ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  apt_missing+=(python3-venv)
fi
if [ "${#apt_missing[@]}" -gt 0 ]; then
  log "apt-get update (missing: ${apt_missing[*]})"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  log "apt-get install ${apt_missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql-client postgresql "${apt_missing[@]}" >/dev/null
  # The package may have started a cluster on 5432 (Quiver's default port); tests start
  # their own servers, so stop it and keep it from starting at boot.
  if [ -f /etc/postgresql/15/main/start.conf ]; then
    log "stopping the packaged PostgreSQL cluster 15/main (tests start their own)"
    $SUDO pg_ctlcluster 15 main stop >/dev/null 2>&1 || true
    echo manual | $SUDO tee /etc/postgresql/15/main/start.conf >/dev/null
  fi
else
  log "postgresql 15 server and client already installed"
fi
# The Debian package starts a cluster on 5432 under systemd/init scripts on some
# images; we never rely on it (tests start their own throwaway servers).

# --- Python venv -----------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
if "$VENV/bin/python" - $PY_IMPORTS >/dev/null 2>&1 <<'PYEOF'
import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
PYEOF
then
  [ -x "$VENV/bin/tpchgen-cli" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check tpchgen-cli
  log "python packages already installed in $VENV"
else
  log "pip install ${PY_PKGS[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PKGS[@]}"
fi

# --- tpchgen-cli -----------------------------------------------------------
if [ "${QUIVER_SKIP_TPCHGEN:-0}" = "1" ]; then
  log "skipping tpchgen-cli (QUIVER_SKIP_TPCHGEN=1)"
elif [ -x "$VENV/bin/tpchgen-cli" ] || command -v tpchgen-cli >/dev/null 2>&1 || [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/tpchgen-cli" ]; then
  log "tpchgen-cli already installed"
else
  log "cargo install --locked tpchgen-cli"
  cargo install --locked --quiet tpchgen-cli
fi
log "done (venv: $VENV)"
