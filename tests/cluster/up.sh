#!/usr/bin/env bash
# A real single-node Kubernetes cluster on 127.0.0.1, for the tests that run the lakeload
# images as pods: etcd, kube-apiserver, kube-controller-manager (Job, CronJob, garbage
# collector, Deployment, ... controllers), kube-scheduler and a kubelet driving Debian's
# containerd + runc (cgroupfs driver, cgroup v1).
#
#   tests/cluster/up.sh DIR [IMAGE.tar ...]
#
# Runs in the foreground until SIGTERM/SIGINT, then stops every process and container it
# started and removes DIR (KEEP_CLUSTER_DIR=1 keeps it). Writes DIR/kubeconfig (cluster-admin),
# DIR/api-port, and DIR/ready once the node is Ready and each IMAGE.tar (docker-archive) is
# imported into containerd. Logs: DIR/*.log, containers' logs under DIR/pod-logs.
#
# Network: every server listens on 127.0.0.1 and pods use the host's network (hostNetwork:
# true); there is no pod network. The node is called `localhost`, so the API server reaches its
# kubelet (logs, exec) at 127.0.0.1; it reports the host's address as InternalIP (the kubelet
# refuses a loopback node IP), where nothing listens.
# Binaries come from tests/controlplane/build.sh; needs root, containerd, runc, openssl and gcc
# (the pause image is built here: no registry is reachable).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$1"; shift
log() { echo "cluster/up.sh: $*" >&2; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

missing=()
for tool in containerd runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd runc >&2; }
fi
bin="$("$here/../controlplane/build.sh" | tail -n 1)"
# The kubectl built with the control plane, by path: a fresh machine has none on PATH.
kubectl() { "$bin/kubectl" "$@"; }

pids=()
sock="$dir/containerd/containerd.sock"
ctr_() { ctr --address "$sock" --namespace k8s.io "$@"; }
cleanup() {
  rc=$?
  trap - EXIT INT TERM
  # The kubelet first (it would restart containers), then every container, then containerd.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    if [ "${names[$i]}" = kubelet ]; then
      wait "${pids[$i]}" 2>/dev/null || true
      if [ -S "$sock" ]; then
        for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$task" >/dev/null 2>&1 || true; done
        sleep 1
        for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$task" >/dev/null 2>&1 || true; done
      fi
    fi
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
  pkill -KILL -f "containerd-shim.*-address $sock" 2>/dev/null || true
  # Mounts the kubelet and containerd left under DIR (pod volumes, rootfs, shm).
  grep -o " $dir/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "${KEEP_CLUSTER_DIR:-0}" != 1 ]; then rm -rf "$dir"; fi
  exit "$rc"
}
names=()
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

start() {  # start NAME CMD... : in the background, output to DIR/NAME.log
  local name="$1"; shift
  "$@" >"$dir/$name.log" 2>&1 &
  pids+=($!); names+=("$name")
}
alive() {
  for i in "${!pids[@]}"; do
    kill -0 "${pids[$i]}" 2>/dev/null || { log "${names[$i]} exited; last lines of $dir/${names[$i]}.log:"; tail -n 20 "$dir/${names[$i]}.log" >&2; exit 1; }
  done
}
used_ports=" "
# Below the kernel's ephemeral range (ip_local_port_range, 32768 and up by default): a port
# chosen there can be taken by any outgoing connection before the server binds it.
free_port() {
  local p low
  low="$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % (low - 20000)))
    case "$used_ports" in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then used_ports+="$p "; echo "$p"; return 0; fi
  done
  return 1
}
wait_for() {  # wait_for SECONDS WHAT COMMAND...
  local seconds="$1" what="$2"; shift 2
  for _ in $(seq $((seconds * 5))); do
    alive
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what not ready after ${seconds}s"; exit 1
}

etcd_port="$(free_port)"; etcd_peer="$(free_port)"; api_port="$(free_port)"
kubelet_port="$(free_port)"; kubelet_health="$(free_port)"

# --- credentials: a CA, the API server's serving cert, the service-account key, a token ------
pki="$dir/pki"; mkdir -p "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lakeload-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc\n' >"$pki/san.ext"
openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
  -days 2 -extfile "$pki/san.ext" -out "$pki/apiserver.crt" 2>/dev/null
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
token="$(openssl rand -hex 32)"
echo "$token,lakeload-admin,lakeload-admin,system:masters" >"$pki/tokens.csv"
cat >"$dir/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: lakeload-cluster
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: lakeload-admin
  user:
    token: $token
contexts:
- name: lakeload-cluster
  context: {cluster: lakeload-cluster, user: lakeload-admin}
current-context: lakeload-cluster
KC
echo "$api_port" >"$dir/api-port"
export KUBECONFIG="$dir/kubeconfig"

# --- etcd, kube-apiserver -------------------------------------------------------------------
start etcd "$bin/etcd" --name=default --data-dir="$dir/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer" \
  --initial-cluster="default=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync
wait_for 30 etcd bash -c "exec 3<>/dev/tcp/127.0.0.1/$etcd_port"
start kube-apiserver "$bin/kube-apiserver" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --endpoint-reconciler-type=none \
  --kubelet-preferred-address-types=Hostname
wait_for 60 kube-apiserver kubectl get --raw /readyz

# --- controller-manager and scheduler (cluster-admin token, no serving port) ----------------
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
  --authorization-kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
  --leader-elect=false --use-service-account-credentials=false \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --controllers=job-controller,cronjob-controller,garbage-collector-controller,ttl-after-finished-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,namespace-controller,pod-garbage-collector-controller,node-lifecycle-controller
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
  --authorization-kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
  --leader-elect=false

# --- containerd: CRI with runc (cgroupfs), a local pause image, no pod network --------------
mkdir -p "$dir/containerd" "$dir/cni/net.d"
# A loopback-only network list: the CRI reports its network ready, yet nothing is set up
# beyond each pod's own lo; every pod of these tests uses the host's network.
cat >"$dir/cni/net.d/10-lakeload-none.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "lakeload-none", "plugins": [{"type": "loopback"}]}
CNI
cni_bin=/usr/lib/cni; [ -x "$cni_bin/loopback" ] || cni_bin=/opt/cni/bin
cat >"$dir/containerd/config.toml" <<TOML
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:dev"
  # This VM's root lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (the sandbox asks
  # for -998, Guaranteed pods for -997) and fails "can't get final child's PID from pipe".
  # Clamp it to the current value instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$cni_bin"
    conf_dir = "$dir/cni/net.d"
TOML
start containerd containerd --config "$dir/containerd/config.toml"
wait_for 30 containerd ctr_ version

# The sandbox image: a static pause binary in an otherwise empty image.
pause="$dir/pause-image"; mkdir -p "$pause/rootfs"
gcc -static -O2 -s -o "$pause/rootfs/pause" "$here/pause.c"
tar -C "$pause/rootfs" -cf "$pause/layer.tar" pause
layer_sha="$(sha256sum "$pause/layer.tar" | cut -d' ' -f1)"
cat >"$pause/config.json" <<JSON
{"architecture":"amd64","os":"linux","config":{"Entrypoint":["/pause"]},"rootfs":{"type":"layers","diff_ids":["sha256:$layer_sha"]}}
JSON
config_sha="$(sha256sum "$pause/config.json" | cut -d' ' -f1)"
mv "$pause/layer.tar" "$pause/$layer_sha.tar"; mv "$pause/config.json" "$pause/$config_sha.json"
printf '[{"Config":"%s.json","RepoTags":["localhost/pause:dev"],"Layers":["%s.tar"]}]\n' "$config_sha" "$layer_sha" >"$pause/manifest.json"
tar -C "$pause" -cf "$dir/pause.tar" manifest.json "$config_sha.json" "$layer_sha.tar"
for image in "$dir/pause.tar" "$@"; do
  ctr_ images import --no-unpack=false "$image" >&2 || { log "cannot import $image"; exit 1; }
done

# --- kubelet ----------------------------------------------------------------------------------
cat >"$dir/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $kubelet_port
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $kubelet_health
# Only the API server (logs, exec) talks to this port, on 127.0.0.1.
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
cgroupsPerQOS: false
enforceNodeAllocatable: []
containerRuntimeEndpoint: unix://$sock
resolvConf: /etc/resolv.conf
evictionHard: {memory.available: "1Mi", nodefs.available: "1%", imagefs.available: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 5s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
podLogsDir: $dir/pod-logs
YAML
start kubelet "$bin/kubelet" --config="$dir/kubelet.yaml" --kubeconfig="$dir/kubeconfig" \
  --root-dir="$dir/kubelet" --cert-dir="$dir/kubelet/pki" \
  --hostname-override=localhost --v=2
node_ready() {
  [ "$(kubectl get node localhost -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
wait_for 120 "the node" node_ready
touch "$dir/ready"
log "ready: KUBECONFIG=$dir/kubeconfig"
while true; do alive; sleep 1; done
