# One image for both `quiver` (the database node) and `quiver-operator`.
#
# Users build it the usual way:
#   docker build -t quiver:0.1.0 .
# which compiles static binaries in the `builder` stage and copies them into
# an empty (`scratch`) runtime image that runs as a non-root user.
#
# Where no base image can be pulled (air-gapped CI, this project's own test
# machines), build the static binaries on the host and use the `prebuilt`
# target, which needs no base image at all:
#   RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
#     cargo build --release --target x86_64-unknown-linux-gnu --bin quiver --bin quiver-operator
#   cp <target>/x86_64-unknown-linux-gnu/release/quiver{,-operator} docker/bin/
#   docker build --target prebuilt -t quiver:dev .
# (scripts/build-image.sh does exactly this.) The default build needs
# BuildKit (the default builder since Docker 23), which skips `prebuilt`.

ARG BASE_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=scratch

# --- a minimal filesystem layout for the runtime image ---------------------
# (/tmp and the data directory are volumes in Kubernetes: the root file
# system is read-only there.)
FROM scratch AS rootfs
COPY docker/passwd docker/group docker/nsswitch.conf /etc/
COPY --chown=65532:65532 docker/empty/ /var/lib/quiver/
COPY --chown=65532:65532 docker/empty/ /tmp/

# --- what both runtime targets share ----------------------------------------
# No QUIVER_* environment here: the environment wins over the config file
# the operator mounts, so an image default would silently override it.
# Standalone, the data directory is ./quiver-data under the working
# directory: mount a volume at /var/lib/quiver.
FROM ${RUNTIME_IMAGE} AS base
COPY --from=rootfs / /
USER 65532:65532
WORKDIR /var/lib/quiver
# The operator runs `quiver` and `quiver-operator` by name.
ENV PATH=/usr/local/bin
EXPOSE 5432 6432 9090
ENTRYPOINT ["/usr/local/bin/quiver"]

# --- runtime image from binaries built on the host -------------------------
# First after the shared stages: the legacy builder (no BuildKit) builds
# every stage up to --target, and the builder stage needs a base image.
FROM base AS prebuilt
ARG BIN_DIR=docker/bin
COPY ${BIN_DIR}/quiver ${BIN_DIR}/quiver-operator /usr/local/bin/

# --- builder: static glibc binaries ----------------------------------------
FROM ${BASE_IMAGE} AS builder
WORKDIR /src
COPY . .
ENV RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"'
RUN cargo build --release --locked --target x86_64-unknown-linux-gnu \
        --bin quiver --bin quiver-operator \
 && mkdir -p /out \
 && cp target/x86_64-unknown-linux-gnu/release/quiver target/x86_64-unknown-linux-gnu/release/quiver-operator /out/

# --- runtime image from binaries built in this Dockerfile ------------------
FROM base AS runtime
COPY --from=builder /out/quiver /out/quiver-operator /usr/local/bin/

# The default target is the self-contained build.
FROM runtime
