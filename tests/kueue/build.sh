#!/usr/bin/env bash
# Build the real Kueue controller (sigs.k8s.io/kueue, from the Go module proxy) once per
# machine, for the operator's queueing test on the single-node cluster (tests/cluster).
#
#   tests/kueue/build.sh            # prints the output folder on its last stdout line
#
# Output: ${LAKELOAD_KUEUE_DIR:-$HOME/.cache/lakeload/kueue}/<version>/{kueue, crds/*.yaml}
# Idempotent: an existing binary is not rebuilt (delete it to force). The version is the
# `sigs.k8s.io/kueue` requirement of ./go.mod. About 2.5 minutes on 2 cores when cold.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "kueue/build.sh: $*" >&2; }

GO="${GO:-$(command -v go || true)}"
[ -n "$GO" ] || GO=/usr/local/go/bin/go
[ -x "$GO" ] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 1; }

version="$(awk '$1 == "sigs.k8s.io/kueue" {print $2}' "$here/go.mod")"
[ -n "$version" ] || { log "cannot read the kueue version from go.mod"; exit 1; }
out="${LAKELOAD_KUEUE_DIR:-$HOME/.cache/lakeload/kueue}/$version"
mkdir -p "$out"
trap 'rm -f "$out"/kueue.tmp.$$' EXIT

if [ ! -x "$out/kueue" ]; then
  log "building kueue $version into $out (takes a few minutes)"
  start=$SECONDS
  # Static, like upstream's image; go.sum is committed: -mod=readonly fails loudly on drift.
  (cd "$here" && CGO_ENABLED=0 nice -n 10 "$GO" build -mod=readonly -buildvcs=false -trimpath \
    -ldflags="-s -w" -o "$out/kueue.tmp.$$" sigs.k8s.io/kueue/cmd/kueue)
  mv -f "$out/kueue.tmp.$$" "$out/kueue"
  log "kueue built in $((SECONDS - start))s"
fi
if [ ! -d "$out/crds" ]; then
  # The CRDs of the same module version, as published (before kustomize's webhook patches).
  module="$(cd "$here" && "$GO" list -mod=readonly -m -f '{{.Dir}}' sigs.k8s.io/kueue)"
  mkdir -p "$out/crds.tmp.$$"
  cp "$module"/config/components/crd/bases/*.yaml "$out/crds.tmp.$$/"
  chmod -R u+w "$out/crds.tmp.$$"
  mv "$out/crds.tmp.$$" "$out/crds"
fi
echo "$out"
