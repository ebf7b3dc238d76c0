#!/usr/bin/env bash
# The README's main job (`make demo`): one live trace of svc/myapp.
#
# Without $KUBECONFIG (or with it pointing at the local cluster): build the plugin, bring up the
# local cluster (hack/local-cluster.sh up, which also imports the freshly built agent image),
# apply the demo apps, and run, inside the cluster's network namespace,
#   kubectl-svctrace svc/myapp --probe --count 1 --timeout 60s
# With $KUBECONFIG pointing at another cluster: run the same command against it (the
# Service default/myapp must exist there, e.g. from hack/manifests/myapp.yaml).
# The local cluster stays up afterwards: hack/local-cluster.sh down stops it.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"

CLUSTER="${REPO}/hack/local-cluster.sh"
LOCAL_KUBECONFIG="${REPO}/_output/local-cluster/kubeconfig"
BIN="${REPO}/_output/bin/kubectl-svctrace"
ARGS=(svc/myapp --probe --count 1 --timeout 60s)

# Build first so that `up` puts this very binary into the agent image.
make --no-print-directory build

if [[ -n "${KUBECONFIG:-}" && "$(readlink -f "$KUBECONFIG")" != "$(readlink -f "$LOCAL_KUBECONFIG")" ]]; then
  echo "demo: using the cluster of KUBECONFIG=${KUBECONFIG}" >&2
  exec "$BIN" "${ARGS[@]}"
fi

"$CLUSTER" up
"$CLUSTER" demo-apps >/dev/null
echo "demo: kubectl svctrace ${ARGS[*]}" >&2
"$CLUSTER" exec -- "$BIN" "${ARGS[@]}"
echo "demo: the cluster is still up: '${CLUSTER} exec -- ${BIN} --help' to explore, '${CLUSTER} down' to stop it" >&2
