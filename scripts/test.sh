#!/usr/bin/env bash
# Runs every Quiver test, installing what the tests need first.
# This is the README's second command; .ci/run calls it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/quiver-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n== %s\n' "$*"; }

step "install test dependencies"
QUIVER_SKIP_TPCHGEN=1 bash scripts/install-test-deps.sh

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings

step "rust tests (also builds the quiver binary the client tests use)"
cargo test --locked --workspace

step "python client tests (psycopg against the real binary)"
VENV="${QUIVER_VENV:-$HOME/.cache/quiver-venv}"
QUIVER_BIN="$CARGO_TARGET_DIR/debug/quiver" "$VENV/bin/python" -m pytest -q tests/python

if [ -f scripts/k8s-tools.sh ]; then
  step "kubernetes artefacts (helm lint, schema validation, drift)"
  bash scripts/k8s-tools.sh
fi

step "all tests passed"
