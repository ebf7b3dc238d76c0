#!/usr/bin/env bash
# A real single-node Kubernetes cluster for svctrace's e2e tests and demo, on one Linux machine,
# without Docker. Everything runs inside its own network namespace ("svctrace-node"); a second
# namespace ("svctrace-gw") is the outside world, joined to the node by a veth pair.
#
#   hack/local-cluster.sh up [--proxy-backend nft|legacy]   start (idempotent; switches kube-proxy's backend)
#   hack/local-cluster.sh down                              stop everything, leave the machine as it was
#   hack/local-cluster.sh status                            what runs
#   hack/local-cluster.sh demo-apps                         apply hack/manifests/ and wait for the pods
#   hack/local-cluster.sh exec -- CMD...                    CMD in the node namespace, KUBECONFIG set
#   hack/local-cluster.sh exec-external -- CMD...           CMD in the gateway namespace
#   hack/local-cluster.sh kubectl ARGS...                   shorthand for exec -- kubectl ARGS...
#   hack/local-cluster.sh build                             only build (or find cached) Kubernetes binaries
#   hack/local-cluster.sh images                            rebuild and import changed images (after make build)
#
# Fixed facts other scripts and tests rely on:
#   node name svctrace-node, node address 10.199.0.2/24 on eth0, gateway 10.199.0.1 (eth0 of
#   svctrace-gw, with routes to the Service and pod CIDRs via the node); pod CIDR 10.244.0.0/16,
#   node podCIDR 10.244.0.0/24 (bridge cni0); Service CIDR 10.96.0.0/16; API server
#   https://10.199.0.2:6443; admin kubeconfig _output/local-cluster/kubeconfig (usable from inside
#   the node namespace: use `exec`); component logs _output/local-cluster/logs/*.log (kept by `down`).
#
# Kubernetes binaries (v1.36.3) are built from the Go module proxy by the separate module in
# hack/k8s and cached under ${XDG_CACHE_HOME}/svctrace or, without XDG_CACHE_HOME, _output/cache.
#
# Host changes made while the cluster is up, all undone by `down`: the two namespaces, the
# processes (pid files in _output/local-cluster/pids; containerd's shims are found by their
# containerd address), mounts under _output/local-cluster, pod cgroups, symlinks in
# /var/log/containers, CNI result cache files, net.netfilter.nf_log_all_netns=1 (so legacy TRACE
# lines from the node namespace reach the kernel log, as they would on a real node) and the
# kernel tunables kubelet sets at start (vm.overcommit_memory, kernel.panic...), which are put
# back right after kubelet started and again by `down`. Before deleting the namespaces, `down`
# also ends whatever still runs inside them (e.g. a command started with `exec`).
#
# kubelet and containerd always use iptables-nft (Debian's default); only kube-proxy follows
# --proxy-backend, so with `legacy` the nft tables still hold kubelet's few chains, as on nodes
# where the two disagree. Commands that change the cluster (up, down, demo-apps, build, images)
# take the lock _output/local-cluster.lock: concurrent calls wait for each other.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SELF="${REPO}/hack/local-cluster.sh"

K8S_VERSION=v1.36.3
NODE_NS=svctrace-node
GW_NS=svctrace-gw
NODE_NAME=svctrace-node
NODE_IP=10.199.0.2
GW_IP=10.199.0.1
NET_PREFIX=24
CLUSTER_CIDR=10.244.0.0/16
NODE_POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
API_PORT=6443
API_SERVER="https://${NODE_IP}:${API_PORT}"

STATE="${REPO}/_output/local-cluster"
LOGS="${STATE}/logs"
PIDS="${STATE}/pids"
PKI="${STATE}/pki"
CONF="${STATE}/config"
KUBECONFIG_PATH="${STATE}/kubeconfig"
# Short, fixed path: unix socket names are limited to 108 bytes, clones can live anywhere.
RUN_DIR=/run/svctrace-cluster
CONTAINERD_SOCK="${RUN_DIR}/containerd.sock"
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
# Kubernetes binaries

# k8s_bin_dir prints the cache folder for this Kubernetes version and build recipe: a change of
# hack/k8s/go.mod, go.sum or of the Go toolchain builds into a new folder.
k8s_bin_dir() {
  local key
  key="$( {
    cat "${REPO}/hack/k8s/go.mod" "${REPO}/hack/k8s/go.sum"
    go env GOVERSION
  } | sha256sum | cut -c1-12)"
  echo "${CACHE_ROOT}/k8s/${K8S_VERSION}-${key}/bin"
}

K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

build_k8s() {
  local dir tmp c pkgs=() start ldflags
  command -v go >/dev/null || die "go not found: install Go 1.26 at /usr/local/go"
  dir="$(k8s_bin_dir)"
  if [[ -f "${dir}/.complete" ]]; then
    echo "$dir"
    return 0
  fi
  for c in "${K8S_CMDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/${c}"); done
  # Stamp the version as the release build does, so the node reports kubelet v1.36.3.
  local v=k8s.io/component-base/version cv=k8s.io/client-go/pkg/version x=""
  for p in "$v" "$cv"; do
    x+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=36"
    x+=" -X ${p}.gitTreeState=clean -X ${p}.buildDate=1970-01-01T00:00:00Z"
  done
  ldflags="-s -w${x}"
  tmp="${dir}.tmp"
  rm -rf "$tmp"
  mkdir -p "$tmp"
  log "building Kubernetes ${K8S_VERSION} (${K8S_CMDS[*]}) into ${dir}: ~5 min on 2 cores the first time"
  start=$SECONDS
  # One `go build` for all six: shared packages compile once.
  if ! (cd "${REPO}/hack/k8s" && CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "${tmp}/" "${pkgs[@]}") \
    >"${LOGS}/k8s-build.log" 2>&1; then
    tail -n 30 "${LOGS}/k8s-build.log" >&2
    die "building Kubernetes failed (full log: ${LOGS}/k8s-build.log)"
  fi
  touch "${tmp}/.complete"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built Kubernetes in $((SECONDS - start))s"
  echo "$dir"
}

# K8S_BIN is resolved once by `up` and remembered, so `exec` does not need the Go toolchain.
k8s_bin() {
  if [[ -f "${STATE}/k8s-bin" ]]; then
    cat "${STATE}/k8s-bin"
  else
    k8s_bin_dir
  fi
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
# (setsid: no terminal signals), output appended to logs/NAME.log, pid in pids/NAME.pid. It must
# not inherit the lock's descriptor (9), or the lock would live as long as the component.
# nsenter --net only calls setns and exec, so the pid is the component's own pid. nsenter and
# not `ip netns exec`: the latter remounts /sys and kubelet/runc then find no cgroup mounts.
start() {
  local name="$1" ns="$2" path_prefix="$3" bin="$4"
  shift 4
  if running "$name"; then
    return 0
  fi
  printf '%s\n' "$bin" >"${PIDS}/${name}.cmd"
  printf '\n===== %s start: %s %s\n' "$(date -Is)" "$bin" "$*" >>"${LOGS}/${name}.log"
  PATH="${path_prefix:+${path_prefix}:}${PATH}" setsid nsenter --net="/var/run/netns/${ns}" -- "$bin" "$@" \
    >>"${LOGS}/${name}.log" 2>&1 </dev/null 9>&- &
  echo $! >"${PIDS}/${name}.pid"
  log "started ${name} (pid $!)"
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
# logs/LOGNAME.log and fails with DESC.
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
  die "${desc}: timed out after ${timeout}s${logname:+ (log: ${LOGS}/${logname}.log)}"
}

in_node() { nsenter --net="/var/run/netns/${NODE_NS}" -- "$@"; }
in_gw() { nsenter --net="/var/run/netns/${GW_NS}" -- "$@"; }

# KUBECACHEDIR keeps kubectl's (and cli-runtime's) discovery cache out of $HOME.
kc() {
  in_node env KUBECONFIG="$KUBECONFIG_PATH" KUBECACHEDIR="${STATE}/kube-cache" "$(k8s_bin)/kubectl" "$@"
}

# ---------------------------------------------------------------------------------------------
# Network

setup_network() {
  local ns
  for ns in "$NODE_NS" "$GW_NS"; do
    [[ -e "/var/run/netns/${ns}" ]] || ip netns add "$ns"
    ip -n "$ns" link set lo up
  done
  if ! ip -n "$NODE_NS" link show eth0 >/dev/null 2>&1; then
    ip -n "$GW_NS" link del eth0 2>/dev/null || true
    ip -n "$NODE_NS" link add eth0 type veth peer name eth0 netns "$GW_NS"
  fi
  ip -n "$NODE_NS" addr replace "${NODE_IP}/${NET_PREFIX}" dev eth0
  ip -n "$GW_NS" addr replace "${GW_IP}/${NET_PREFIX}" dev eth0
  ip -n "$NODE_NS" link set eth0 up
  ip -n "$GW_NS" link set eth0 up
  ip -n "$NODE_NS" route replace default via "$GW_IP" dev eth0
  # The gateway routes the cluster's ranges to the node, like a router in front of a real node.
  ip -n "$GW_NS" route replace "$SERVICE_CIDR" via "$NODE_IP" dev eth0
  ip -n "$GW_NS" route replace "$CLUSTER_CIDR" via "$NODE_IP" dev eth0
  in_node sysctl -qw net.ipv4.ip_forward=1
  # Per-namespace since Linux 5.3; kube-proxy needs bridged pod traffic to cross iptables.
  if in_node test -e /proc/sys/net/bridge/bridge-nf-call-iptables; then
    in_node sysctl -qw net.bridge.bridge-nf-call-iptables=1 net.bridge.bridge-nf-call-ip6tables=1
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
    local san="IP:${NODE_IP},IP:10.96.0.1,IP:127.0.0.1,DNS:localhost,DNS:${NODE_NAME},DNS:kubernetes"
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
    # Static tokens: token,user,uid,"groups". The cluster is private to this machine's namespace.
    local t
    {
      t="$(openssl rand -hex 16)"; echo "${t},svctrace-admin,svctrace-admin,\"system:masters\""
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-controller-manager,system:kube-controller-manager,"
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-scheduler,system:kube-scheduler,"
      t="$(openssl rand -hex 16)"; echo "${t},system:node:${NODE_NAME},system:node:${NODE_NAME},\"system:nodes\""
      t="$(openssl rand -hex 16)"; echo "${t},system:kube-proxy,system:kube-proxy,"
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
  local file="$1" user="$2"
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
    token: $(token_of "$user")
contexts:
- name: svctrace-local
  context:
    cluster: svctrace-local
    user: ${user}
    namespace: default
current-context: svctrace-local
EOF
}

write_configs() {
  mkdir -p "$CONF" "${STATE}/cni/net.d" "${STATE}/cni/ipam" "${STATE}/kubelet" "${STATE}/pod-logs"
  write_kubeconfig "$KUBECONFIG_PATH" svctrace-admin
  write_kubeconfig "${CONF}/controller-manager.kubeconfig" system:kube-controller-manager
  write_kubeconfig "${CONF}/scheduler.kubeconfig" system:kube-scheduler
  write_kubeconfig "${CONF}/kubelet.kubeconfig" "system:node:${NODE_NAME}"
  write_kubeconfig "${CONF}/kube-proxy.kubeconfig" system:kube-proxy

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

  write_file "${CONF}/containerd.toml" <<EOF
version = 2
root = "${STATE}/containerd/root"
state = "${STATE}/containerd/state"

[grpc]
  address = "${CONTAINERD_SOCK}"

[plugins."io.containerd.internal.v1.opt"]
  path = "${STATE}/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "docker.io/library/svctrace-pause:1"
  # Without it runc fails writing oom_score_adj ("can't get final child's PID from pipe: EOF").
  restrict_oom_score_adj = true
  # Pod network namespaces are mounted under our state folder, not /var/run/netns.
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
        # runc's state next to ours instead of /run/containerd/runc.
        Root = "${RUN_DIR}/runc"

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${STATE}/cni/net.d"
EOF

  write_file "${STATE}/cni/net.d/10-svctrace.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "svctrace",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "isDefaultGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${STATE}/cni/ipam",
        "ranges": [[{"subnet": "${NODE_POD_CIDR}"}]]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  write_file "${CONF}/kubelet.yaml" <<EOF
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
podCIDR: ${NODE_POD_CIDR}
containerRuntimeEndpoint: unix://${CONTAINERD_SOCK}
podLogsDir: ${STATE}/pod-logs
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

write_kube_proxy_config() {
  write_file "${CONF}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${CONF}/kube-proxy.kubeconfig
hostnameOverride: ${NODE_NAME}
mode: iptables
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
# Components

start_etcd() {
  start etcd "$NODE_NS" "" /usr/bin/etcd --name svctrace --data-dir "${STATE}/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster svctrace=http://127.0.0.1:2380 --listen-metrics-urls http://127.0.0.1:2381 \
    --logger zap --log-outputs stderr
  wait_until "etcd did not become healthy" 60 etcd in_node curl -fsS http://127.0.0.1:2379/health
}

start_apiserver() {
  local bin="$1"
  start kube-apiserver "$NODE_NS" "" "${bin}/kube-apiserver" \
    --advertise-address="$NODE_IP" --bind-address=0.0.0.0 --secure-port="$API_PORT" \
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
    in_node curl -fsS --cacert "${PKI}/ca.crt" "${API_SERVER}/readyz"
}

start_controllers() {
  local bin="$1"
  # nodeipam and nodelifecycle are off: the pod CIDR is fixed and there is one node.
  start kube-controller-manager "$NODE_NS" "" "${bin}/kube-controller-manager" \
    --kubeconfig="${CONF}/controller-manager.kubeconfig" \
    --service-account-private-key-file="${PKI}/sa.key" --root-ca-file="${PKI}/ca.crt" \
    --use-service-account-credentials=true --controllers='*,-nodeipam,-nodelifecycle' \
    --leader-elect=false --bind-address=127.0.0.1 --profiling=false --v=1
  start kube-scheduler "$NODE_NS" "" "${bin}/kube-scheduler" \
    --kubeconfig="${CONF}/scheduler.kubeconfig" --leader-elect=false --bind-address=127.0.0.1 \
    --profiling=false --v=1
}

ctr_k8s() { ctr --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# note_host_paths: remembers which fixed host folders did not exist before the cluster, so
# `down` removes exactly those (and never one another program uses).
note_host_paths() {
  local path marker
  for path in /run/containerd:created-run-containerd /var/log/containers:created-var-log-containers \
    /var/lib/cni:created-var-lib-cni /sys/fs/cgroup/memory/k8s.io:created-cgroup-k8s.io; do
    marker="${STATE}/${path#*:}"
    path="${path%%:*}"
    if ! running containerd && [[ ! -e "$path" && ! -f "$marker" ]]; then
      touch "$marker"
    fi
  done
}

start_containerd() {
  mkdir -p "$RUN_DIR" "${STATE}/containerd"
  note_host_paths
  start containerd "$NODE_NS" "${STATE}/bin-nft" /usr/bin/containerd --config "${CONF}/containerd.toml"
  wait_until "containerd did not start" 60 containerd ctr_k8s version
}

# import_images: (re)builds the images whose inputs changed and imports those containerd lacks.
import_images() {
  local name ref hash imported=()
  local targets=(pause workload)
  if [[ -x "${SVCTRACE_BIN:-${REPO}/_output/bin/kubectl-svctrace}" ]]; then
    targets+=(agent)
  else
    log "warning: ${REPO}/_output/bin/kubectl-svctrace not built: no agent image. Run 'make build' then '$0 images'"
  fi
  "${REPO}/hack/build-image.sh" "${targets[@]}"
  mkdir -p "${STATE}/images"
  for name in "${targets[@]}"; do
    ref="$(cat "${REPO}/_output/image/${name}.ref")"
    hash="$(cat "${REPO}/_output/image/${name}.hash")"
    if [[ -f "${STATE}/images/${name}" && "$(cat "${STATE}/images/${name}")" == "$hash" ]] &&
      ctr_k8s images ls -q | grep -qx "$ref"; then
      continue
    fi
    ctr_k8s images import --base-name "${ref%:*}" "${REPO}/_output/image/${name}.tar" >/dev/null ||
      die "importing ${ref} into containerd failed (log: ${LOGS}/containerd.log)"
    echo "$hash" >"${STATE}/images/${name}"
    imported+=("$ref")
  done
  if ((${#imported[@]} > 0)); then
    log "imported ${imported[*]}"
  fi
}

node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}

start_kubelet() {
  local bin="$1" was_running=1
  running kubelet || was_running=0
  save_host_sysctls
  start kubelet "$NODE_NS" "${STATE}/bin-nft" "${bin}/kubelet" \
    --config="${CONF}/kubelet.yaml" --kubeconfig="${CONF}/kubelet.kubeconfig" \
    --root-dir="${STATE}/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --v=1
  wait_until "kubelet did not register the node" 120 kubelet kc get node "$NODE_NAME"
  if [[ -z "$(kc get node "$NODE_NAME" -o 'jsonpath={.spec.podCIDR}')" ]]; then
    kc patch node "$NODE_NAME" --type merge \
      -p "{\"spec\":{\"podCIDR\":\"${NODE_POD_CIDR}\",\"podCIDRs\":[\"${NODE_POD_CIDR}\"]}}" >/dev/null
  fi
  wait_until "the node did not become Ready" 120 kubelet node_ready
  # Registration adds this taint; the nodelifecycle controller that would lift it is off.
  if kc get node "$NODE_NAME" -o 'jsonpath={.spec.taints[*].key}' | grep -q node.kubernetes.io/not-ready; then
    kc taint node "$NODE_NAME" node.kubernetes.io/not-ready:NoSchedule- >/dev/null
  fi
  if ((!was_running)); then
    # kubelet set its kernel tunables at start (root namespace!): put the machine's values back.
    restore_host_sysctls "${KUBELET_SYSCTLS[@]}"
  fi
}

kube_proxy_synced() {
  local backend="$1"
  in_node "iptables-${backend}-save" -t nat 2>/dev/null |
    grep -q -- '-A KUBE-SERVICES .*default/kubernetes:https cluster IP'
}

start_kube_proxy() {
  local bin="$1" backend="$2" old=""
  write_kube_proxy_config
  [[ -f "${STATE}/proxy-backend" ]] && old="$(cat "${STATE}/proxy-backend")"
  if [[ -n "$old" && "$old" != "$backend" ]]; then
    log "switching kube-proxy from the ${old} to the ${backend} backend"
    stop kube-proxy
    # --cleanup with the old backend's iptables first on PATH removes that backend's rules.
    in_node env PATH="${STATE}/bin-${old}:${PATH}" "${bin}/kube-proxy" --config="${CONF}/kube-proxy.yaml" --cleanup \
      >>"${LOGS}/kube-proxy.log" 2>&1 || die "kube-proxy --cleanup failed (log: ${LOGS}/kube-proxy.log)"
  fi
  echo "$backend" >"${STATE}/proxy-backend"
  start kube-proxy "$NODE_NS" "${STATE}/bin-${backend}" "${bin}/kube-proxy" --config="${CONF}/kube-proxy.yaml" --v=1
  wait_until "kube-proxy did not program the ${backend} backend (no KUBE-SERVICES rule for default/kubernetes)" \
    120 kube-proxy kube_proxy_synced "$backend"
}

# ---------------------------------------------------------------------------------------------
# Commands

cmd_build() {
  require_root
  mkdir -p "$STATE" "$LOGS"
  build_k8s
}

cmd_up() {
  local backend=nft start_time=$SECONDS bin
  while (($#)); do
    case "$1" in
      --proxy-backend) backend="${2:-}"; shift 2 || die "--proxy-backend needs a value: nft or legacy" ;;
      --proxy-backend=*) backend="${1#*=}"; shift ;;
      *) die "unknown flag $1 for up: want --proxy-backend nft|legacy" ;;
    esac
  done
  [[ "$backend" == nft || "$backend" == legacy ]] || die "unknown proxy backend ${backend}: want nft or legacy"
  require_root
  "${REPO}/hack/install-deps.sh"
  mkdir -p "$STATE" "$LOGS" "$PIDS"
  bin="$(build_k8s)"
  echo "$bin" >"${STATE}/k8s-bin"

  save_host_sysctls
  # Legacy TRACE lines from a non-root network namespace reach the kernel log only with this.
  sysctl -qw net.netfilter.nf_log_all_netns=1
  setup_network
  gen_pki
  write_configs
  start_etcd
  start_apiserver "$bin"
  start_controllers "$bin"
  start_containerd
  import_images
  start_kubelet "$bin"
  start_kube_proxy "$bin" "$backend"
  log "cluster up in $((SECONDS - start_time))s: node ${NODE_NAME} (${NODE_IP}) Ready, kube-proxy ${backend} backend"
  log "try: $0 kubectl get pods -A   |   $0 exec -- bash"
}

cmd_images() {
  require_root
  running containerd || die "containerd is not running: run '$0 up' first"
  import_images
}

# our_shims: pids of containerd-shim processes started by OUR containerd (they carry its address).
our_shims() {
  local p
  for p in /proc/[0-9]*; do
    if tr '\0' ' ' 2>/dev/null <"${p}/cmdline" | grep -q -- "containerd-shim.* -address ${CONTAINERD_SOCK}"; then
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

# kill_in_namespaces: SIGKILL every process still inside the node or gateway namespace
# (host-network pods, commands run with `exec`), so that deleting them frees everything.
kill_in_namespaces() {
  local ns want p pid
  for ns in "$NODE_NS" "$GW_NS"; do
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

# our_mounts: mount points under the cluster's folders, deepest first.
our_mounts() {
  awk -v a="${STATE}/" -v b="${RUN_DIR}/" '
    { mp = $5; gsub(/\\040/, " ", mp) }
    index(mp "/", a) == 1 || index(mp "/", b) == 1 { print length(mp) " " mp }' /proc/self/mountinfo |
    sort -rn | cut -d' ' -f2-
}

cmd_down() {
  require_root
  local pid shims=() ids=() id c d
  if [[ ! -d "$STATE" ]] && [[ ! -e "/var/run/netns/${NODE_NS}" ]] && [[ ! -e "/var/run/netns/${GW_NS}" ]]; then
    log "nothing to do: no cluster"
    return 0
  fi
  stop kube-proxy kubelet
  if [[ -d "${STATE}/containerd/state/io.containerd.runtime.v2.task/k8s.io" ]]; then
    mapfile -t ids < <(ls "${STATE}/containerd/state/io.containerd.runtime.v2.task/k8s.io")
  fi
  # containerd first: once it is gone, killing the shims triggers no cleanup work. Its shims
  # (found by the containerd address in their command line) and every process under them go next.
  mapfile -t shims < <(our_shims)
  stop containerd
  if ((${#ids[@]} > 0)); then kill_containers "${ids[@]}"; fi
  if ((${#shims[@]} > 0)); then
    for c in $(descendants "${shims[@]}") "${shims[@]}"; do kill -KILL "$c" 2>/dev/null || true; done
  fi
  for pid in $(our_shims); do kill -KILL "$pid" 2>/dev/null || true; done
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

  local ns
  for ns in "$NODE_NS" "$GW_NS"; do
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

  # Everything but the logs, which CI prints after a failure.
  find "$STATE" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} + 2>/dev/null ||
    die "could not remove ${STATE}: $(our_mounts | head -3 | tr '\n' ' ')still mounted?"
  log "cluster down (logs kept in ${LOGS})"
}

cmd_status() {
  local c pid rc=0
  for c in etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy; do
    if pid="$(pid_of "$c")"; then
      printf '%-24s running (pid %s)\n' "$c" "$pid"
    else
      printf '%-24s stopped\n' "$c"
      rc=1
    fi
  done
  printf '%-24s %s\n' "shims" "$(our_shims | wc -l)"
  for c in "$NODE_NS" "$GW_NS"; do
    if [[ -e "/var/run/netns/${c}" ]]; then printf '%-24s present\n' "netns ${c}"; else printf '%-24s absent\n' "netns ${c}"; rc=1; fi
  done
  if [[ -f "${STATE}/proxy-backend" ]]; then printf '%-24s %s\n' "kube-proxy backend" "$(cat "${STATE}/proxy-backend")"; fi
  printf '%-24s %s\n' kubeconfig "$KUBECONFIG_PATH" logs "$LOGS"
  if running kube-apiserver; then
    kc get nodes -o wide 2>&1 || true
  fi
  return "$rc"
}

cmd_demo_apps() {
  require_root
  running kube-apiserver || die "the cluster is not running: run '$0 up' first"
  # Pods can only be created once the controller-manager made the namespace's ServiceAccount.
  wait_until "no default ServiceAccount in namespace default" 60 kube-controller-manager \
    kc get serviceaccount default -n default
  kc apply -f "${REPO}/hack/manifests/" >&2
  local d
  for d in myapp myapp-local; do
    kc rollout status "deployment/${d}" --timeout=180s >&2 || {
      kc get pods -o wide >&2
      kc describe pods -l "app=${d}" >&2 | tail -n 40
      die "deployment ${d} did not become ready"
    }
  done
  kc wait --for=condition=Ready pod/client --timeout=180s >&2 || die "pod client did not become ready"
  kc get pods,services,endpointslices -o wide
}

cmd_exec() {
  local ns="$1"
  shift
  [[ "${1:-}" == -- ]] && shift
  (($#)) || die "usage: $0 exec|exec-external -- CMD..."
  require_root
  [[ -e "/var/run/netns/${ns}" ]] || die "network namespace ${ns} does not exist: run '$0 up' first"
  exec nsenter --net="/var/run/netns/${ns}" -- env KUBECONFIG="$KUBECONFIG_PATH" KUBECACHEDIR="${STATE}/kube-cache" \
    PATH="$(k8s_bin):${PATH}" "$@"
}

usage() {
  sed -n '2,15p' "$SELF" | sed 's/^# \{0,1\}//' >&2
  exit 2
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
    up | down | demo-apps | build | images) lock ;;
  esac
  case "$cmd" in
    up) cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    demo-apps) cmd_demo_apps ;;
    exec) cmd_exec "$NODE_NS" "$@" ;;
    exec-external) cmd_exec "$GW_NS" "$@" ;;
    kubectl) cmd_exec "$NODE_NS" -- kubectl "$@" ;;
    build) cmd_build ;;
    images) cmd_images ;;
    -h | --help | help) usage ;;
    *) die "unknown command ${cmd}: want up, down, status, demo-apps, exec, exec-external, kubectl, build or images" ;;
  esac
}

# On one line: bash reads a script while running it, and this file may be edited meanwhile.
main "$@"; exit
