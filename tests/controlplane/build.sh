#!/usr/bin/env bash
# Build a real Kubernetes control plane (kube-apiserver + etcd) from the published Go
# modules, once per machine, for the operator integration tests; and the rest of the
# single-node test cluster (tests/cluster/up.sh): controller-manager, scheduler, kubelet,
# kube-proxy, kubectl, the CNI plugins and kube-network-policies.
#
#   tests/controlplane/build.sh            # prints the binary folder on its last stdout line
#
# Output: ${LAKELOAD_CONTROLPLANE_DIR:-$HOME/.cache/lakeload/controlplane}/<k8s-version>/
#         {kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kubectl,kube-proxy,etcd,
#          kube-network-policies} and cni/{bridge,host-local,loopback}
# Idempotent: a binary that already exists there is not rebuilt (delete it to force).
# Versions come from ./go.mod (k8s.io/kubernetes), ./etcd/go.mod (go.etcd.io/etcd/server/v3),
# ./cni/go.mod (github.com/containernetworking/plugins) and ./netpol/go.mod
# (sigs.k8s.io/kube-network-policies).
# Needs Go >= 1.24 (or GOTOOLCHAIN=auto to fetch it) and the Go module proxy; about
# 15-25 minutes of CPU on 2 cores for a cold build (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "controlplane/build.sh: $*" >&2; }

GO="${GO:-$(command -v go || true)}"
[ -n "$GO" ] || GO=/usr/local/go/bin/go
[ -x "$GO" ] || { log "no Go toolchain found (set GO=/path/to/go)"; exit 1; }

k8s_version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$here/go.mod")"
etcd_version="$(awk '$1 == "require" && $2 == "go.etcd.io/etcd/server/v3" {print $3}' "$here/etcd/go.mod")"
# go mod tidy lists a module whose only use is a `tool` line among the indirect requirements.
cni_version="$(awk '$1 == "github.com/containernetworking/plugins" {print $2}' "$here/cni/go.mod")"
netpol_version="$(awk '$1 == "sigs.k8s.io/kube-network-policies" {print $2}' "$here/netpol/go.mod")"
[ -n "$k8s_version" ] && [ -n "$etcd_version" ] && [ -n "$cni_version" ] && [ -n "$netpol_version" ] ||
  { log "cannot read versions from go.mod files"; exit 1; }

out="${LAKELOAD_CONTROLPLANE_DIR:-$HOME/.cache/lakeload/controlplane}/$k8s_version"
mkdir -p "$out/cni"
trap 'rm -f "$out"/*.tmp.$$ "$out"/cni/*.tmp.$$' EXIT

# The test harness makes a service-account key pair with openssl.
if ! command -v openssl >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing openssl"
    DEBIAN_FRONTEND=noninteractive apt-get install -y openssl >&2 \
      || { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y openssl >&2; }
  else
    log "warning: openssl not found; the tests need it (apt-get install openssl)"
  fi
fi

# Static binaries, as upstream builds its server components; also means no C compiler needed.
export CGO_ENABLED=0
# go.sum files are committed: -mod=readonly fails loudly instead of editing them.
# -buildvcs=false: the etcd main package lives in this git repo; don't stamp it.
gobuild=(nice -n 10 "$GO" build -mod=readonly -buildvcs=false -trimpath)

# kube-apiserver for every operator test; the controller-manager, scheduler and kubelet for the
# single-node cluster whose kubelet runs the worker image (tests/cluster). One module, one version.
minor="${k8s_version#v1.}"; minor="${minor%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
# kubectl too, from the same module: the cluster scripts call it by path, since a fresh machine
# has none. kube-proxy makes Service IPs work for the cluster's pod network.
for cmd in ${LAKELOAD_CONTROLPLANE_COMMANDS:-kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl kube-proxy}; do
  [ -x "$out/$cmd" ] && continue
  log "building $cmd $k8s_version into $out (takes a while)"
  start=$SECONDS
  (cd "$here" && "${gobuild[@]}" -ldflags="$ldflags" -o "$out/$cmd.tmp.$$" "k8s.io/kubernetes/cmd/$cmd")
  mv -f "$out/$cmd.tmp.$$" "$out/$cmd"
  log "$cmd built in $((SECONDS - start))s"
done

if [ ! -x "$out/etcd" ]; then
  log "building etcd $etcd_version into $out"
  start=$SECONDS
  (cd "$here/etcd" && "${gobuild[@]}" -ldflags="-s -w" -o "$out/etcd.tmp.$$" .)
  mv -f "$out/etcd.tmp.$$" "$out/etcd"
  log "etcd built in $((SECONDS - start))s"
fi

# The pod network of tests/cluster: the reference CNI plugins (a bridge, host-local IPAM, the
# loopback containerd's CRI plugin always sets up) and a NetworkPolicy enforcer.
if [ -z "${LAKELOAD_CONTROLPLANE_COMMANDS:-}" ]; then
  for plugin in main/bridge ipam/host-local main/loopback; do
    name="${plugin#*/}"
    [ -x "$out/cni/$name" ] && continue
    log "building CNI plugin $name $cni_version into $out/cni"
    start=$SECONDS
    (cd "$here/cni" && "${gobuild[@]}" -ldflags="-s -w" -o "$out/cni/$name.tmp.$$" \
      "github.com/containernetworking/plugins/plugins/$plugin")
    mv -f "$out/cni/$name.tmp.$$" "$out/cni/$name"
    log "CNI plugin $name built in $((SECONDS - start))s"
  done
  if [ ! -x "$out/kube-network-policies" ]; then
    log "building kube-network-policies $netpol_version into $out"
    start=$SECONDS
    (cd "$here/netpol" && "${gobuild[@]}" -ldflags="-s -w" -o "$out/kube-network-policies.tmp.$$" \
      sigs.k8s.io/kube-network-policies/cmd)
    mv -f "$out/kube-network-policies.tmp.$$" "$out/kube-network-policies"
    log "kube-network-policies built in $((SECONDS - start))s"
  fi
fi

echo "$out"
