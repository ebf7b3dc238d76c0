#!/usr/bin/env bash
# The README's main job (`make demo`): live traces of Services on the local cluster.
#
# Without $KUBECONFIG (or with it pointing at the local cluster): build the plugin, bring up the
# local cluster (hack/local-cluster.sh up --nodes DEMO_NODES, default 2; `up` also imports the
# freshly built agent image into every node), apply the demo apps, and run, inside the first
# node's network namespace:
#   1. a single-node path: kubectl-svctrace svc/myapp --probe --node svctrace-node ...
#      (the first node sends a test connection to the ClusterIP of the seed scenario)
#   2. with 2+ nodes, a cross-node path: kubectl-svctrace svc/sourceip --from pod/client ...
#      (the client pod on svctrace-node connects to a ClusterIP whose one endpoint runs on
#      svctrace-node2: DNAT on the first node, then the BGP route to the second node)
# With $KUBECONFIG pointing at another cluster: run the first trace against it without --node
# (the Service default/myapp must exist there, e.g. from hack/manifests/myapp.yaml).
# The local cluster stays up afterwards: hack/local-cluster.sh down stops it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"

CLUSTER="${REPO}/hack/local-cluster.sh"
LOCAL_KUBECONFIG="${REPO}/_output/local-cluster/kubeconfig"
BIN="${REPO}/_output/bin/kubectl-svctrace"
NODES="${DEMO_NODES:-2}"
COMMON=(--count 1 --timeout 60s)
SINGLE=(svc/myapp --probe)
# The trace on the client's node; further nodes' views of the same connection go here.
CROSS=(svc/sourceip --from pod/client)

# Build first so that `up` puts this very binary into the agent image.
make --no-print-directory build

if [[ -n "${KUBECONFIG:-}" && "$(readlink -f "$KUBECONFIG")" != "$(readlink -f "$LOCAL_KUBECONFIG")" ]]; then
  echo "demo: using the cluster of KUBECONFIG=${KUBECONFIG}" >&2
  exec "$BIN" "${SINGLE[@]}" "${COMMON[@]}"
fi

"$CLUSTER" up --nodes "$NODES"
"$CLUSTER" demo-apps >/dev/null

# trace TITLE ARGS...: one trace, run inside the first node's network namespace.
trace() {
  local title="$1"
  shift
  echo >&2
  echo "demo: ${title}" >&2
  echo "demo: kubectl svctrace $*" >&2
  "$CLUSTER" exec -- "$BIN" "$@"
}

trace "single node: svctrace-node connects to the ClusterIP of svc/myapp" \
  "${SINGLE[@]}" --node svctrace-node "${COMMON[@]}"
if ((NODES >= 2)); then
  trace "cross node: pod client (svctrace-node) -> ClusterIP of svc/sourceip -> its endpoint on svctrace-node2" \
    "${CROSS[@]}" "${COMMON[@]}"
fi
echo >&2
echo "demo: the cluster is still up: '${CLUSTER} exec -- ${BIN} --help' to explore, '${CLUSTER} down' to stop it" >&2
