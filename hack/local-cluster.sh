#!/usr/bin/env bash
# A real multi-node Kubernetes cluster for svctrace's e2e tests and demo, on one Linux machine,
# without Docker. Every node is a network namespace with its own containerd, kubelet, kube-proxy
# and kube-router (the CNI: pod routes over iBGP, NetworkPolicy); the nodes and the gateway
# ("svctrace-gw", the outside world) share one L2 segment, a bridge in namespace "svctrace-lan".
#
#   hack/local-cluster.sh up [--nodes N] [--proxy-mode iptables|nftables] [--proxy-backend nft|legacy]
#                                         start or change the cluster (idempotent; an unset flag
#                                         keeps what runs; first default: 2 nodes, iptables mode,
#                                         nft backend)
#   hack/local-cluster.sh down            stop everything, leave the machine as it was
#   hack/local-cluster.sh status          every node: processes, readiness, routes
#   hack/local-cluster.sh demo-apps       apply hack/manifests/ and wait for the pods
#   hack/local-cluster.sh lb              give LoadBalancer Services an IP (demo-apps does it too)
#   hack/local-cluster.sh exec [--node NAME] -- CMD...   CMD in a node's namespace (default the
#                                         first node), KUBECONFIG and kubectl on PATH set
#   hack/local-cluster.sh exec-external -- CMD...        CMD in the gateway namespace
#   hack/local-cluster.sh kubectl ARGS... shorthand for exec -- kubectl ARGS...
#   hack/local-cluster.sh build           only build (or find cached) Kubernetes and kube-router
#   hack/local-cluster.sh images          rebuild and import changed images into every node
#
# Fixed facts other scripts and tests rely on:
#   nodes (name = network namespace = node name, address on eth0):
#     svctrace-node   10.199.0.2/24  control plane (API server https://10.199.0.2:6443) + workloads
#     svctrace-node2  10.199.0.3/24
#     svctrace-node3  10.199.0.4/24
#   gateway 10.199.0.1 (eth0 of svctrace-gw), every node's default route; it routes the Service
#   CIDR via svctrace-node, each node's pod CIDR via that node, each LoadBalancer IP via
#   svctrace-node. Pod CIDR 10.244.0.0/16, one /24 per node allocated by kube-controller-manager in
#   the order the nodes come up (svctrace-node 10.244.0.0/24, svctrace-node2 10.244.1.0/24, ...),
#   on bridge kube-bridge (gateway .1); other nodes' pod CIDRs are BGP routes
#   "10.244.X.0/24 via 10.199.0.Y dev eth0 proto 17". Service CIDR 10.96.0.0/16. LoadBalancer
#   ingress IPs 10.199.0.200-250. Admin kubeconfig _output/local-cluster/kubeconfig (usable from
#   inside any node namespace: use `exec`). Logs _output/local-cluster/logs/*.log (kept by `down`):
#   control plane etcd.log, kube-apiserver.log, ...; node components NODE-COMPONENT.log, e.g.
#   svctrace-node2-kubelet.log.
#   Demo apps (hack/manifests, `demo-apps`): Deployment myapp (3 replicas spread over the nodes)
#   behind ClusterIP myapp, NodePort myapp-nodeport (30080), UDP myapp-udp (5353) and
#   LoadBalancer myapp-lb (port 80, nodePort 30084, first LB IP 10.199.0.200); myapp-local
#   (NodePort 30081, externalTrafficPolicy Local, its one pod on svctrace-node); noendpoints; pod
#   client on svctrace-node. With 2+ nodes also the seed-003 set: Deployment sourceip (1 pod, on
#   svctrace-node2) behind ClusterIP sourceip, NodePort sourceip-cluster (30082,
#   externalTrafficPolicy Cluster) and NodePort sourceip-local (30083, externalTrafficPolicy Local).
#
# Binaries: Kubernetes v1.36.3 from the module in hack/k8s, kube-router from the module in
# hack/kube-router, both built from the Go module proxy and cached by version and module hash under
# ${XDG_CACHE_HOME}/svctrace or, without XDG_CACHE_HOME, _output/cache. `up` also builds
# _output/bin/kubectl-svctrace when it is missing or older than its sources, and imports the agent
# image made from it into every node.
#
# Host changes made while the cluster is up, all undone by `down`: the namespaces, the processes
# (pid files in _output/local-cluster/pids; containerd's shims are found by their containerd
# address), mounts under _output/local-cluster and /run/svctrace-cluster, pod cgroups, symlinks in
# /var/log/containers, CNI result cache files, net.netfilter.nf_log_all_netns=1 (so legacy TRACE
# lines from the node namespaces reach the kernel log, as they would on a real node; with several
# nodes the one kernel log holds the lines of every node) and the kernel tunables kubelet sets at
# start (vm.overcommit_memory, kernel.panic...), which are put back right after each kubelet started
# and again by `down`. Before deleting the namespaces, `down` also ends whatever still runs inside
# them (e.g. a command started with `exec`). Routes, ipsets, rules and BGP sessions live inside the
# namespaces and go with them.
#
# kubelet and containerd always use iptables-nft (Debian's default); kube-proxy and kube-router
# follow --proxy-backend (on a real node both images pick the backend the node uses), so with
# `legacy` kube-router's NetworkPolicy chains are in iptables-legacy next to kube-proxy's, and
# switching backends moves them (kube-router restarts; its rules leave the old backend). Commands that change the cluster (up, down, demo-apps,
# lb, build, images) take the lock _output/local-cluster.lock: concurrent calls wait for each other;
# they refuse to touch a cluster started from another checkout (its state folder is named in
# /run/svctrace-cluster/owner).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="${REPO}/hack/local-cluster.sh"

K8S_VERSION=v1.36.3
KUBE_ROUTER_MODULE=github.com/cloudnativelabs/kube-router/v2
NODE_NAMES=(svctrace-node svctrace-node2 svctrace-node3)
NODE_IPS=(10.199.0.2 10.199.0.3 10.199.0.4)
DEFAULT_NODES=2
GW_NS=svctrace-gw
LAN_NS=svctrace-lan
GW_IP=10.199.0.1
NET_PREFIX=24
CLUSTER_CIDR=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16
LB_NET=10.199.0
LB_FIRST=200
LB_LAST=250
API_PORT=6443
CP_NODE="${NODE_NAMES[0]}"
CP_IP="${NODE_IPS[0]}"
API_SERVER="https://${CP_IP}:${API_PORT}"

STATE="${REPO}/_output/local-cluster"
LOGS="${STATE}/logs"
PIDS="${STATE}/pids"
PKI="${STATE}/pki"
CONF="${STATE}/config"
KUBECONFIG_PATH="${STATE}/kubeconfig"
# Short, fixed path: unix socket names are limited to 108 bytes, clones can live anywhere.
RUN_DIR=/run/svctrace-cluster
CACHE_ROOT="${XDG_CACHE_HOME:+${XDG_CACHE_HOME}/svctrace}"
CACHE_ROOT="${CACHE_ROOT:-${REPO}/_output/cache}"

# Root-namespace sysctls touched while the cluster is up (see the header).
KUBELET_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
HOST_SYSCTLS=(net.netfilter.nf_log_all_netns "${KUBELET_SYSCTLS[@]}")

export PATH="/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=local

log() { printf '%s local-cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
  printf 'local-cluster: error: %s\n' "$*" >&2
  exit 1
}

require_root() {
  [[ "$(id -u)" == 0 ]] || die "run as root: the cluster needs network namespaces, mounts and iptables"
}

# ---------------------------------------------------------------------------------------------
# Nodes

# node_count: how many nodes the cluster has (0 when it is not up).
node_count() {
  if [[ -f "${STATE}/node-count" ]]; then cat "${STATE}/node-count"; else echo 0; fi
}

# nodes [N]: the names of the first N nodes (default: the cluster's).
nodes() {
  local n="${1:-$(node_count)}"
  echo "${NODE_NAMES[@]:0:n}"
}

node_ip() {
  local i
  for i in "${!NODE_NAMES[@]}"; do
    if [[ "${NODE_NAMES[$i]}" == "$1" ]]; then
      echo "${NODE_IPS[$i]}"
      return 0
    fi
  done
  die "unknown node $1: want one of ${NODE_NAMES[*]}"
}

node_dir() { echo "${STATE}/nodes/$1"; }
node_sock() { echo "${RUN_DIR}/$1/containerd.sock"; }

# ---------------------------------------------------------------------------------------------
# Binaries built from the Go module proxy

# module_cache_dir KIND VERSION MODULE_DIR: the cache folder for a build of MODULE_DIR; a change
# of its go.mod, go.sum or of the Go toolchain builds into a new folder.
module_cache_dir() {
  local kind="$1" version="$2" dir="$3" key
  key="$( {
    cat "${dir}/go.mod" "${dir}/go.sum"
    go env GOVERSION
  } | sha256sum | cut -c1-12)"
  echo "${CACHE_ROOT}/${kind}/${version}-${key}/bin"
}

# cached_build "WHAT: HINT" OUT_DIR MODULE_DIR LDFLAGS PACKAGE...: builds the packages into OUT_DIR unless
# a complete build is there; prints OUT_DIR. One `go build` for all: shared packages compile once.
cached_build() {
  local what="$1" dir="$2" mod="$3" ldflags="$4" tmp start
  shift 4
  command -v go >/dev/null || die "go not found: install Go 1.26 at /usr/local/go"
  if [[ -f "${dir}/.complete" ]]; then
    echo "$dir"
    return 0
  fi
  tmp="${dir}.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "building ${what%%:*} into ${dir} (${what#*: })"
  start=$SECONDS
  local buildlog="${LOGS}/build-$(basename "$mod").log"
  if ! (cd "$mod" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "${tmp}/" "$@") >"$buildlog" 2>&1; then
    tail -n 30 "$buildlog" >&2
    die "building ${what} failed (full log: ${buildlog})"
  fi
  touch "${tmp}/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built ${what%%:*} in $((SECONDS - start))s"
  echo "$dir"
}

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

k8s_bin_dir() { module_cache_dir k8s "$K8S_VERSION" "${REPO}/hack/k8s"; }

build_k8s() {
  local c pkgs=() x="" p
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  # Stamp the version as the release build does, so the node reports kubelet v1.36.3.
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    x+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=36"
    x+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
  done
  cached_build "Kubernetes ${K8S_VERSION} (${K8S_CMDS[*]}): ~5 min on 2 cores the first time" \
    "$(k8s_bin_dir)" "${REPO}/hack/k8s" "-s -w${x}" "${pkgs[@]}"
}

kube_router_version() {
  awk -v m="$KUBE_ROUTER_MODULE" '$1 == m { print $2 }' "${REPO}/hack/kube-router/go.mod"
}

build_kube_router() {
  local v
  v="$(kube_router_version)"
  [[ -n "$v" ]] || die "hack/kube-router/go.mod does not require ${KUBE_ROUTER_MODULE}"
  cached_build "kube-router ${v}: ~2 min on 2 cores the first time" \
    "$(module_cache_dir kube-router "$v" "${REPO}/hack/kube-router")" "${REPO}/hack/kube-router" \
    "-s -w -X ${KUBE_ROUTER_MODULE}/pkg/version.Version=${v}" "${KUBE_ROUTER_MODULE}/cmd/kube-router"
}

# Resolved once by `up` and remembered, so `exec` does not need the Go toolchain.
k8s_bin() {
  if [[ -f "${STATE}/k8s-bin" ]]; then cat "${STATE}/k8s-bin"; else k8s_bin_dir; fi
}

PLUGIN_BIN="${REPO}/_output/bin/kubectl-svctrace"

# ensure_plugin: `make build` when the plugin binary (the agent image's content) is missing or
# older than any of its sources. SVCTRACE_BIN names a binary built elsewhere: used as it is.
ensure_plugin() {
  if [[ -n "${SVCTRACE_BIN:-}" ]]; then
    [[ -x "$SVCTRACE_BIN" ]] || die "SVCTRACE_BIN=${SVCTRACE_BIN} is not an executable: build it or unset SVCTRACE_BIN"
    return 0
  fi
  if [[ -x "$PLUGIN_BIN" ]] && [[ -z "$(find "${REPO}/cmd" "${REPO}/pkg" "${REPO}/go.mod" "${REPO}/go.sum" \
    -newer "$PLUGIN_BIN" -type f ! -name '*_test.go' ! -path '*/testdata/*' -print -quit)" ]]; then
    return 0
  fi
  log "building ${PLUGIN_BIN} (missing or older than its sources): the agent image is made from it"
  make -C "$REPO" --no-print-directory build >"${LOGS}/build-plugin.log" 2>&1 || {
    tail -n 30 "${LOGS}/build-plugin.log" >&2
    die "make build failed (log: ${LOGS}/build-plugin.log)"
  }
}

# ---------------------------------------------------------------------------------------------
# Processes

pid_of() {
  local f="${PIDS}/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -d "/proc/${pid}" ]] || return 1
  # Guard against pid reuse: the process must still be the binary we started.
  tr '\0' ' ' 2>/dev/null <"/proc/${pid}/cmdline" | grep -q -- "$(cat "${PIDS}/$1.cmd")" || return 1
  echo "$pid"
}

running() { pid_of "$1" >/dev/null; }

# start NAME NETNS PATH_PREFIX BINARY ARGS...: runs BINARY in NETNS detached from this shell
# (setsid: no terminal signals), output appended to logs/NAME.log, pid in pids/NAME.pid. It
# inherits no descriptor but stdin/out/err: not this script's lock (9), not a caller's (e.g.
# `flock /some/lock hack/local-cluster.sh up`), or those locks would live as long as the
# component. nsenter --net only calls setns and exec, so the pid is the component's own pid.
# nsenter and not `ip netns exec`: the latter remounts /sys and kubelet/runc then find no cgroup
# mounts.
start() {
  local name="$1" ns="$2" path_prefix="$3" bin="$4"
  shift 4
  if running "$name"; then
    return 0
  fi
  printf '%s\n' "$bin" >"${PIDS}/${name}.cmd"
  printf '\n===== %s start: %s %s\n' "$(date -Is)" "$bin" "$*" >>"${LOGS}/${name}.log"
  (
    close_fds
    PATH="${path_prefix:+${path_prefix}:}${PATH}" exec setsid nsenter --net="/var/run/netns/${ns}" -- "$bin" "$@" \
      >>"${LOGS}/${name}.log" 2>&1 </dev/null
  ) &
  echo $! >"${PIDS}/${name}.pid"
  # Until the subshell has exec'd (closing descriptors takes a while on a loaded machine) its
  # command line is this script's, and `running` would call the component dead: wait for it.
  local i
  for ((i = 0; i < 100; i++)); do
    if running "$name" || [[ ! -d "/proc/$!" ]]; then break; fi
    sleep 0.05
  done
  log "started ${name} (pid $!)"
}

# close_fds: closes every descriptor of this (sub)shell above 2.
close_fds() {
  local fd n
  for fd in /proc/"${BASHPID}"/fd/*; do
    n="${fd##*/}"
    if ((n > 2)); then eval "exec ${n}>&-"; fi
  done 2>/dev/null
}

# stop NAME...: SIGTERM to all of them at once, then SIGKILL to those still running after 20 s.
stop() {
  local name pid i alive pids=() names=()
  for name in "$@"; do
    if pid="$(pid_of "$name")"; then
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
      names+=("$name")
    fi
  done
  for ((i = 0; i < 200; i++)); do
    alive=0
    for pid in "${pids[@]}"; do
      if [[ -d "/proc/${pid}" ]]; then alive=1; fi
    done
    ((alive)) || break
    sleep 0.1
  done
  for i in "${!pids[@]}"; do
    if [[ -d "/proc/${pids[$i]}" ]]; then
      log "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for 20s: killing it"
      kill -KILL "${pids[$i]}" 2>/dev/null || true
    fi
  done
  for name in "${names[@]}"; do log "stopped ${name}"; done
  for name in "$@"; do rm -f "${PIDS}/${name}.pid" "${PIDS}/${name}.cmd"; done
}

# wait_until DESC SECONDS LOGNAME CMD...: polls CMD once a second; on timeout prints the tail of
# logs/LOGNAME.log and fails with DESC, the component and its log.
wait_until() {
  local desc="$1" timeout="$2" logname="$3" i
  shift 3
  for ((i = 0; i < timeout; i++)); do
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [[ -n "$logname" ]] && ! running "$logname"; then
      # The component died: no point in waiting for it.
      tail -n 40 "${LOGS}/${logname}.log" >&2 || true
      die "${desc}: ${logname} is not running (log: ${LOGS}/${logname}.log)"
    fi
    sleep 1
  done
  if [[ -n "$logname" ]]; then tail -n 40 "${LOGS}/${logname}.log" >&2 || true; fi
  die "${desc}: timed out after ${timeout}s${logname:+ (${logname} log: ${LOGS}/${logname}.log)}"
}

in_ns() {
  local ns="$1"
  shift
  nsenter --net="/var/run/netns/${ns}" -- "$@"
}
in_gw() { in_ns "$GW_NS" "$@"; }

# KUBECACHEDIR keeps kubectl's (and cli-runtime's) discovery cache out of $HOME.
kc() {
  in_ns "$CP_NODE" env KUBECONFIG="$KUBECONFIG_PATH" KUBECACHEDIR="${STATE}/kube-cache" "$(k8s_bin)/kubectl" "$@"
}

# ---------------------------------------------------------------------------------------------
# Network: the LAN bridge, the gateway, the nodes' eth0

ensure_ns() {
  [[ -e "/var/run/netns/$1" ]] || ip netns add "$1"
  ip -n "$1" link set lo up
}

# setup_lan: the switch (bridge lan0 in its own namespace) and the gateway on it.
setup_lan() {
  ensure_ns "$LAN_NS"
  ensure_ns "$GW_NS"
  if ! ip -n "$LAN_NS" link show lan0 >/dev/null 2>&1; then
    ip -n "$LAN_NS" link add lan0 type bridge
  fi
  # A plain switch: frames it forwards do not cross netfilter here.
  if in_ns "$LAN_NS" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    in_ns "$LAN_NS" sysctl -qw net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0
  fi
  ip -n "$LAN_NS" link set lan0 up
  attach_to_lan "$GW_NS" "$GW_NS"
  ip -n "$GW_NS" addr replace "${GW_IP}/${NET_PREFIX}" dev eth0
  ip -n "$GW_NS" link set eth0 up
  # The gateway routes the Service range to the control-plane node, like a router in front of it.
  ip -n "$GW_NS" route replace "$SERVICE_CIDR" via "$CP_IP" dev eth0
}

# attach_to_lan NS PORT: a veth pair, eth0 in NS, PORT on the bridge.
attach_to_lan() {
  local ns="$1" port="$2"
  if ! ip -n "$ns" link show eth0 >/dev/null 2>&1; then
    ip -n "$LAN_NS" link del "$port" 2>/dev/null || true
    ip -n "$ns" link add eth0 type veth peer name "$port" netns "$LAN_NS"
  fi
  ip -n "$LAN_NS" link set "$port" master lan0 up
}

setup_node_network() {
  local node="$1" ip
  ip="$(node_ip "$node")"
  ensure_ns "$node"
  attach_to_lan "$node" "$node"
  ip -n "$node" addr replace "${ip}/${NET_PREFIX}" dev eth0
  ip -n "$node" link set eth0 up
  ip -n "$node" route replace default via "$GW_IP" dev eth0
  in_ns "$node" sysctl -qw net.ipv4.ip_forward=1
  # Per-namespace since Linux 5.3; kube-proxy needs bridged pod traffic to cross iptables.
  if in_ns "$node" test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    in_ns "$node" sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
  fi
}

save_host_sysctls() {
  local s
  [[ -f "${STATE}/host-sysctls" ]] && return 0
  for s in "${HOST_SYSCTLS[@]}"; do
    printf '%s=%s\n' "$s" "$(sysctl -n "$s")"
  done >"${STATE}/host-sysctls.tmp"
  mv "${STATE}/host-sysctls.tmp" "${STATE}/host-sysctls"
}

# restore_host_sysctls [NAME...]: puts back the saved values (all of them without arguments).
restore_host_sysctls() {
  local line name
  [[ -f "${STATE}/host-sysctls" ]] || return 0
  while IFS= read -r line; do
    name="${line%%=*}"
    if (($# == 0)) || [[ " $* " == *" ${name} "* ]]; then
      sysctl -qw "$line" || log "could not restore ${line}"
    fi
  done <"${STATE}/host-sysctls"
}

# ---------------------------------------------------------------------------------------------
# Configuration: certificates, tokens, kubeconfigs, component configs

gen_pki() {
  mkdir -p "$PKI"
  if [[ ! -f "${PKI}/ca.crt" ]]; then
    openssl genrsa -out "${PKI}/ca.key" 2048 2>/dev/null
    openssl req -x509 -new -key "${PKI}/ca.key" -subj "/CN=svctrace-local-ca" -days 3650 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "${PKI}/ca.crt" 2>/dev/null
    rm -f "${PKI}/apiserver.crt"
  fi
  if [[ ! -f "${PKI}/apiserver.crt" ]]; then
    openssl genrsa -out "${PKI}/apiserver.key" 2048 2>/dev/null
    openssl req -new -key "${PKI}/apiserver.key" -subj "/CN=kube-apiserver" -out "${PKI}/apiserver.csr" 2>/dev/null
    local san="IP:${CP_IP},IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:${CP_NODE},DNS:kubernetes"
    san+=",DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    openssl x509 -req -in "${PKI}/apiserver.csr" -CA "${PKI}/ca.crt" -CAkey "${PKI}/ca.key" \
      -CAcreateserial -days 3650 -out "${PKI}/apiserver.crt" \
      -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' "$san") \
      2>/dev/null
  fi
  if [[ ! -f "${PKI}/sa.key" ]]; then
    openssl genrsa -out "${PKI}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${PKI}/sa.key" -pubout -out "${PKI}/sa.pub" 2>/dev/null
  fi
  if [[ ! -f "${PKI}/tokens.csv" ]]; then
    # Static tokens: token,user,uid,"groups". The cluster is private to this machine's
    # namespaces. Every possible node gets its kubelet token now: the API server reads the file
    # once, and `up --nodes N` may add nodes later.
    local t n
    {
      t="$(openssl rand -hex 16)"; echo "${t},svctrace-admin,svctrace-admin,\"system:masters\""
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-controller-manager,system:kube-controller-manager,"
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-scheduler,system:kube-scheduler,"
      for n in "${NODE_NAMES[@]}"; do
        t="$(openssl rand -hex 16)"; echo "${t},system:node:${n},system:node:${n},\"system:nodes\""
      done
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-proxy,system:kube-proxy,"
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-router,system:kube-router,"
    } >"${PKI}/tokens.csv"
    chmod 600 "${PKI}/tokens.csv"
  fi
}

# write_file FILE: stdin into FILE, but only when the content differs. kube-proxy exits as soon
# as its config file is written (even with the same content), and `up` must not restart
# components behind their pid files' back.
write_file() {
  local file="$1" tmp
  tmp="$(mktemp "${file}.XXXXXX")"
  cat >"$tmp"
  if [[ -f "$file" ]] && cmp -s "$tmp" "$file"; then
    rm -f "$tmp"
  else
    chmod 600 "$tmp"
    mv -f "$tmp" "$file"
  fi
}

token_of() { awk -F, -v u="$1" '$2 == u { print $1 }' "${PKI}/tokens.csv"; }

# write_kubeconfig FILE USER
write_kubeconfig() {
  local file="$1" user="$2" token
  token="$(token_of "$user")"
  [[ -n "$token" ]] || die "no token for ${user} in ${PKI}/tokens.csv (made by an older version of this script): run '$0 down' first"
  write_file "$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: svctrace-local
  cluster:
    server: ${API_SERVER}
    certificate-authority-data: $(base64 -w0 <"${PKI}/ca.crt")
users:
- name: ${user}
  user:
    token: ${token}
contexts:
- name: svctrace-local
  context:
    cluster: svctrace-local
    user: ${user}
    namespace: default
current-context: svctrace-local
EOF
}

write_control_plane_configs() {
  mkdir -p "$CONF"
  write_kubeconfig "$KUBECONFIG_PATH" svctrace-admin
  write_kubeconfig "${CONF}/controller-manager.kubeconfig" system:kube-controller-manager
  write_kubeconfig "${CONF}/scheduler.kubeconfig" system:kube-scheduler
  write_kubeconfig "${CONF}/kube-proxy.kubeconfig" system:kube-proxy
  write_kubeconfig "${CONF}/kube-router.kubeconfig" system:kube-router

  # Folders whose iptables* symlinks pick a backend: kube-proxy runs the `iptables` first on PATH.
  local b n f
  for b in nft legacy; do
    mkdir -p "${STATE}/bin-${b}"
    for n in iptables ip6tables; do
      for f in "" -save -restore; do
        ln -sfn "/usr/sbin/${n}-${b}${f}" "${STATE}/bin-${b}/${n}${f}"
      done
    done
  done
}

# write_node_configs NODE: containerd's and kubelet's, with every path of their own.
write_node_configs() {
  local node="$1" dir sock
  dir="$(node_dir "$node")"
  sock="$(node_sock "$node")"
  mkdir -p "${dir}/config" "${dir}/cni/net.d" "${dir}/cni/ipam" "${dir}/kubelet" "${dir}/pod-logs" \
    "${dir}/containerd" "${RUN_DIR}/${node}"
  write_kubeconfig "${dir}/config/kubelet.kubeconfig" "system:node:${node}"

  write_file "${dir}/config/containerd.toml" <<EOF
version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"

[grpc]
  address = "${sock}"

[ttrpc]
  address = "${sock}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/svctrace-pause:1"
  # Without it runc fails writing oom_score_adj ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Pod network namespaces are mounted under the node's state folder, not /var/run/netns.
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        # runc's state next to the node's instead of /run/containerd/runc.
        Root = "${RUN_DIR}/${node}/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    # kube-router's CNI configuration (written once the node has its pod CIDR).
    conf_dir = "${dir}/cni/net.d"
EOF

  write_file "${dir}/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1; kubelet >= 1.35 refuses it unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
resolvConf: ""
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
containerRuntimeEndpoint: unix://${sock}
podLogsDir: ${dir}/pod-logs
# kubectl logs/exec: the API server reaches kubelet without client certificates. Acceptable only
# because kubelet listens inside this private network namespace.
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
serializeImagePulls: false
EOF
}

# write_cni_config NODE CIDR: kube-router's CNI configuration (the bridge plugin on kube-bridge,
# the bridge kube-router creates, host-local IPAM over the node's pod CIDR). kube-router finds it
# through KUBE_ROUTER_CNI_CONF_FILE and sees the CIDR it would insert already there. Written once:
# the pod CIDR does not change while the node exists, and kube-router may rewrite the file.
write_cni_config() {
  local node="$1" cidr="$2" file
  file="$(node_dir "$node")/cni/net.d/10-kuberouter.conflist"
  [[ -f "$file" ]] && return 0
  cat >"${file}.tmp" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "svctrace",
  "plugins": [
    {
      "name": "kubernetes",
      "type": "bridge",
      "bridge": "kube-bridge",
      "isDefaultGateway": true,
      "hairpinMode": true,
      "mtu": 1500,
      "ipam": {
        "type": "host-local",
        "dataDir": "$(node_dir "$node")/cni/ipam",
        "ranges": [[{"subnet": "${cidr}"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  mv "${file}.tmp" "$file"
}

# write_kube_proxy_config NODE MODE
write_kube_proxy_config() {
  local node="$1" mode="$2"
  write_file "$(node_dir "$node")/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${CONF}/kube-proxy.kubeconfig
hostnameOverride: ${node}
mode: ${mode}
clusterCIDR: ${CLUSTER_CIDR}
# 0 = leave the kernel's conntrack settings alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
EOF
}

# ---------------------------------------------------------------------------------------------
# Control plane (on the first node)

start_etcd() {
  start etcd "$CP_NODE" "" /usr/bin/etcd --name svctrace --data-dir "${STATE}/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster svctrace=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --logger zap --log-outputs stderr
  wait_until "etcd did not become healthy" 60 etcd in_ns "$CP_NODE" curl -fsS http://127.0.0.1:2379/health
}

start_apiserver() {
  local bin="$1"
  start kube-apiserver "$CP_NODE" "" "${bin}/kube-apiserver" \
    --advertise-address="$CP_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT" \
    --etcd-servers=http://127.0.0.1:2379 \
    --cert-dir="${PKI}/apiserver-generated" \
    --tls-cert-file="${PKI}/apiserver.crt" --tls-private-key-file="${PKI}/apiserver.key" \
    --client-ca-file="${PKI}/ca.crt" --token-auth-file="${PKI}/tokens.csv" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="${PKI}/sa.pub" --service-account-signing-key-file="${PKI}/sa.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP \
    --profiling=false --v=1
  wait_until "the API server did not become ready" 120 kube-apiserver \
    in_ns "$CP_NODE" curl -fsS --cacert "${PKI}/ca.crt" "${API_SERVER}/readyz"
}

start_controllers() {
  local bin="$1"
  # nodeipam gives each node its /24 of the cluster CIDR (kube-router routes them); nodelifecycle
  # stays off: nothing here evicts pods from a node that is slow to report on a busy machine.
  start kube-controller-manager "$CP_NODE" "" "${bin}/kube-controller-manager" \
    --kubeconfig="${CONF}/controller-manager.kubeconfig" \
    --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
    --use-service-account-credentials=true --controllers='*,-nodelifecycle' \
    --allocate-node-cidrs=true --cluster-cidr="$CLUSTER_CIDR" --node-cidr-mask-size=24 \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --leader-elect=false --bind-address=127.0.0.1 --profiling=false --v=1
  start kube-scheduler "$CP_NODE" "" "${bin}/kube-scheduler" \
    --kubeconfig="${CONF}/scheduler.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
    --profiling=false --v=1
}

# apply_kube_router_rbac: what kube-router's own DaemonSet manifests grant it.
apply_kube_router_rbac() {
  kc apply -f - >/dev/null <<EOF || die "applying kube-router's RBAC failed (log: ${LOGS}/kube-apiserver.log)"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: svctrace:kube-router
rules:
- apiGroups: [""]
  resources: [namespaces, pods, services, nodes, endpoints]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [coordination.k8s.io]
  resources: [leases]
  verbs: [get, create, update]
- apiGroups: [""]
  resources: [services/status]
  verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: svctrace:kube-router
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: svctrace:kube-router
subjects:
- apiGroup: rbac.authorization.k8s.io
  kind: User
  name: system:kube-router
EOF
}

# ---------------------------------------------------------------------------------------------
# Node components

ctr_node() {
  local node="$1"
  shift
  ctr --address "$(node_sock "$node")" --namespace k8s.io "$@"
}

any_containerd_running() {
  local n
  for n in "${NODE_NAMES[@]}"; do
    if running "${n}-containerd"; then return 0; fi
  done
  return 1
}

# note_host_paths: remembers which fixed host folders did not exist before the cluster, so
# `down` removes exactly those (and never one another program uses).
note_host_paths() {
  local path marker
  any_containerd_running && return 0
  # /var/lib/kubelet/device-plugins is fixed in kubelet (not under --root-dir), iptables locks
  # /run/xtables.lock, libmount keeps /run/mount/utab.
  for path in /run/containerd:created-run-containerd /var/log/containers:created-var-log-containers \
    /var/lib/cni:created-var-lib-cni /sys/fs/cgroup/memory/k8s.io:created-cgroup-k8s.io \
    /var/lib/kubelet:created-var-lib-kubelet /run/xtables.lock:created-run-xtables.lock \
    /run/mount:created-run-mount; do
    marker="${STATE}/${path#*:}"
    path="${path%%:*}"
    if [[ ! -e "$path" && ! -f "$marker" ]]; then
      touch "$marker"
    fi
  done
}

start_containerd() {
  local node="$1"
  start "${node}-containerd" "$node" "${STATE}/bin-nft" /usr/bin/containerd --config "$(node_dir "$node")/config/containerd.toml"
}

wait_containerd() {
  local node="$1"
  wait_until "node ${node}: containerd did not start" 60 "${node}-containerd" ctr_node "$node" version
}

# import_images NODE...: (re)builds the images whose inputs changed and imports those a node's
# containerd lacks.
import_images() {
  local name ref hash node imported
  local targets=(pause workload agent)
  ensure_plugin
  SVCTRACE_BIN="${SVCTRACE_BIN:-$PLUGIN_BIN}" "${REPO}/hack/build-image.sh" "${targets[@]}"
  for node in "$@"; do
    imported=()
    mkdir -p "$(node_dir "$node")/images"
    for name in "${targets[@]}"; do
      ref="$(cat "${REPO}/_output/image/${name}.ref")"
      hash="$(cat "${REPO}/_output/image/${name}.hash")"
      local mark
      mark="$(node_dir "$node")/images/${name}"
      if [[ -f "$mark" && "$(cat "$mark")" == "$hash" ]] && ctr_node "$node" images ls -q | grep -qx "$ref"; then
        continue
      fi
      ctr_node "$node" images import --base-name "${ref%:*}" "${REPO}/_output/image/${name}.tar" >/dev/null ||
        die "node ${node}: importing ${ref} into containerd failed (log: ${LOGS}/${node}-containerd.log)"
      echo "$hash" >"$mark"
      imported+=("$ref")
    done
    if ((${#imported[@]} > 0)); then
      log "node ${node}: imported ${imported[*]}"
    fi
  done
}

node_field() { kc get node "$1" -o "jsonpath=$2" 2>/dev/null; }

node_ready() {
  [[ "$(node_field "$1" '{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

node_pod_cidr() { node_field "$1" '{.spec.podCIDR}'; }

has_pod_cidr() { [[ -n "$(node_pod_cidr "$1")" ]]; }

# start_kubelet BIN NODE: registers the node and waits for its pod CIDR.
start_kubelet() {
  local bin="$1" node="$2" was_running=1 dir
  dir="$(node_dir "$node")"
  running "${node}-kubelet" || was_running=0
  start "${node}-kubelet" "$node" "${STATE}/bin-nft" "${bin}/kubelet" \
    --config="${dir}/config/kubelet.yaml" --kubeconfig="${dir}/config/kubelet.kubeconfig" \
    --root-dir="${dir}/kubelet" --cert-dir="${dir}/kubelet/pki" \
    --hostname-override="$node" --node-ip="$(node_ip "$node")" --v=1
  wait_until "node ${node}: kubelet did not register the node" 120 "${node}-kubelet" kc get node "$node"
  if ((!was_running)); then
    # kubelet set its kernel tunables at start (root namespace!): put the machine's values back.
    restore_host_sysctls "${KUBELET_SYSCTLS[@]}"
  fi
  wait_until "node ${node}: kube-controller-manager gave it no pod CIDR" 60 kube-controller-manager has_pod_cidr "$node"
  if [[ "$node" == "$CP_NODE" ]]; then
    kc label node "$node" --overwrite node-role.kubernetes.io/control-plane= >/dev/null
  fi
}

# finish_node NODE: Ready (needs the CNI configuration) and schedulable.
finish_node() {
  local node="$1"
  wait_until "node ${node}: the node did not become Ready" 120 "${node}-kubelet" node_ready "$node"
  # Registration adds this taint; the nodelifecycle controller that would lift it is off.
  if kc get node "$node" -o 'jsonpath={.spec.taints[*].key}' | grep -q node.kubernetes.io/not-ready; then
    kc taint node "$node" node.kubernetes.io/not-ready:NoSchedule- >/dev/null
  fi
}

# start_kube_router BIN NODE BACKEND: kube-router with the iptables binaries of BACKEND.
start_kube_router() {
  local kr="$1" node="$2" backend="$3" dir
  dir="$(node_dir "$node")"
  mkdir -p "${dir}/kube-router"
  # The CNI configuration is per node; everything else kube-router keeps is in the namespace
  # (routes, rules, ipsets, BGP sessions) or in memory.
  KUBE_ROUTER_CNI_CONF_FILE="${dir}/cni/net.d/10-kuberouter.conflist" \
    start "${node}-kube-router" "$node" "${STATE}/bin-${backend}" "${kr}/kube-router" \
    --kubeconfig="${CONF}/kube-router.kubeconfig" --hostname-override="$node" \
    --run-router=true --run-firewall=true --run-service-proxy=false \
    --enable-overlay=false --enable-ibgp=true --nodes-full-mesh=true \
    --service-cluster-ip-range="$SERVICE_CIDR" --metrics-port=0 --v=1
}

# remove_kube_router_rules NODE BACKEND: kube-router's chains, and the rules that jump to them or
# carry its comments, out of every table of BACKEND (IPv4 and IPv6) that holds any; the other
# rules stay. Legacy tables are listed from /proc (reading one that is not there creates it).
remove_kube_router_rules() {
  local node="$1" backend="$2" v save tables t dump
  local re='kube-router|KUBE-ROUTER|KUBE-POD-FW-|KUBE-NWPLCY-'
  for v in "" 6; do
    save="ip${v}tables-${backend}-save"
    if [[ "$backend" == legacy ]]; then
      tables="$(in_ns "$node" cat "/proc/net/ip${v:+6}_tables_names" 2>/dev/null || true)"
    else
      tables="$(in_ns "$node" nft list tables "ip${v}" 2>/dev/null | awk '{print $3}')"
    fi
    for t in $tables; do
      dump="$(in_ns "$node" "$save" -t "$t" 2>/dev/null)" || continue
      grep -q -E "$re" <<<"$dump" || continue
      grep -v -E "$re" <<<"$dump" | in_ns "$node" "ip${v}tables-${backend}-restore" -w ||
        die "node ${node}: removing kube-router's ${backend} rules from table ${t} failed"
    done
  done
}

# bgp_routes_complete NODE NODES...: NODE has a route via each other node to its pod CIDR.
bgp_routes_complete() {
  local node="$1" other cidr
  shift
  for other in "$@"; do
    [[ "$other" == "$node" ]] && continue
    cidr="$(cat "$(node_dir "$other")/pod-cidr")"
    in_ns "$node" ip route show "$cidr" | grep -q "via $(node_ip "$other") dev eth0" || return 1
  done
}

proxy_synced() {
  local node="$1" mode="$2" backend="$3"
  if [[ "$mode" == nftables ]]; then
    in_ns "$node" nft list table ip kube-proxy 2>/dev/null | grep -q 'default/kubernetes/tcp/https'
  else
    in_ns "$node" "iptables-${backend}-save" -t nat 2>/dev/null |
      grep -q -- '-A KUBE-SERVICES .*default/kubernetes:https cluster IP'
  fi
}

# proxy_leftovers NODE MODE BACKEND: whether kube-proxy rules of that mode are still there.
proxy_leftovers() {
  local node="$1" mode="$2" backend="$3"
  if [[ "$mode" == nftables ]]; then
    in_ns "$node" nft list table ip kube-proxy >/dev/null 2>&1
  else
    in_ns "$node" "iptables-${backend}-save" 2>/dev/null | grep -q -- '-A KUBE-SERVICES'
  fi
}

# start_kube_proxy BIN NODE MODE BACKEND OLD_MODE OLD_BACKEND: with a different old setting,
# kube-proxy --cleanup in that setting first (its rules would otherwise stay next to the new ones).
start_kube_proxy() {
  local bin="$1" node="$2" mode="$3" backend="$4" old_mode="$5" old_backend="$6" dir name="${2}-kube-proxy"
  dir="$(node_dir "$node")"
  if [[ -n "$old_mode" && "${old_mode}/${old_backend}" != "${mode}/${backend}" ]]; then
    stop "$name"
    write_kube_proxy_config "$node" "$old_mode"
    in_ns "$node" env PATH="${STATE}/bin-${old_backend}:${PATH}" "${bin}/kube-proxy" \
      --config="${dir}/config/kube-proxy.yaml" --cleanup >>"${LOGS}/${name}.log" 2>&1 ||
      die "node ${node}: kube-proxy --cleanup of the ${old_mode}/${old_backend} rules failed (log: ${LOGS}/${name}.log); run '$0 down' and up again"
    if proxy_leftovers "$node" "$old_mode" "$old_backend"; then
      die "node ${node}: kube-proxy --cleanup left ${old_mode}/${old_backend} rules behind (log: ${LOGS}/${name}.log): run '$0 down' and up again with the new settings"
    fi
  fi
  write_kube_proxy_config "$node" "$mode"
  start "$name" "$node" "${STATE}/bin-${backend}" "${bin}/kube-proxy" --config="${dir}/config/kube-proxy.yaml" --v=1
}

# ---------------------------------------------------------------------------------------------
# LoadBalancer IPs: the cloud controller's part, from the LB range, routed by the gateway

assign_lb_ips() {
  local line key ip used=() want=() i n=0
  # namespace/name ip (ip empty when the Service has none yet)
  while read -r key ip; do
    [[ -n "$key" ]] || continue
    if [[ -n "$ip" ]]; then used+=("$ip"); else want+=("$key"); fi
  done < <(kc get services --all-namespaces -o \
    'jsonpath={range .items[?(@.spec.type=="LoadBalancer")]}{.metadata.namespace}/{.metadata.name} {.status.loadBalancer.ingress[0].ip}{"\n"}{end}')
  for key in "${want[@]}"; do
    ip=""
    for ((i = LB_FIRST; i <= LB_LAST; i++)); do
      if [[ " ${used[*]} " != *" ${LB_NET}.${i} "* ]]; then
        ip="${LB_NET}.${i}"
        break
      fi
    done
    [[ -n "$ip" ]] || die "no free LoadBalancer IP left in ${LB_NET}.${LB_FIRST}-${LB_LAST} for ${key}"
    kc patch service -n "${key%%/*}" "${key#*/}" --subresource=status --type=merge \
      -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"${ip}\",\"ipMode\":\"VIP\"}]}}}" >/dev/null ||
      die "could not write the LoadBalancer IP of ${key}"
    log "LoadBalancer ${key}: ${ip}"
    used+=("$ip")
    n=$((n + 1))
  done
  # The gateway sends each LB IP to the control-plane node (which kube-proxy programs, as every
  # node); routes of IPs no Service holds any more go.
  for ip in "${used[@]}"; do
    ip -n "$GW_NS" route replace "${ip}/32" via "$CP_IP" dev eth0
  done
  local last
  while read -r line; do
    ip="${line%% *}" # host routes print without /32
    last="${ip#"${LB_NET}".}"
    [[ "$last" =~ ^[0-9]+$ ]] && ((last >= LB_FIRST && last <= LB_LAST)) || continue
    if [[ " ${used[*]} " != *" ${ip} "* ]]; then ip -n "$GW_NS" route del "${ip}/32" || true; fi
  done < <(ip -n "$GW_NS" route show)
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_build() {
  require_root
  mkdir -p "$STATE" "$LOGS"
  build_k8s
  build_kube_router
}

cmd_up() {
  local want_nodes="" mode="" backend="" start_time=$SECONDS bin kr have old_mode="" old_backend="" node
  while (($#)); do
    case "$1" in
      --nodes) want_nodes="${2:-}"; shift 2 || die "--nodes needs a value: 1 to ${#NODE_NAMES[@]}" ;;
      --nodes=*) want_nodes="${1#*=}"; shift ;;
      --proxy-mode) mode="${2:-}"; shift 2 || die "--proxy-mode needs a value: iptables or nftables" ;;
      --proxy-mode=*) mode="${1#*=}"; shift ;;
      --proxy-backend) backend="${2:-}"; shift 2 || die "--proxy-backend needs a value: nft or legacy" ;;
      --proxy-backend=*) backend="${1#*=}"; shift ;;
      *) die "unknown flag $1 for up: want --nodes N, --proxy-mode iptables|nftables, --proxy-backend nft|legacy" ;;
    esac
  done
  have="$(node_count)"
  if [[ -z "$want_nodes" ]]; then
    want_nodes="$DEFAULT_NODES"
    ((have > 0)) && want_nodes="$have"
  fi
  [[ "$want_nodes" =~ ^[1-9]$ ]] && ((want_nodes <= ${#NODE_NAMES[@]})) ||
    die "--nodes ${want_nodes}: want 1 to ${#NODE_NAMES[@]}"
  if ((have > want_nodes)); then
    die "the cluster runs ${have} nodes; it cannot shrink to ${want_nodes}: run '$0 down' first"
  fi
  [[ -f "${STATE}/proxy-mode" ]] && old_mode="$(cat "${STATE}/proxy-mode")"
  [[ -f "${STATE}/proxy-backend" ]] && old_backend="$(cat "${STATE}/proxy-backend")"
  # Unset flags keep what runs (a plain `up` changes nothing); --proxy-backend alone means
  # iptables mode.
  if [[ -z "$mode" ]]; then
    mode="${old_mode:-iptables}"
    [[ -n "$backend" ]] && mode=iptables
  fi
  if [[ -z "$backend" ]]; then
    backend=nft
    [[ "$mode" == iptables && "$old_mode" == iptables ]] && backend="$old_backend"
  fi
  [[ "$mode" == iptables || "$mode" == nftables ]] || die "unknown proxy mode ${mode}: want iptables or nftables"
  [[ "$backend" == nft || "$backend" == legacy ]] || die "unknown proxy backend ${backend}: want nft or legacy"
  # nftables mode has no iptables backend (kube-proxy's --cleanup runs with nft's).
  if [[ "$mode" == nftables && "$backend" == legacy ]]; then
    die "--proxy-backend legacy is for --proxy-mode iptables: nftables mode uses no iptables binaries"
  fi
  require_root
  "${REPO}/hack/install-deps.sh"
  mkdir -p "$STATE" "$LOGS" "$PIDS" "${STATE}/nodes"
  bin="$(build_k8s)"
  echo "$bin" >"${STATE}/k8s-bin"
  kr="$(build_kube_router)"
  ensure_plugin

  local all=()
  read -r -a all <<<"$(nodes "$want_nodes")"
  mkdir -p "$RUN_DIR"
  echo "$STATE" >"${RUN_DIR}/owner"
  note_host_paths
  save_host_sysctls
  # Legacy TRACE lines from a non-root network namespace reach the kernel log only with this.
  sysctl -qw net.netfilter.nf_log_all_netns=1
  setup_lan
  for node in "${all[@]}"; do setup_node_network "$node"; done
  gen_pki
  write_control_plane_configs
  for node in "${all[@]}"; do write_node_configs "$node"; done
  start_etcd
  start_apiserver "$bin"
  start_controllers "$bin"
  apply_kube_router_rbac
  for node in "${all[@]}"; do start_containerd "$node"; done
  for node in "${all[@]}"; do wait_containerd "$node"; done
  echo "$want_nodes" >"${STATE}/node-count"
  import_images "${all[@]}"
  # One at a time: the controller-manager hands out pod CIDRs in registration order, so the
  # first node gets 10.244.0.0/24, the second 10.244.1.0/24...
  local cidr added=0
  for node in "${all[@]}"; do
    running "${node}-kubelet" || added=1
    start_kubelet "$bin" "$node"
    cidr="$(node_pod_cidr "$node")"
    echo "$cidr" >"$(node_dir "$node")/pod-cidr"
    write_cni_config "$node" "$cidr"
    ip -n "$GW_NS" route replace "$cidr" via "$(node_ip "$node")" dev eth0
  done
  # kube-router v2.1.0 fills its ipsets of pod CIDRs and node addresses (pod egress masquerade:
  # traffic to a pod CIDR missing there is masqueraded) from the nodes it sees at start; its
  # periodic resync did not add a node that registered later. So it starts once every node has
  # its pod CIDR, and a new node restarts the others.
  # kube-router uses kube-proxy's iptables backend (nftables mode: nft). A new backend restarts
  # it, its rules leaving the old one first.
  local kr_backend=nft old_kr_backend
  [[ "$mode" == iptables ]] && kr_backend="$backend"
  old_kr_backend="$(cat "${STATE}/kube-router-backend" 2>/dev/null || echo nft)"
  if [[ "$old_kr_backend" != "$kr_backend" ]]; then
    for node in "${all[@]}"; do
      stop "${node}-kube-router"
      remove_kube_router_rules "$node" "$old_kr_backend"
    done
  fi
  if ((added)); then
    for node in "${all[@]}"; do stop "${node}-kube-router"; done
  fi
  echo "$kr_backend" >"${STATE}/kube-router-backend"
  for node in "${all[@]}"; do start_kube_router "$kr" "$node" "$kr_backend"; done
  for node in "${all[@]}"; do finish_node "$node"; done
  for node in "${all[@]}"; do
    wait_until "node ${node}: no BGP routes to the other nodes' pod CIDRs" 120 "${node}-kube-router" \
      bgp_routes_complete "$node" "${all[@]}"
  done
  for node in "${all[@]}"; do
    start_kube_proxy "$bin" "$node" "$mode" "$backend" "$old_mode" "$old_backend"
  done
  echo "$mode" >"${STATE}/proxy-mode"
  echo "$backend" >"${STATE}/proxy-backend"
  for node in "${all[@]}"; do
    wait_until "node ${node}: kube-proxy did not program the ${mode} mode (${backend}) rules for default/kubernetes" \
      120 "${node}-kube-proxy" proxy_synced "$node" "$mode" "$backend"
  done
  assign_lb_ips
  local what="kube-proxy ${mode} mode"
  [[ "$mode" == iptables ]] && what+=", ${backend} backend"
  log "cluster up in $((SECONDS - start_time))s: ${want_nodes} node(s) Ready (${all[*]}), ${what}"
  log "try: $0 kubectl get nodes -o wide   |   $0 exec --node ${all[-1]} -- bash"
}

cmd_images() {
  require_root
  local node up=()
  for node in $(nodes); do
    if running "${node}-containerd"; then up+=("$node"); fi
  done
  ((${#up[@]} > 0)) || die "containerd is not running on any node: run '$0 up' first"
  import_images "${up[@]}"
}

# our_shims NODE: pids of containerd-shim processes started by that node's containerd (they
# carry its address).
our_shims() {
  local p sock
  sock="$(node_sock "$1")"
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"${p}/cmdline" | grep -q -- "containerd-shim.* -address ${sock} "; then
      echo "${p#/proc/}"
    fi
  done
}

# descendants PID...: every process below the given ones, from the parent pids in
# /proc/*/stat (this kernel has no /proc/PID/task/TID/children).
descendants() {
  local f line rest
  for f in /proc/[0-9]*/stat; do
    line="$(cat "$f" 2>/dev/null)" || continue
    rest="${line##*) }" # the command name may contain spaces and parentheses
    rest="${rest#* }"   # drop the state: the parent pid comes next
    echo "${f//[!0-9]/} ${rest%% *}"
  done | awk -v roots=" $* " '
    { parent[$1] = $2 }
    END {
      n = split(roots, r, " "); for (i = 1; i <= n; i++) mark[r[i]] = 1
      do { changed = 0
        for (p in parent) if (!(p in mark) && (parent[p] in mark)) { mark[p] = 1; changed = 1; print p }
      } while (changed)
    }'
}

# kill_containers ID...: SIGKILL every process in the containers' cgroups, until none is left.
kill_containers() {
  local i id f pid left
  for ((i = 0; i < 10; i++)); do
    left=0
    for id in "$@"; do
      for f in /sys/fs/cgroup/*/k8s.io/"${id}"/cgroup.procs; do
        [[ -f "$f" ]] || continue
        while read -r pid; do
          left=1
          kill -KILL "$pid" 2>/dev/null || true
        done <"$f"
      done
    done
    ((left)) || return 0
    sleep 0.2
  done
  log "processes survive in the pod cgroups of $*"
}

# all_namespaces: every namespace the cluster may have made.
all_namespaces() { echo "${NODE_NAMES[@]}" "$GW_NS" "$LAN_NS"; }

# kill_in_namespaces: SIGKILL every process still inside one of the cluster's namespaces
# (host-network pods, commands run with `exec`), so that deleting them frees everything.
kill_in_namespaces() {
  local ns want p pid
  for ns in $(all_namespaces); do
    [[ -e "/var/run/netns/${ns}" ]] || continue
    want="net:[$(stat -L -c %i "/var/run/netns/${ns}")]"
    for p in /proc/[0-9]*; do
      pid="${p#/proc/}"
      [[ "$pid" != "$$" && "$(readlink "${p}/ns/net" 2>/dev/null)" == "$want" ]] || continue
      log "killing pid ${pid} left in namespace ${ns}: $(tr '\0' ' ' 2>/dev/null <"${p}/cmdline" | cut -c1-120)"
      kill -KILL "$pid" 2>/dev/null || true
    done
  done
}

# open_by_any FILE: whether a process has FILE open.
open_by_any() {
  local f
  for f in /proc/[0-9]*/fd/*; do
    if [[ "$(readlink "$f" 2>/dev/null)" == "$1" ]]; then return 0; fi
  done
  return 1
}

# our_mounts: mount points under the cluster's folders, deepest first.
our_mounts() {
  awk -v a="${STATE}/" -v b="${RUN_DIR}/" '
    { mp = $5; gsub(/\\040/, " ", mp) }
    index(mp "/", a) == 1 || index(mp "/", b) == 1 { print length(mp) " " mp }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2-
}

cmd_down() {
  require_root
  local pid shims=() ids=() id c d node ns comps=() tasks
  local exists=0
  for ns in $(all_namespaces); do [[ -e "/var/run/netns/${ns}" ]] && exists=1; done
  if [[ ! -d "$STATE" ]] && ((!exists)); then
    log "nothing to do: no cluster"
    return 0
  fi
  # Every node that may exist, whatever node-count says (an `up` may have failed half-way).
  for node in "${NODE_NAMES[@]}"; do comps+=("${node}-kube-proxy" "${node}-kube-router" "${node}-kubelet"); done
  stop "${comps[@]}"
  for node in "${NODE_NAMES[@]}"; do
    # Running tasks, and every sandbox and container the CRI plugin knows (also those whose
    # task is gone): their ids name the pod cgroups and the CNI cache files.
    for tasks in "$(node_dir "$node")/containerd/state/io.containerd.runtime.v2.task/k8s.io" \
      "$(node_dir "$node")/containerd/root/io.containerd.grpc.v1.cri/sandboxes" \
      "$(node_dir "$node")/containerd/root/io.containerd.grpc.v1.cri/containers"; do
      if [[ -d "$tasks" ]]; then
        mapfile -t -O "${#ids[@]}" ids < <(ls "$tasks")
      fi
    done
    # containerd first: once it is gone, killing the shims triggers no cleanup work. Its shims
    # (found by the containerd address in their command line) and every process under them go next.
    mapfile -t -O "${#shims[@]}" shims < <(our_shims "$node")
  done
  comps=()
  for node in "${NODE_NAMES[@]}"; do comps+=("${node}-containerd"); done
  stop "${comps[@]}"
  if ((${#ids[@]} > 0)); then kill_containers "${ids[@]}"; fi
  if ((${#shims[@]} > 0)); then
    for c in $(descendants "${shims[@]}") "${shims[@]}"; do kill -KILL "$c" 2>/dev/null || true; done
  fi
  for node in "${NODE_NAMES[@]}"; do
    for pid in $(our_shims "$node"); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  stop kube-scheduler kube-controller-manager kube-apiserver
  stop etcd
  kill_in_namespaces
  sleep 0.5 # let the kernel release what the killed processes held before unmounting

  # Mounts: pod network namespaces, rootfs overlays, shm, kubelet volumes.
  local m
  while read -r m; do
    [[ -n "$m" ]] || continue
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount ${m}"
  done < <(our_mounts)

  # Pod cgroups: containerd made them at /k8s.io/<container id> in each v1 hierarchy. rmdir
  # only removes empty cgroups, so a cgroup still in use by someone else survives.
  for d in /sys/fs/cgroup/*/k8s.io; do
    [[ -d "$d" ]] || continue
    if [[ -f "${STATE}/created-cgroup-k8s.io" ]]; then
      find "$d" -mindepth 1 -depth -type d -exec rmdir {} \; 2>/dev/null || true
      rmdir "$d" 2>/dev/null || log "could not remove cgroup ${d}"
    else
      for id in "${ids[@]}"; do
        if [[ -n "$id" && -d "${d}/${id}" ]]; then rmdir "${d}/${id}" 2>/dev/null || true; fi
      done
    fi
  done

  # Routes, rules, ipsets, bridges and BGP sessions of the nodes live in their namespaces.
  for ns in $(all_namespaces); do
    if [[ -e "/var/run/netns/${ns}" ]]; then ip netns del "$ns" || log "could not delete netns ${ns}"; fi
  done

  restore_host_sysctls

  # Files kubelet and the CNI library write to fixed host paths.
  if [[ -d /var/log/containers ]]; then
    for c in /var/log/containers/*; do
      if [[ -L "$c" && "$(readlink "$c")" == "${STATE}/"* ]]; then rm -f "$c"; fi
    done
    if [[ -f "${STATE}/created-var-log-containers" ]]; then rmdir /var/log/containers 2>/dev/null || true; fi
  fi
  if [[ -d /var/lib/cni/results ]]; then
    # The CNI library caches each attachment as NETWORK-CONTAINERID-IFNAME.
    rm -f /var/lib/cni/results/svctrace-*
    for id in "${ids[@]}"; do
      if [[ -n "$id" ]]; then rm -f "/var/lib/cni/results/cni-loopback-${id}-lo"; fi
    done
    if [[ -f "${STATE}/created-var-lib-cni" ]]; then rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true; fi
  fi
  # /run/containerd/s holds the shims' sockets. It is ours to remove only if it did not exist
  # before `up` and no other containerd runs now (ours are all stopped at this point).
  if [[ -f "${STATE}/created-run-containerd" ]] && ! pgrep -x containerd >/dev/null; then
    rm -rf /run/containerd
  fi
  rm -rf "$RUN_DIR"
  if [[ -f "${STATE}/created-var-lib-kubelet" ]]; then rm -rf /var/lib/kubelet; fi
  if [[ -f "${STATE}/created-run-mount" ]]; then rm -rf /run/mount; fi
  # The lock file of iptables: only when no process (of another program) holds it open.
  if [[ -f "${STATE}/created-run-xtables.lock" && -e /run/xtables.lock ]] && ! open_by_any /run/xtables.lock; then
    rm -f /run/xtables.lock
  fi

  # Everything but the logs, which CI prints after a failure.
  find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null ||
    die "could not remove ${STATE}: $(our_mounts | head -3 | tr '\n' ' ')still mounted?"
  log "cluster down (logs kept in ${LOGS})"
}

status_line() {
  local name="$1" pid
  if pid="$(pid_of "$name")"; then
    printf '  %-26s running (pid %s)\n' "$name" "$pid"
  else
    printf '  %-26s stopped\n' "$name"
    return 1
  fi
}

cmd_status() {
  local c rc=0 node n
  n="$(node_count)"
  echo "control plane (on ${CP_NODE}):"
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler; do status_line "$c" || rc=1; done
  for node in $(nodes "$((n > 0 ? n : 1))"); do
    echo "node ${node} ($(node_ip "$node")):"
    for c in containerd kubelet kube-router kube-proxy; do status_line "${node}-${c}" || rc=1; done
    printf '  %-26s %s\n' shims "$(our_shims "$node" | wc -l)"
    if [[ -e "/var/run/netns/${node}" ]]; then
      printf '  %-26s %s\n' "pod routes" "$(in_ns "$node" ip -o route show proto 17 2>/dev/null | awk '{print $1" via "$3}' | paste -sd, -)"
    else
      printf '  %-26s absent\n' "netns ${node}"
      rc=1
    fi
    if running kube-apiserver; then
      printf '  %-26s %s\n' Ready "$(node_field "$node" '{.status.conditions[?(@.type=="Ready")].status}' || true)"
    fi
  done
  for c in "$GW_NS" "$LAN_NS"; do
    if [[ -e "/var/run/netns/${c}" ]]; then printf '%-28s present\n' "netns ${c}"; else printf '%-28s absent\n' "netns ${c}"; rc=1; fi
  done
  if [[ -f "${STATE}/proxy-mode" ]]; then
    printf '%-28s %s (%s)\n' "kube-proxy mode (backend)" "$(cat "${STATE}/proxy-mode")" "$(cat "${STATE}/proxy-backend")"
  fi
  printf '%-28s %s\n' kubeconfig "$KUBECONFIG_PATH" logs "$LOGS"
  if running kube-apiserver; then
    kc get nodes -o wide 2>&1 || true
  fi
  return "$rc"
}

cmd_demo_apps() {
  require_root
  running kube-apiserver || die "the cluster is not running: run '$0 up' first"
  local n
  n="$(node_count)"
  # Pods can only be created once the controller-manager made the namespace's ServiceAccount.
  wait_until "no default ServiceAccount in namespace default" 60 kube-controller-manager \
    kc get serviceaccount default -n default
  kc apply -f "${REPO}/hack/manifests/" >&2
  local deploys=(myapp myapp-local)
  if ((n >= 2)); then
    kc apply -f "${REPO}/hack/manifests/multi-node/" >&2
    deploys+=(sourceip)
  fi
  assign_lb_ips
  local d
  for d in "${deploys[@]}"; do
    kc rollout status "deployment/${d}" --timeout=180s >&2 || {
      kc get pods -o wide >&2
      kc describe pods -l "app=${d}" >&2 | tail -n 40
      die "deployment ${d} did not become ready"
    }
  done
  kc wait --for=condition=Ready pod/client --timeout=180s >&2 || die "pod client did not become ready"
  kc get pods,services,endpointslices -o wide
}

cmd_lb() {
  require_root
  running kube-apiserver || die "the cluster is not running: run '$0 up' first"
  assign_lb_ips
}

# cmd_exec DEFAULT_NS ARGS: [--node NAME] [--] CMD...
cmd_exec() {
  local ns="$1"
  shift
  if [[ "${1:-}" == --node ]]; then
    [[ -n "${2:-}" ]] || die "--node needs a node name: $(nodes | tr ' ' ',')"
    node_ip "$2" >/dev/null
    ns="$2"
    shift 2
  elif [[ "${1:-}" == --node=* ]]; then
    ns="${1#*=}"
    node_ip "$ns" >/dev/null
    shift
  fi
  [[ "${1:-}" == -- ]] && shift
  (($#)) || die "usage: $0 exec [--node NAME] -- CMD...  |  $0 exec-external -- CMD..."
  require_root
  [[ -e "/var/run/netns/${ns}" ]] || die "network namespace ${ns} does not exist: run '$0 up' (with --nodes for more nodes) first"
  exec nsenter --net="/var/run/netns/${ns}" -- env KUBECONFIG="$KUBECONFIG_PATH" KUBECACHEDIR="${STATE}/kube-cache" \
    PATH="$(k8s_bin):${PATH}" "$@"
}

usage() {
  sed -n '2,21p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# check_owner CMD: the namespaces and /run/svctrace-cluster are global, the state folder is per
# checkout. A cluster started from another checkout (its state folder is in RUN_DIR/owner) is
# not this one's to change or take down.
check_owner() {
  local owner="" ns present=""
  [[ -f "${RUN_DIR}/owner" ]] && owner="$(cat "${RUN_DIR}/owner")"
  if [[ -n "$owner" && "$owner" != "$STATE" ]]; then
    die "the local cluster running now was started from another checkout (state ${owner}); '$1' here would break it: run '${owner%/_output/local-cluster}/hack/local-cluster.sh down' first"
  fi
  for ns in $(all_namespaces); do
    if [[ -e "/var/run/netns/${ns}" ]]; then present+=" ${ns}"; fi
  done
  if [[ "$1" == up && -z "$owner" && -n "$present" ]]; then
    die "network namespaces${present} exist but no cluster of this checkout owns them (left by an older version of this script or a failed run?): run '$0 down' first"
  fi
}

# lock: one mutating command at a time on this machine (several people and CI jobs may share
# it; the namespaces and ports are global). Waits for the other command instead of racing it.
lock() {
  mkdir -p "${REPO}/_output"
  exec 9>"${REPO}/_output/local-cluster.lock"
  if ! flock -n 9; then
    log "waiting for another hack/local-cluster.sh command to finish (lock ${REPO}/_output/local-cluster.lock)"
    flock -w 1800 9 || die "another hack/local-cluster.sh command held the lock for 30 minutes"
  fi
}

main() {
  (($#)) || usage
  local cmd="$1"
  shift
  case "$cmd" in
    up | down | demo-apps | lb | build | images) lock ;;
  esac
  case "$cmd" in
    up | down | demo-apps | lb | images) check_owner "$cmd" ;;
  esac
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    demo-apps) cmd_demo_apps ;;
    lb) cmd_lb ;;
    exec) cmd_exec "$CP_NODE" "$@" ;;
    exec-external) cmd_exec "$GW_NS" "$@" ;;
    kubectl) cmd_exec "$CP_NODE" -- kubectl "$@" ;;
    build) cmd_build ;;
    images) cmd_images ;;
    -h | --help | help) usage ;;
    *) die "unknown command ${cmd}: want up, down, status, demo-apps, lb, exec, exec-external, kubectl, build or images" ;;
  esac
}

# On one line: bash reads a script while running it, and this file may be edited meanwhile.
main "$@"; exit
