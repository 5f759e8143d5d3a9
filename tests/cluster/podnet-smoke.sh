#!/usr/bin/env bash
# Checks the pod network of a running test cluster (tests/cluster/up.sh DIR):
#   (a) a pod without hostNetwork gets an address in 10.244.0.0/24;
#   (b) it reaches the API server through the `kubernetes` Service
#       ($KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT, which the kubelet sets to 10.0.0.1:443);
#   (c) it reaches a TCP server listening on the host's DIR/host-ip;
#   (d) once a NetworkPolicy allows its egress only to the API server's endpoint (ipBlock
#       DIR/host-ip/32, TCP port DIR/api-port), the host's server no longer answers while the
#       API server still does (nor does another pod, through a Service); deleting the policy
#       restores (c);
#   (e) a pod reaches another pod through a Service's ClusterIP (kube-proxy, EndpointSlices);
#   (f) a hostNetwork pod still reaches the API server on 127.0.0.1:PORT and 10.0.0.1:443.
#
#   tests/cluster/podnet-smoke.sh DIR
#
# The probe image (probe.c, static) is built and imported here; the pods run in a namespace
# podnet-smoke-N, deleted at the end. Prints one line per check; exit status 0 if all pass.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "$1" && pwd)"
[ -e "$dir/ready" ] || { echo "podnet-smoke: $dir/ready is missing: start tests/cluster/up.sh $dir first" >&2; exit 1; }
bin="$("$here/../controlplane/build.sh" | tail -n 1)"
kubectl() { "$bin/kubectl" --kubeconfig="$dir/kubeconfig" "$@"; }
ctr_() { ctr --address "$dir/containerd/containerd.sock" --namespace k8s.io "$@"; }
host_ip="$(cat "$dir/host-ip")"; api_port="$(cat "$dir/api-port")"
ns="podnet-smoke-$RANDOM"
work="$(mktemp -d)"
server=""
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null || true
  kubectl delete namespace "$ns" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
failed=0
check() {  # check NAME COMMAND... : prints PASS/FAIL and the command's output
  local name="$1"; shift
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  out="$(grep -v '^command terminated with exit code' <<<"$out" | tr '\n' ' ')"
  if [ "$rc" = 0 ]; then echo "PASS $name: $out"; else echo "FAIL $name (exit $rc): $out"; failed=1; fi
}
expect_fail() {  # expect_fail NAME COMMAND... : the command must fail
  local name="$1"; shift
  local out rc=0
  out="$("$@" 2>&1)" || rc=$?
  out="$(grep -v '^command terminated with exit code' <<<"$out" | tr '\n' ' ')"
  if [ "$rc" != 0 ]; then echo "PASS $name: $out"; else echo "FAIL $name (it succeeded): $out"; failed=1; fi
}

bash "$here/static-image.sh" "$here/probe.c" localhost/probe:dev "$work/probe.tar"
ctr_ images import --no-unpack=false "$work/probe.tar" >/dev/null
gcc -static -O2 -s -o "$work/probe" "$here/probe.c"

# A TCP server on the host's address on the bridge, where tests run their S3 server.
port=$((20000 + RANDOM % 10000))
"$work/probe" serve "$host_ip" "$port" >"$work/server.log" 2>&1 &
server=$!
sleep 0.3

kubectl create namespace "$ns" >/dev/null
pod() {  # pod NAME HOSTNETWORK ARGS... : the probe image as a pod
  local name="$1" host_network="$2"; shift 2
  local args; args="$(printf '"%s",' "$@")"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: $name, namespace: $ns, labels: {app: $name}}
spec:
  hostNetwork: $host_network
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: probe
    image: localhost/probe:dev
    imagePullPolicy: Never
    args: [${args%,}]
YAML
}
pod probe false sleep
pod server false serve 0.0.0.0 8080
pod hostnet true sleep
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Service
metadata: {name: server, namespace: $ns}
spec:
  selector: {app: server}
  ports: [{port: 80, targetPort: 8080, protocol: TCP}]
YAML
kubectl -n "$ns" wait --for=condition=Ready pod/probe pod/server pod/hostnet --timeout=60s >/dev/null
pod_ip="$(kubectl -n "$ns" get pod probe -o jsonpath='{.status.podIP}')"
server_ip="$(kubectl -n "$ns" get pod server -o jsonpath='{.status.podIP}')"
service_ip="$(kubectl -n "$ns" get service server -o jsonpath='{.spec.clusterIP}')"
in_pod() { kubectl -n "$ns" exec probe -- /probe "$@"; }
in_hostnet() { kubectl -n "$ns" exec hostnet -- /probe "$@"; }
pod_addrs() { [[ "$pod_ip" == 10.244.0.* ]] && echo "status.podIP=$pod_ip; in the pod:" && in_pod addrs; }
# kube-proxy programs a new Service's endpoints within a second or so.
for _ in $(seq 20); do in_pod connect "$service_ip" 80 1 >/dev/null 2>&1 && break; sleep 0.5; done

check "(a) pod IP in 10.244.0.0/24" pod_addrs
check "(b) API server via \$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT" in_pod api
check "(c) host server $host_ip:$port" in_pod connect "$host_ip" "$port"
check "(e) pod server $server_ip:8080 via Service $service_ip:80" in_pod connect "$service_ip" 80
check "(f) hostNetwork pod: API server on 127.0.0.1:$api_port" in_hostnet connect 127.0.0.1 "$api_port"
check "(f) hostNetwork pod: API server via \$KUBERNETES_SERVICE_HOST:\$KUBERNETES_SERVICE_PORT" in_hostnet api

kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: api-only, namespace: $ns}
spec:
  podSelector: {matchLabels: {app: probe}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: $host_ip/32}}]
    ports: [{protocol: TCP, port: $api_port}]
YAML
# The enforcer sees the policy through its informer: give it a moment.
sleep 2
expect_fail "(d) host server blocked by the NetworkPolicy" in_pod connect "$host_ip" "$port" 3
check "(d) API server still reachable under the NetworkPolicy" in_pod api
expect_fail "(d) pod server (via Service) blocked by the NetworkPolicy" in_pod connect "$service_ip" 80 3
kubectl -n "$ns" delete networkpolicy api-only >/dev/null
sleep 2
check "(d) host server reachable again without the policy" in_pod connect "$host_ip" "$port"
echo "host server log: $(tr '\n' ';' <"$work/server.log")"
[ "$failed" = 0 ] && echo "podnet-smoke: all checks passed" || echo "podnet-smoke: some checks FAILED"
exit "$failed"
