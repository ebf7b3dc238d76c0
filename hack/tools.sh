#!/usr/bin/env bash
# Developer tools at pinned versions, built from the Go module proxy once per tool version and Go
# toolchain into _output/tools/GOVERSION/ (later calls reuse them):
#
#   hack/tools.sh staticcheck              the linter hack/verify.sh runs
#   hack/tools.sh krew                     krew, installed as kubectl-krew so kubectl finds it on PATH
#   hack/tools.sh validate-krew-manifest   krew-index's manifest validator (same module as krew)
#
# Prints the tool's path on stdout. A new Go version builds the tools again: staticcheck must be
# built with the Go release whose code it reads.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="/usr/local/go/bin:${PATH}"
export GOTOOLCHAIN=local

STATICCHECK_VERSION=v0.8.2 # staticcheck 2026.2.2, built for Go 1.26
KREW_VERSION=v0.4.3

tool="${1:-}"
case "$tool" in
  staticcheck) pkg=honnef.co/go/tools/cmd/staticcheck version=$STATICCHECK_VERSION name=staticcheck ;;
  krew) pkg=sigs.k8s.io/krew/cmd/krew version=$KREW_VERSION name=kubectl-krew ;;
  validate-krew-manifest) pkg=sigs.k8s.io/krew/cmd/validate-krew-manifest version=$KREW_VERSION name=validate-krew-manifest ;;
  *)
    echo "usage: hack/tools.sh staticcheck|krew|validate-krew-manifest" >&2
    exit 2
    ;;
esac

dir="${REPO}/_output/tools/$(go env GOVERSION)/${tool}@${version}"
if [[ ! -x "${dir}/${name}" ]]; then
  echo "tools: building ${pkg}@${version} into ${dir}" >&2
  mkdir -p "${REPO}/_output"
  tmp="$(mktemp -d "${REPO}/_output/tools.XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  # Outside the main module: the tool's own go.mod decides its dependencies.
  if ! (cd "$tmp" && GOFLAGS=-buildvcs=false CGO_ENABLED=0 GOBIN="${tmp}/bin" go install "${pkg}@${version}"); then
    echo "tools: go install ${pkg}@${version} failed (the Go module proxy must be reachable)" >&2
    exit 1
  fi
  mkdir -p "$dir"
  mv "${tmp}/bin/$(basename "$pkg")" "${dir}/${name}.tmp"
  mv "${dir}/${name}.tmp" "${dir}/${name}"
fi
echo "${dir}/${name}"
