#!/usr/bin/env bash
# Static checks (`make verify`): gofmt; go vet (also the e2e-tagged tests) for every platform
# the release ships; staticcheck; bash syntax of the scripts; the krew manifests, by krew.
# Each step prints how long it took.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

fail=0
start=$SECONDS

# _output holds caches and build products; hack/k8s is a separate module (vetted by its own build).
unformatted="$(find . -path ./_output -prune -o -path ./.git -prune -o -name '*.go' -print0 | xargs -0 -r gofmt -l)"
if [[ -n "$unformatted" ]]; then
  echo "verify: these files need gofmt -w:" >&2
  echo "$unformatted" >&2
  fail=1
fi

# Every platform hack/dist.sh releases, built as make build and make dist build (CGO_ENABLED=0,
# -trimpath), so vet compiles the dependencies for them (and reuses what they compiled).
# -tags e2e only adds the e2e tests.
read -r -a platforms <<<"$(sed -n 's/^platforms=(\(.*\))$/\1/p' hack/dist.sh)"
if ((${#platforms[@]} == 0)); then
  echo "verify: no platforms=(...) line in hack/dist.sh" >&2
  exit 1
fi
failed_platforms=()
for platform in "${platforms[@]}"; do
  step=$SECONDS
  if ! GOOS="${platform%/*}" GOARCH="${platform#*/}" CGO_ENABLED=0 go vet -trimpath -tags e2e ./...; then
    failed_platforms+=("$platform")
  fi
  echo "verify: go vet ${platform}: $((SECONDS - step))s" >&2
done
if ((${#failed_platforms[@]})); then
  echo "verify: go vet -tags e2e ./... failed for ${failed_platforms[*]} (GOOS=... GOARCH=... CGO_ENABLED=0 go vet -trimpath -tags e2e ./... repeats it)" >&2
  fail=1
fi

# staticcheck (pinned in hack/tools.sh), on the host platform; its cache is in the Go cache's
# neighbour (XDG_CACHE_HOME or ~/.cache)/staticcheck.
step=$SECONDS
staticcheck="$(hack/tools.sh staticcheck)"
if ! "$staticcheck" -tags e2e ./...; then
  echo "verify: staticcheck -tags e2e ./... found problems (each line names its check: staticcheck -explain CHECK)" >&2
  fail=1
fi
echo "verify: staticcheck: $((SECONDS - step))s" >&2

for f in hack/*.sh .ci/run; do
  if ! bash -n "$f"; then
    echo "verify: bash syntax error in ${f}" >&2
    fail=1
  fi
done

# The krew manifests: plugins/svctrace.yaml and the release template .krew.yaml, by krew's
# validate-krew-manifest.
if ! hack/krew.sh validate; then
  echo "verify: the krew plugin manifests are invalid (hack/krew.sh validate)" >&2
  fail=1
fi

if ((fail)); then
  exit 1
fi
echo "verify: ok ($((SECONDS - start))s)" >&2
