#!/usr/bin/env bash
# Smoke test of the from-source control plane: start etcd + kube-apiserver on 127.0.0.1,
# wait for /readyz, create a namespace, a ConfigMap and a coordination.k8s.io/v1 Lease with
# kubectl, read them back, then stop both processes and remove every temp file.
#
#   tests/controlplane/smoke.sh     # exit 0 on success
#
# Binaries: from build.sh (built on first use). KEEP_TMP=1 keeps the temp dir (logs).
# The start-up sequence here is the reference for the Rust test harness (see README.md).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { echo "smoke.sh: $*" >&2; }

bin="$("$here/build.sh" | tail -n 1)"
KUBECTL="${KUBECTL:-$bin/kubectl}"
command -v "$KUBECTL" >/dev/null || { log "kubectl not found"; exit 1; }
command -v openssl >/dev/null || { log "openssl not found"; exit 1; }

tmp="$(mktemp -d "${TMPDIR:-/tmp}/lakeload-cp.XXXXXX")"
etcd_pid="" apiserver_pid=""
cleanup() {
  rc=$?
  # Stop the API server first, then etcd; SIGTERM, then SIGKILL after 10 s.
  for pid in $apiserver_pid $etcd_pid; do
    kill -TERM "$pid" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [ $rc -ne 0 ]; then
    log "FAILED (rc=$rc); last lines of the logs:"
    tail -n 30 "$tmp/etcd.log" "$tmp/kube-apiserver.log" >&2 2>/dev/null || true
  fi
  if [ "${KEEP_TMP:-0}" = 1 ]; then log "kept $tmp"; else rm -rf "$tmp"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nobody listens on (random, checked by connecting; tiny race accepted).
used_ports=" "
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    case "$used_ports" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  return 1
}
etcd_client_port="$(free_port)"; used_ports+="$etcd_client_port "
etcd_peer_port="$(free_port)"; used_ports+="$etcd_peer_port "
api_port="$(free_port)"

# --- etcd -----------------------------------------------------------------------------
etcd_url="http://127.0.0.1:$etcd_client_port"
peer_url="http://127.0.0.1:$etcd_peer_port"
"$bin/etcd" \
  --name=default \
  --data-dir="$tmp/etcd-data" \
  --listen-client-urls="$etcd_url" --advertise-client-urls="$etcd_url" \
  --listen-peer-urls="$peer_url" --initial-advertise-peer-urls="$peer_url" \
  --initial-cluster="default=$peer_url" \
  --unsafe-no-fsync \
  >"$tmp/etcd.log" 2>&1 &
etcd_pid=$!
etcd_start_ns=$(date +%s%N)

# --- credentials ------------------------------------------------------------------------
openssl genrsa -out "$tmp/sa.key" 2048 2>/dev/null
openssl rsa -in "$tmp/sa.key" -pubout -out "$tmp/sa.pub" 2>/dev/null
token="$(openssl rand -hex 32)"
# token,user,uid,"group1,group2"
echo "$token,lakeload-admin,lakeload-admin,system:masters" >"$tmp/tokens.csv"
mkdir -p "$tmp/certs"

# Wait for etcd's /health before starting the API server (otherwise it logs a burst of
# "connection refused" while it retries). Plain HTTP over bash's /dev/tcp: no curl needed.
etcd_healthy() {
  timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET /health HTTP/1.0\r\n\r\n" >&3 && grep -q "\"health\":\"true\"" <&3' _ "$etcd_client_port" 2>/dev/null
}
for _ in $(seq 300); do   # 30 s
  kill -0 "$etcd_pid" 2>/dev/null || { log "etcd exited"; exit 1; }
  etcd_healthy && break
  sleep 0.1
done
etcd_healthy || { log "etcd not healthy after 30 s"; exit 1; }
log "etcd healthy on 127.0.0.1:$etcd_client_port in $((($(date +%s%N) - etcd_start_ns) / 1000000)) ms"

# --- kube-apiserver ---------------------------------------------------------------------
start_ns=$(date +%s%N)
"$bin/kube-apiserver" \
  --bind-address=127.0.0.1 \
  --advertise-address=127.0.0.1 \
  --secure-port="$api_port" \
  --cert-dir="$tmp/certs" \
  --etcd-servers="$etcd_url" \
  --service-account-key-file="$tmp/sa.pub" \
  --service-account-signing-key-file="$tmp/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --token-auth-file="$tmp/tokens.csv" \
  --authorization-mode=RBAC \
  --service-cluster-ip-range=10.0.0.0/24 \
  --disable-admission-plugins=ServiceAccount \
  --allow-privileged=true \
  --endpoint-reconciler-type=none \
  >"$tmp/kube-apiserver.log" 2>&1 &
apiserver_pid=$!

cat >"$tmp/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lakeload-test
  cluster:
    server: https://127.0.0.1:$api_port
    insecure-skip-tls-verify: true
users:
- name: lakeload-admin
  user:
    token: $token
contexts:
- name: lakeload-test
  context: {cluster: lakeload-test, user: lakeload-admin}
current-context: lakeload-test
EOF
export KUBECONFIG="$tmp/kubeconfig"

# --- wait for /readyz ---------------------------------------------------------------------
ready=""
for _ in $(seq 600); do   # 60 s
  kill -0 "$apiserver_pid" 2>/dev/null || { log "kube-apiserver exited"; exit 1; }
  kill -0 "$etcd_pid" 2>/dev/null || { log "etcd exited"; exit 1; }
  if [ "$("$KUBECTL" get --raw /readyz --request-timeout=2s 2>/dev/null)" = ok ]; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { log "kube-apiserver not ready after 60 s"; exit 1; }
log "kube-apiserver ready on 127.0.0.1:$api_port in $((($(date +%s%N) - start_ns) / 1000000)) ms"

# Everything must listen on 127.0.0.1 only (checked when ss is available).
if command -v ss >/dev/null 2>&1; then
  listening="$(ss -ltnpH 2>/dev/null | grep -E "pid=($etcd_pid|$apiserver_pid)," || true)"
  log "listening sockets:"; echo "$listening" | awk '{print "  " $4}' >&2
  if echo "$listening" | awk '{print $4}' | grep -vq '^127\.0\.0\.1:'; then
    log "a control-plane process listens on an address other than 127.0.0.1"; exit 1
  fi
fi

# --- exercise the API -------------------------------------------------------------------
ns=smoke-$$
k() { "$KUBECTL" --request-timeout=10s "$@"; }
k version >&2 2>&1 || true
k create namespace "$ns" >&2
k -n "$ns" create configmap smoke --from-literal=hello=world >&2
k apply -f - >&2 <<EOF
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: smoke
  namespace: $ns
spec:
  holderIdentity: smoke-test
  leaseDurationSeconds: 15
EOF
[ "$(k get namespace "$ns" -o jsonpath='{.status.phase}')" = Active ]
[ "$(k -n "$ns" get configmap smoke -o jsonpath='{.data.hello}')" = world ]
[ "$(k -n "$ns" get lease smoke -o jsonpath='{.spec.holderIdentity}')" = smoke-test ]
k -n "$ns" get configmap,lease >&2

# RBAC is enforced: the admin (system:masters) impersonates a service account, which is
# forbidden until a Role + RoleBinding grant it (RBAC caches bindings: allow a moment).
as_sa=(--as="system:serviceaccount:$ns:smoke" --as-group=system:serviceaccounts --as-group="system:serviceaccounts:$ns")
if k "${as_sa[@]}" -n "$ns" get configmap smoke >/dev/null 2>&1; then
  log "RBAC not enforced: service account could read a ConfigMap without a binding"; exit 1
fi
k -n "$ns" create role smoke-reader --verb=get,list,watch --resource=configmaps >&2
k -n "$ns" create rolebinding smoke-reader --role=smoke-reader --serviceaccount="$ns:smoke" >&2
allowed=""
for _ in $(seq 50); do
  if k "${as_sa[@]}" -n "$ns" get configmap smoke >/dev/null 2>&1; then allowed=1; break; fi
  sleep 0.1
done
[ -n "$allowed" ] || { log "RoleBinding did not grant access within 5 s"; exit 1; }
if k "${as_sa[@]}" -n "$ns" get lease smoke >/dev/null 2>&1; then
  log "RBAC not enforced: service account could read a Lease"; exit 1
fi
log "RBAC enforced (impersonated service account: denied, then allowed by a RoleBinding)"
log "OK"
