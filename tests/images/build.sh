#!/usr/bin/env bash
# Builds the two runtime images of ./Dockerfile with podman, from binaries built on this host
# (./prebuilt/ in the build context: there is no Rust image to pull here), and saves them for
# containerd:
#
#   tests/images/build.sh      # last stdout line: the folder with worker.tar and operator.tar
#
# Images: localhost/lakeload:dev and localhost/lakeload-operator:dev.
# The base image is debian:bookworm-slim's stand-in, made once per machine with debootstrap
# (no registry is reachable) and kept in podman's storage. Needs root, podman, runc, debootstrap
# (installed with apt-get when missing) and the release binaries in $CARGO_TARGET_DIR.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
log() { echo "images/build.sh: $*" >&2; }

missing=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq podman buildah runc debootstrap >&2
fi
# shellcheck source=podman-env.sh
source "$here/podman-env.sh"

base=localhost/debian:bookworm-slim
if ! podman image exists "$base"; then
  mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)"
  mirror="${mirror:-http://deb.debian.org/debian}"
  rootfs="$(mktemp -d)"
  trap 'rm -rf "$rootfs"' EXIT
  log "making the base image $base from $mirror with debootstrap (about a minute)"
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >&2
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar --numeric-owner -C "$rootfs" -c . | podman import --change 'CMD ["bash"]' - "$base" >&2
fi

target="${CARGO_TARGET_DIR:-$root/target}/release"
for bin in lakeload lakeload-operator; do
  [ -x "$target/$bin" ] || { log "no $target/$bin: run cargo build --release --workspace first"; exit 1; }
done
context="$(mktemp -d)"
trap 'rm -rf "$context" "${rootfs:-}"' EXIT
mkdir -p "$context/prebuilt"
cp "$root/Dockerfile" "$context/"
cp "$target/lakeload" "$target/lakeload-operator" "$context/prebuilt/"

# apt inside the build fetches ca-certificates from the base image's (plain HTTP) mirror.
build_args=(--network host --pull=never --build-arg BASE_IMAGE="$base" --build-arg RUST_IMAGE="$base")
out="${LAKELOAD_PODMAN_DIR:-$HOME/.cache/lakeload/podman}/images"
mkdir -p "$out"
for image in worker:lakeload operator:lakeload-operator; do
  stage="${image%%:*}" name="${image#*:}"
  log "building localhost/$name:dev (--target $stage)"
  podman build "${build_args[@]}" --target "$stage" -t "localhost/$name:dev" "$context" >&2
  rm -f "$out/$stage.tar"
  podman save --format docker-archive -o "$out/$stage.tar" "localhost/$name:dev" >&2
  log "localhost/$name:dev: $(podman image inspect --format '{{.Size}}' "localhost/$name:dev") bytes"
done
echo "$out"
