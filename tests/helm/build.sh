#!/usr/bin/env bash
# Build the Helm CLI (v3) from the published Go module, once per machine, so the tests can
# run `helm lint` / `helm template` on charts/lakeload.
#
#   tests/helm/build.sh            # prints the binary's absolute path on its last stdout line
#
# Output: ${LAKELOAD_TOOLS_DIR:-$HOME/.cache/lakeload/bin}/helm-<version>
# Idempotent: if that file already exists it is not rebuilt (delete it to force).
# The version comes from ./go.mod (helm.sh/helm/v3); dependencies are pinned by the committed
# go.sum and checked against sum.golang.org. Needs Go >= 1.26 (helm v3.22's go.mod says
# `go 1.26.0`; or an older Go with GOTOOLCHAIN=auto to fetch it) and the Go module proxy;
# a few minutes of CPU on 2 cores for a cold build (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "helm/build.sh: $*" >&2; }

GO="${GO:-$(command -v go || true)}"
[ -n "$GO" ] || GO=/usr/local/go/bin/go
[ -x "$GO" ] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 1; }

version="$(awk '$1 == "helm.sh/helm/v3" {print $2; exit}
                $1 == "require" && $2 == "helm.sh/helm/v3" {print $3; exit}' "$here/go.mod")"
[ -n "$version" ] || { log "cannot read the helm.sh/helm/v3 version from go.mod"; exit 1; }

dir="${LAKELOAD_TOOLS_DIR:-$HOME/.cache/lakeload/bin}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
out="$dir/helm-$version"

if [ ! -x "$out" ]; then
  log "building helm $version into $out"
  tmp="$out.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  start=$SECONDS
  # Static binary, as upstream's release builds (CGO_ENABLED=0); no C compiler needed.
  # -mod=readonly: go.mod/go.sum are committed, fail loudly instead of editing them.
  # The version ldflag is what upstream's Makefile sets, so `helm version` prints it.
  (cd "$here" && CGO_ENABLED=0 nice -n 10 "$GO" build -mod=readonly -buildvcs=false -trimpath \
      -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version" \
      -o "$tmp" helm.sh/helm/v3/cmd/helm)
  got="$("$tmp" version --template '{{.Version}}')"
  [ "$got" = "$version" ] || { log "built binary reports version '$got', expected '$version'"; exit 1; }
  mv -f "$tmp" "$out"
  log "helm $version built in $((SECONDS - start))s"
fi

echo "$out"
