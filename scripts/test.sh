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

data_dirs_before="$(find . -name quiver-data -not -path './target/*' | sort)"

step "rust tests (also builds the quiver binary the client tests use)"
cargo test --locked --workspace

step "python client tests (psycopg against the real binary)"
VENV="${QUIVER_VENV:-$HOME/.cache/quiver-venv}"
QUIVER_BIN="$CARGO_TARGET_DIR/debug/quiver" "$VENV/bin/python" -m pytest -q tests/python

step "tests wrote no data directory into the checkout"
# Every test works in temporary directories; a quiver-data directory that
# appeared in the source tree during the run means one did not.
data_dirs_after="$(find . -name quiver-data -not -path './target/*' | sort)"
if [ "$data_dirs_after" != "$data_dirs_before" ]; then
  printf 'tests left data directories in the checkout:\n%s\n' \
    "$(comm -13 <(echo "$data_dirs_before") <(echo "$data_dirs_after"))" >&2
  exit 1
fi

if [ -f scripts/k8s-tools.sh ]; then
  step "kubernetes artefacts (helm lint, schema validation, drift)"
  bash scripts/k8s-tools.sh
fi

step "container image and end-to-end test (pods as containers on a private Docker network)"
skip_containers=""
if [ "${QUIVER_SKIP_CONTAINERS:-0}" = "1" ]; then
  skip_containers="QUIVER_SKIP_CONTAINERS=1"
elif ! docker info > /dev/null 2>&1; then
  skip_containers="no Docker engine answers \`docker info\`"
fi
if [ -z "$skip_containers" ]; then
  # Static debug binaries in their own target dir (RUSTFLAGS differ: a
  # first build compiles every dependency again), then the Dockerfile's
  # `prebuilt` target: no base image is pulled.
  PROFILE=debug bash scripts/build-image.sh quiver:dev
  QUIVER_IMAGE=quiver:dev bash e2e/containers.sh
  QUIVER_IMAGE=quiver:dev E2E_MANIFEST=manifests/ha.yaml E2E_EXTRA_OBJECTS=e2e/ha-secret.yaml \
    bash e2e/containers.sh
else
  printf '\n'
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
  printf '!!! SKIPPED: image build and e2e/containers.sh (%s).\n' "$skip_containers"
  printf '!!! The container end-to-end tests did NOT run.\n'
  printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
fi

step "all tests passed"
