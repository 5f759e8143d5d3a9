#!/usr/bin/env bash
# Checks the Dockerfile's compile path, as a user with Docker runs it (`docker build --target
# worker .`), on a machine with no registry: the Rust image is stood in for by the local Debian
# base plus this machine's Rust toolchain, then the worker image is built from a clean export
# of HEAD (no ./prebuilt/, so everything compiles inside the build). Not part of
# tests/run-all.sh: it recompiles the whole workspace (about 25 minutes on 2 cores).
#
#   tests/images/build-from-source.sh    # then: podman run --rm localhost/lakeload:from-source --version
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bash "$here/build.sh" >/dev/null   # the Debian base image, podman set up
# shellcheck source=podman-env.sh
source "$here/podman-env.sh"
toolchain="$(rustc --print sysroot)"
version="$(rustc --version | awk '{print $2}')"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rust" "$work/context"
cp -a "$toolchain" "$work/rust/toolchain"
# This machine's network re-signs TLS: the stand-in trusts the host's CA bundle.
cp /etc/ssl/certs/ca-certificates.crt "$work/rust/host-ca.crt"
cat >"$work/rust/Dockerfile" <<'DOCKERFILE'
FROM localhost/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY host-ca.crt /etc/ssl/certs/ca-certificates.crt
COPY toolchain /usr/local/rust
ENV PATH=/usr/local/rust/bin:$PATH CARGO_HOME=/usr/local/cargo
DOCKERFILE
podman build --network host --pull=never -t "localhost/rust:$version-slim-bookworm" "$work/rust"
git -C "$root" archive HEAD | tar -x -C "$work/context"
podman build --network host --pull=never \
  --build-arg BASE_IMAGE=localhost/debian:bookworm-slim \
  --build-arg RUST_IMAGE="localhost/rust:$version-slim-bookworm" \
  --target worker -t localhost/lakeload:from-source "$work/context"
podman run --rm --network host --read-only localhost/lakeload:from-source --version
