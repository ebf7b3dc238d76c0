#!/usr/bin/env bash
# Static checks (`make verify`): gofmt, go vet (also the e2e-tagged tests), bash syntax of
# the scripts.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

fail=0

# _output holds caches and build products; hack/k8s is a separate module (vetted by its own build).
unformatted="$(find . -path ./_output -prune -o -path ./.git -prune -o -name '*.go' -print0 | xargs -0 -r gofmt -l)"
if [[ -n "$unformatted" ]]; then
  echo "verify: these files need gofmt -w:" >&2
  echo "$unformatted" >&2
  fail=1
fi

if ! go vet ./...; then
  echo "verify: go vet ./... failed" >&2
  fail=1
fi
if ! go vet -tags e2e ./test/e2e/...; then
  echo "verify: go vet -tags e2e ./test/e2e/... failed" >&2
  fail=1
fi

for f in hack/*.sh .ci/run; do
  if ! bash -n "$f"; then
    echo "verify: bash syntax error in ${f}" >&2
    fail=1
  fi
done

# The krew manifests: plugins/svctrace.yaml and the release template .krew.yaml.
if ! hack/check-manifest.sh; then
  echo "verify: the krew plugin manifests are invalid (hack/check-manifest.sh)" >&2
  fail=1
fi

if ((fail)); then
  exit 1
fi
echo "verify: ok" >&2
