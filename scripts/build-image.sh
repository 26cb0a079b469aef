#!/usr/bin/env bash
# Builds the Quiver image without pulling any base image: static binaries
# are compiled on the host, then the Dockerfile's `prebuilt` target copies
# them into an empty image.
#   scripts/build-image.sh [TAG]        (default quiver:dev)
# PROFILE=debug builds unoptimised binaries (much faster to compile; fine
# for end-to-end tests of the rendered objects). The static build has its
# own target directory (QUIVER_STATIC_TARGET_DIR, default
# ~/.cache/quiver-target-static): its RUSTFLAGS differ from the tests', so
# sharing one would rebuild everything each time either runs.
set -euo pipefail
cd "$(dirname "$0")/.."
TAG="${1:-quiver:dev}"
PROFILE="${PROFILE:-release}"
TARGET_DIR="${QUIVER_STATIC_TARGET_DIR:-$HOME/.cache/quiver-target-static}"
flags=(--target x86_64-unknown-linux-gnu --bin quiver --bin quiver-operator)
[ "$PROFILE" = release ] && flags+=(--release)
start=$SECONDS
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
  CARGO_TARGET_DIR="$TARGET_DIR" cargo build --locked "${flags[@]}"
echo "static $PROFILE binaries built in $((SECONDS - start))s"
mkdir -p docker/bin
cp "$TARGET_DIR/x86_64-unknown-linux-gnu/$PROFILE/quiver" \
   "$TARGET_DIR/x86_64-unknown-linux-gnu/$PROFILE/quiver-operator" docker/bin/
docker build --target prebuilt -t "$TAG" .
docker run --rm --network none "$TAG" --version > /dev/null
echo "built image $TAG in $((SECONDS - start))s"
