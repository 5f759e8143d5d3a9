#!/usr/bin/env bash
# A real single-node Kubernetes cluster on 127.0.0.1, for the tests that run the lakeload
# images as pods: etcd, kube-apiserver, kube-controller-manager (Job, CronJob, garbage
# collector, Deployment, ... controllers), kube-scheduler and a kubelet driving Debian's
# containerd + runc (cgroupfs driver, cgroup v1).
#
#   tests/cluster/up.sh DIR [IMAGE.tar ...]
#
# Runs in the foreground until SIGTERM/SIGINT, then stops every process and container it
# started, removes the pod network (bridge, nftables tables, iptables chains) and DIR (KEEP_CLUSTER_DIR=1 keeps
# DIR). Writes DIR/kubeconfig (cluster-admin, https://127.0.0.1:PORT), DIR/api-port, DIR/host-ip,
# and DIR/ready once the node is Ready and each IMAGE.tar (docker-archive) is imported into
# containerd. Logs: DIR/*.log, containers' logs under DIR/pod-logs.
#
# Network: a pod network on a private bridge, `lakeload0` with 10.244.0.1/24 (the reference CNI
# plugins bridge + host-local: pods get 10.244.0.2-254, default route via 10.244.0.1), kube-proxy
# (nftables mode) for Service IPs, and kube-network-policies (NFQUEUE, fed by iptables) enforcing
# NetworkPolicy. The API server listens on every address (0.0.0.0:PORT) and advertises
# 10.244.0.1, so the `kubernetes` Service (10.0.0.1:443, KUBERNETES_SERVICE_HOST/PORT in every
# pod) leads to 10.244.0.1:PORT; the host's kubeconfig keeps using 127.0.0.1. DIR/host-ip holds
# 10.244.0.1: a server the pods must reach (an S3 server) listens there. There is no cluster DNS.
# Pods with hostNetwork: true still work (they reach the API server on 127.0.0.1:PORT too).
# kube-network-policies judges the first packet of each new connection of a pod, which the
# iptables chain LAKELOAD-NETPOL hands it (NFQUEUE 100): pod to pod, and pod to this host (the
# servers on 10.244.0.1, and the API server, whose Service IP kube-proxy DNATs to
# 10.244.0.1:PORT), so an egress NetworkPolicy governs the API server and the host's servers
# too: allow the API server as ipBlock 10.244.0.1/32, TCP port DIR/api-port (the endpoint after
# the DNAT), not 10.0.0.1:443.
# One cluster per machine: the bridge, kube-proxy's tables, the chain and NFQUEUE 100 are machine-wide.
# The node is called `localhost`, so the API server reaches its kubelet (logs, exec) at
# 127.0.0.1; it reports the host's address as InternalIP (the kubelet refuses a loopback node
# IP), where nothing listens.
# Binaries come from tests/controlplane/build.sh; needs root, containerd, runc, openssl, gcc
# (the pause image is built here: no registry is reachable), iproute2 and nft.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$1"; shift
log() { echo "cluster/up.sh: $*" >&2; }
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

missing=()
for tool in containerd:containerd runc:runc ip:iproute2 iptables:iptables nft:nftables unshare:util-linux; do
  command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2 ||
    { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >&2; }
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
    # The API server removes its address from the `kubernetes` Service's endpoints as it stops:
    # with etcd gone first, both hang until killed.
    if [ "${names[$i]}" = kube-apiserver ]; then
      for _ in $(seq 100); do kill -0 "${pids[$i]}" 2>/dev/null || break; sleep 0.1; done
    fi
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
  # Mounts the kubelet and containerd left under DIR (pod volumes, rootfs, shm, and the pods'
  # network namespaces: unmounting them frees each pod's veth pair).
  grep -o " $dir/[^ ]*" /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  if [ "$net_created" = 1 ]; then
    # kube-proxy and kube-network-policies leave their tables behind when stopped.
    for table in "inet kube-network-policies" "ip kube-proxy" "ip6 kube-proxy"; do
      nft delete table $table 2>/dev/null || true
    done
    for rule in "INPUT -s $pod_cidr" "FORWARD -s $pod_cidr" "FORWARD -d $pod_cidr"; do
      while iptables -w -D $rule -j "$netpol_chain" 2>/dev/null; do :; done
    done
    for chain in "$netpol_chain" "$gate_src" "$gate_dst"; do
      iptables -w -F "$chain" 2>/dev/null || true
    done
    for chain in "$netpol_chain" "$gate_src" "$gate_dst"; do
      iptables -w -X "$chain" 2>/dev/null || true
    done
    ip link delete "$bridge" 2>/dev/null || true
    for setting in "${restore_sysctls[@]}"; do sysctl -q -w "$setting" >/dev/null 2>&1 || true; done
  fi
  if [ "${KEEP_CLUSTER_DIR:-0}" != 1 ]; then rm -rf "$dir"; fi
  exit "$rc"
}
names=()
net_created=0
restore_sysctls=()
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
proxy_metrics="$(free_port)"; proxy_health="$(free_port)"; netpol_metrics="$(free_port)"

# --- the pod network's bridge, before the API server advertises its address -----------------
bridge=lakeload0
pod_cidr=10.244.0.0/24
gateway=10.244.0.1
netpol_chain=LAKELOAD-NETPOL
gate_src=LAKELOAD-NETPOL-SRC
gate_dst=LAKELOAD-NETPOL-DST
if nft list table ip kube-proxy >/dev/null 2>&1; then
  log "cannot set up the pod network: nftables table 'ip kube-proxy' exists: another test cluster (or kube-proxy) is running, or one was killed without cleaning up (then: nft delete table ip kube-proxy)"
  exit 1
fi
for chain in "$netpol_chain" "$gate_src" "$gate_dst"; do
  if iptables -w -n -L "$chain" >/dev/null 2>&1; then
    log "cannot set up the pod network: iptables chain $chain exists: another test cluster is running, or one was killed without cleaning up"
    exit 1
  fi
done
if ip link show "$bridge" >/dev/null 2>&1; then
  log "cannot set up the pod network: $bridge exists: another test cluster is running, or one was killed without cleaning up (then: ip link delete $bridge)"
  exit 1
fi
net_created=1
ip link add "$bridge" type bridge
ip addr add "$gateway/24" dev "$bridge"
ip link set "$bridge" up
# Pod-to-pod traffic crosses the bridge: br_netfilter hands it to the IP hooks, where
# kube-network-policies (and kube-proxy, for a pod reaching itself through a Service) see it.
# Pod-to-host and pod-to-Service traffic is routed by the host and needs ip_forward only for
# other destinations. Restored on exit if changed.
for setting in net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1 net.ipv4.ip_forward=1; do
  key="${setting%=*}"
  old="$(sysctl -n "$key")"
  if [ "$old" != "${setting#*=}" ]; then
    sysctl -q -w "$setting"
    restore_sysctls+=("$key=$old")
  fi
done
echo "$gateway" >"$dir/host-ip"

# --- credentials: a CA, the API server's serving cert, the service-account key, a token ------
pki="$dir/pki"; mkdir -p "$pki"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=lakeload-test-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
# 10.0.0.1: the `kubernetes` Service's ClusterIP; the gateway: the address the API server
# advertises (the Service's endpoint).
printf 'subjectAltName=IP:127.0.0.1,IP:10.0.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n' "$gateway" >"$pki/san.ext"
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
  --bind-address=0.0.0.0 --advertise-address="$gateway" --secure-port="$api_port" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
  --service-account-issuer=https://kubernetes.default.svc \
  --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true --endpoint-reconciler-type=lease \
  --kubelet-preferred-address-types=Hostname
wait_for 60 kube-apiserver kubectl get --raw /readyz

# --- controller-manager and scheduler (cluster-admin token, no serving port) ----------------
start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
  --authorization-kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
  --leader-elect=false --use-service-account-credentials=false \
  --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
  --controllers=job-controller,cronjob-controller,garbage-collector-controller,ttl-after-finished-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,deployment-controller,replicaset-controller,namespace-controller,pod-garbage-collector-controller,node-lifecycle-controller,endpoints-controller,endpointslice-controller
start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig="$dir/kubeconfig" --authentication-kubeconfig="$dir/kubeconfig" \
  --authorization-kubeconfig="$dir/kubeconfig" --bind-address=127.0.0.1 --secure-port=0 \
  --leader-elect=false

# --- containerd: CRI with runc (cgroupfs), a local pause image, the pod network -------------
mkdir -p "$dir/containerd" "$dir/cni/net.d"
# The bridge exists already (with the gateway address); host-local keeps its leases in DIR.
# No ipMasq: pods reach only this host and each other (nothing else is reachable anyway).
cat >"$dir/cni/net.d/10-lakeload.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "lakeload",
  "plugins": [
    {
      "type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$pod_cidr", "gateway": "$gateway"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$dir/cni/ipam"
      }
    }
  ]
}
CNI
cni_bin="$bin/cni"
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
  # Pods' network namespaces are mounted under DIR (not /run/netns): cleanup unmounts them.
  netns_mounts_under_state_dir = true
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
bash "$here/static-image.sh" "$here/pause.c" localhost/pause:dev "$dir/pause.tar"
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

# --- kube-proxy (Service IPs) and kube-network-policies (NetworkPolicy) ---------------------
# Started once the node exists: kube-proxy waits 30 s for its Node object otherwise.
# nftables mode: all its rules live in its own tables (ip/ip6 kube-proxy), dropped on exit.
# NodePorts only on the bridge's address; conntrack-*: leave the host's sysctls as they are.
start kube-proxy "$bin/kube-proxy" --kubeconfig="$dir/kubeconfig" --hostname-override=localhost \
  --proxy-mode=nftables --cluster-cidr="$pod_cidr" --nodeport-addresses="$gateway/32" \
  --metrics-bind-address="127.0.0.1:$proxy_metrics" --healthz-bind-address="127.0.0.1:$proxy_health" \
  --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0
# kube-network-policies only knows the in-cluster configuration (the token and CA under
# /var/run/secrets/kubernetes.io/serviceaccount, KUBERNETES_SERVICE_HOST/PORT): give it the
# admin token and the CA in a mount namespace of its own, where DIR/netpol/run is /run.
sa="$dir/netpol/run/secrets/kubernetes.io/serviceaccount"; mkdir -p "$sa"
printf '%s' "$token" >"$sa/token"; cp "$pki/ca.crt" "$sa/ca.crt"; printf 'kube-system' >"$sa/namespace"
# NRI off: containerd 1.6 does not serve it. The DNS workaround is for kernels before 6.12.
start kube-network-policies env KUBERNETES_SERVICE_HOST=127.0.0.1 KUBERNETES_SERVICE_PORT="$api_port" \
  unshare --mount --propagation private \
  sh -c 'mount --bind "$1" /run && shift && exec "$@"' sh "$dir/netpol/run" \
  "$bin/kube-network-policies" --hostname-override=localhost --disable-nri \
  --netfilter-bug-1766-fix=false --metrics-bind-address="127.0.0.1:$netpol_metrics" \
  --nfqueue-id=100 --v="${LAKELOAD_NETPOL_VERBOSITY:-0}"
# kube-network-policies decides on the first packet of each connection, which netfilter hands
# it through NFQUEUE 100. It installs that hand-off itself as native nftables `queue` rules,
# which this kernel lacks (CONFIG_NFT_QUEUE unset: "Could not process rule: No such file or
# directory"; its log repeats "syncing nftables rules" errors, harmless): iptables' NFQUEUE
# target (xt_NFQUEUE, through nft_compat) does the same, from chain LAKELOAD-NETPOL of the
# filter table. FORWARD: pod to pod (bridged, seen through br_netfilter), also through a Service
# IP. INPUT: pod to this host (servers on 10.244.0.1, the API server behind 10.0.0.1 after
# kube-proxy's DNAT), which upstream does not filter at all (it hooks postrouting only).
# The enforcer applies the egress policies of the source pod and the ingress policies of the
# destination pod; a pod no policy selects passes. Fail closed: with the enforcer down, new
# connections of pods are dropped (up.sh stops when it exits anyway).
# The enforcer knows a pod by the IP in its status, from its informer; a packet from (or to) an
# address it cannot match to a pod counts as "no pod, no policy" and is accepted. A new pod's
# containers run, and connect, before the kubelet has published its IP: measured here, every
# connection of the pod's first 200-400 ms passed whatever policy selects it (the enforcer logs
# srcPod="none" npolicies=0 allowed=true). Upstream closes that gap with NRI (the runtime tells
# the enforcer a sandbox's IP at once), which containerd 1.6 lacks (and v0.8.0 ignores
# --disable-nri). So the chain first holds back new connections from or to a pod address that
# the API server does not show as a live pod's IP (chains LAKELOAD-NETPOL-SRC/-DST list those,
# kept by netpol_gate from a watch of all pods): their first packets are dropped, and retried by
# TCP (SYN after 1 s, 3 s, ...) until the enforcer, whose informer sees the same update, judges
# them with the pod's policies. The host's own address (10.244.0.1) is not a pod.
netpol_gate() {
  local kpid="" type key ip hostnet phase
  local -A owner=()
  trap '[ -z "$kpid" ] || kill "$kpid" 2>/dev/null; exit 0' TERM
  known() { iptables -w -I "$gate_src" 1 -s "$1" -j RETURN && iptables -w -I "$gate_dst" 1 -d "$1" -j RETURN; }
  forget() { iptables -w -D "$gate_src" -s "$1" -j RETURN || true; iptables -w -D "$gate_dst" -d "$1" -j RETURN || true; }
  while true; do
    # The watch starts with the current list (ADDED events); after a restart (the API server
    # ends watches after 30-60 min) every address is forgotten first: fail closed.
    for ip in "${!owner[@]}"; do forget "$ip"; echo "forget $ip (watch restarted)"; done
    owner=()
    exec 3< <(exec "$bin/kubectl" get pods --all-namespaces --watch --output-watch-events \
      -o go-template='{{.type}} {{.object.metadata.namespace}}/{{.object.metadata.name}} {{or .object.status.podIP "-"}} {{or .object.spec.hostNetwork "false"}} {{or .object.status.phase "-"}}{{"\n"}}')
    kpid=$!
    while read -r -u 3 type key ip hostnet phase; do
      if [ "$ip" = - ] || [ "$hostnet" = true ]; then continue; fi
      if [ "$type" != DELETED ] && [ "$phase" != Succeeded ] && [ "$phase" != Failed ]; then
        if [ -z "${owner[$ip]:-}" ]; then known "$ip"; echo "known $ip ($key, $phase)"; fi
        owner[$ip]="$key"
      elif [ "${owner[$ip]:-}" = "$key" ]; then
        forget "$ip"; unset "owner[$ip]"; echo "forget $ip ($key, $type $phase)"
      fi
    done
    exec 3<&-
    wait "$kpid" 2>/dev/null || true
    kpid=""
    sleep 1
  done
}
iptables -w -N "$gate_src"
iptables -w -A "$gate_src" -s "$gateway" -j RETURN
iptables -w -A "$gate_src" -j DROP
iptables -w -N "$gate_dst"
iptables -w -A "$gate_dst" -d "$gateway" -j RETURN
iptables -w -A "$gate_dst" -j DROP
start netpol-gate netpol_gate
iptables -w -N "$netpol_chain"
iptables -w -A "$netpol_chain" -m conntrack ! --ctstate NEW -j RETURN
iptables -w -A "$netpol_chain" -s "$pod_cidr" -j "$gate_src"
iptables -w -A "$netpol_chain" -d "$pod_cidr" -j "$gate_dst"
iptables -w -A "$netpol_chain" -m conntrack --ctstate NEW -p tcp -j NFQUEUE --queue-num 100
iptables -w -A "$netpol_chain" -m conntrack --ctstate NEW -p udp -j NFQUEUE --queue-num 100
iptables -w -A "$netpol_chain" -m conntrack --ctstate NEW -p sctp -j NFQUEUE --queue-num 100
iptables -w -I FORWARD 1 -s "$pod_cidr" -j "$netpol_chain"
iptables -w -I FORWARD 2 -d "$pod_cidr" -j "$netpol_chain"
iptables -w -I INPUT 1 -s "$pod_cidr" -j "$netpol_chain"
net_ready() {
  nft list table ip kube-proxy &&
    awk '$1 == 100 {found = 1} END {exit !found}' /proc/net/netfilter/nfnetlink_queue
}
wait_for 60 "kube-proxy's rules and kube-network-policies' NFQUEUE" net_ready
touch "$dir/ready"
log "ready: KUBECONFIG=$dir/kubeconfig"
while true; do alive; sleep 1; done
