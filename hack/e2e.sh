#!/usr/bin/env bash
# End-to-end tests: the built kubectl-svctrace against a real cluster (`make e2e`).
#
# With $KUBECONFIG set: one run of test/e2e against that cluster (tests needing a shell on
# the node or an outside client skip themselves); if it is the local cluster's kubeconfig, the
# running local cluster is tested as it is, with SVCTRACE_EXEC*, and left up.
# Without: for each kube-proxy configuration MODE/BACKEND in E2E_CONFIGS (default
# "iptables/nft iptables/legacy nftables/nft") bring the local cluster up with E2E_NODES nodes
# (default 2: hack/local-cluster.sh up --nodes 2 --proxy-mode MODE --proxy-backend BACKEND; the
# cluster is switched in place between configurations), apply the demo apps, run test/e2e with
#   SVCTRACE_BIN=<built binary> KUBECONFIG=_output/local-cluster/kubeconfig
#   SVCTRACE_PROXY_MODE=MODE SVCTRACE_BACKEND=BACKEND
#   SVCTRACE_EXEC="<repo>/hack/local-cluster.sh exec --"             (the first node)
#   SVCTRACE_EXEC_NODE="<repo>/hack/local-cluster.sh exec --node {node} --"
#   SVCTRACE_EXEC_EXTERNAL="<repo>/hack/local-cluster.sh exec-external --"
# and finally take the cluster down, also after a failure (SVCTRACE_KEEP_CLUSTER=1 keeps it).
# Extra `go test` flags: E2E_FLAGS (e.g. E2E_FLAGS='-run TestTrafficFlows').
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

CLUSTER="${REPO}/hack/local-cluster.sh"
LOGS="${REPO}/_output/local-cluster/logs"
BIN="${REPO}/_output/bin/kubectl-svctrace"
CONFIGS="${E2E_CONFIGS:-iptables/nft iptables/legacy nftables/nft}"
NODES="${E2E_NODES:-2}"
export SVCTRACE_EXEC="${CLUSTER} exec --"
export SVCTRACE_EXEC_NODE="${CLUSTER} exec --node {node} --"
export SVCTRACE_EXEC_EXTERNAL="${CLUSTER} exec-external --"

TIMINGS=()
FAILED=()
CLUSTER_STARTED=0

# phase NAME CMD...: runs CMD, records how long it took, and remembers a failure by name.
phase() {
  local name="$1" start=$SECONDS rc=0
  shift
  echo "=== e2e: ${name}" >&2
  "$@" || rc=$?
  TIMINGS+=("$(printf '%-40s %4ds %s' "$name" $((SECONDS - start)) "$([[ $rc == 0 ]] && echo ok || echo "FAILED (exit ${rc})")")")
  if ((rc != 0)); then FAILED+=("$name"); fi
  return "$rc"
}

summary() {
  local t
  echo "=== e2e: phases" >&2
  for t in "${TIMINGS[@]}"; do echo "  $t" >&2; done
}

print_logs() {
  local f
  [[ -d "$LOGS" ]] || return 0
  for f in "$LOGS"/*.log; do
    [[ -f "$f" ]] || continue
    echo "----- last 40 lines of ${f}" >&2
    tail -n 40 "$f" >&2
  done
  echo "(full component logs: ${LOGS}/*.log)" >&2
  touch "${LOGS}/.tails-printed" # .ci/run then does not print them again
}

finish() {
  local rc=$?
  if ((rc != 0 || ${#FAILED[@]} > 0)) && ((CLUSTER_STARTED)); then
    print_logs
  fi
  if ((CLUSTER_STARTED)); then
    if [[ "${SVCTRACE_KEEP_CLUSTER:-0}" == 1 ]]; then
      echo "=== e2e: SVCTRACE_KEEP_CLUSTER=1: the cluster stays up (hack/local-cluster.sh down to stop it)" >&2
    else
      phase "cluster down" "$CLUSTER" down || rc=1
    fi
  fi
  summary
  if ((${#FAILED[@]} > 0)); then
    echo "=== e2e: FAILED: ${FAILED[*]}" >&2
    rc=1
  fi
  exit "$rc"
}
trap finish EXIT

run_tests() {
  local flags=(-tags e2e -count=1 -timeout 40m)
  if [[ "${CI:-}" == true ]]; then flags+=(-v); fi
  # shellcheck disable=SC2086 # E2E_FLAGS is a list of flags
  SVCTRACE_BIN="$BIN" go test "${flags[@]}" ${E2E_FLAGS:-} ./test/e2e/...
}

phase "build" make --no-print-directory build

LOCAL_KUBECONFIG="${REPO}/_output/local-cluster/kubeconfig"
if [[ -n "${KUBECONFIG:-}" ]]; then
  if [[ "$(readlink -f "$KUBECONFIG")" == "$(readlink -f "$LOCAL_KUBECONFIG")" ]]; then
    # The local cluster, already up: test it as it is (its current backend), leave it running,
    # but with the agent image of the binary just built.
    phase "agent image" "$CLUSTER" images
    SVCTRACE_BACKEND="$(cat "${REPO}/_output/local-cluster/proxy-backend" 2>/dev/null || true)" \
      SVCTRACE_PROXY_MODE="$(cat "${REPO}/_output/local-cluster/proxy-mode" 2>/dev/null || true)" \
      phase "e2e against the running local cluster" run_tests || true
  else
    unset SVCTRACE_EXEC SVCTRACE_EXEC_NODE SVCTRACE_EXEC_EXTERNAL
    phase "e2e against \$KUBECONFIG" run_tests || true
  fi
  exit 0 # finish reports failures
fi

[[ "$(id -u)" == 0 ]] || { echo "e2e: the local cluster needs root: run as root or set KUBECONFIG" >&2; exit 1; }
for config in $CONFIGS; do
  mode="${config%/*}"
  backend="${config#*/}"
  CLUSTER_STARTED=1
  # After a failed `up` or demo-apps there is nothing to test: the next configuration starts
  # from a clean machine.
  if ! phase "cluster up (${config}, ${NODES} nodes)" "$CLUSTER" up --nodes "$NODES" --proxy-mode "$mode" --proxy-backend "$backend" ||
    ! phase "demo apps (${config})" "$CLUSTER" demo-apps >/dev/null; then
    print_logs
    "$CLUSTER" down || true
    continue
  fi
  KUBECONFIG="$LOCAL_KUBECONFIG" SVCTRACE_PROXY_MODE="$mode" SVCTRACE_BACKEND="$backend" \
    phase "e2e tests (${config})" run_tests || true
done
