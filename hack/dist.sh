#!/usr/bin/env bash
# Release archives for every platform krew installs svctrace on.
#
#   hack/dist.sh VERSION          (make dist VERSION=v0.1.0 [IMAGE=REF])
#
# For each of linux, darwin, windows x amd64, arm64 it builds kubectl-svctrace
# through the Makefile's build target (so the version and agent image are
# stamped by the Makefile's LDFLAGS) plus the kubectl_complete-svctrace helper,
# and packs them with LICENSE into
# _output/dist/kubectl-svctrace_VERSION_OS_ARCH.tar.gz (reproducible: sorted,
# fixed owner and mtime, gzip -n). It writes _output/dist/checksums.txt and
# renders .krew.yaml into _output/dist/svctrace.yaml with the real sha256s
# (hack/krew.sh render), then checks that manifest with krew: krew's
# validate-krew-manifest, and a krew install of every archive
# (hack/krew.sh install-all).
# UPDATE_MANIFEST=1 also copies it to plugins/svctrace.yaml.
# DIST_DIR puts everything in another directory instead of _output/dist.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
version=${1:-${VERSION:-}}
if [[ -z $version ]]; then
  echo "usage: hack/dist.sh VERSION (e.g. make dist VERSION=v0.1.0)" >&2
  exit 2
fi
if [[ ! $version =~ ^v[0-9]+\.[0-9]+\.[0-9]+(-[0-9A-Za-z.-]+)?$ ]]; then
  echo "hack/dist.sh: version $version is not vMAJOR.MINOR.PATCH[-PRERELEASE]; krew needs a semantic version" >&2
  exit 2
fi
export PATH=/usr/local/go/bin:$PATH
make=${MAKE:-make}

dist=${DIST_DIR:-$root/_output/dist}
build=$dist/build
rm -rf "$dist"
mkdir -p "$build"

# A fixed timestamp (the last commit's, or the epoch) makes the archives
# byte-for-byte reproducible from the same sources and Go version.
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$root" log -1 --format=%ct 2>/dev/null || echo 0)}

platforms=(linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64)
for platform in "${platforms[@]}"; do
  os=${platform%/*}
  arch=${platform#*/}
  ext=
  [[ $os == windows ]] && ext=.exe
  dir=$build/${os}_${arch}
  mkdir -p "$dir"
  echo "==> $os/$arch"
  # IMAGE given to `make dist` reaches this sub-make through MAKEFLAGS.
  GOOS=$os GOARCH=$arch "$make" --no-print-directory -s -C "$root" build VERSION="$version" BIN="$dir/kubectl-svctrace$ext"
  GOOS=$os GOARCH=$arch CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' \
    -o "$dir/kubectl_complete-svctrace$ext" ./cmd/kubectl_complete-svctrace
  cp LICENSE "$dir/LICENSE"
  archive=$dist/kubectl-svctrace_${version}_${os}_${arch}.tar.gz
  tar -C "$dir" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
    -cf - "kubectl-svctrace$ext" "kubectl_complete-svctrace$ext" LICENSE | gzip -n -9 >"$archive"
done

# The stamps must be in the binary: read them back from the one this machine runs.
host=$(go env GOOS)_$(go env GOARCH)
if [[ -x $build/$host/kubectl-svctrace ]]; then
  stamped=$("$build/$host/kubectl-svctrace" version -o json)
  if ! grep -q "\"version\": \"$version\"" <<<"$stamped"; then
    echo "hack/dist.sh: the built binary does not report version $version:" >&2
    echo "$stamped" >&2
    exit 1
  fi
  echo "==> stamped: $(tr -d '\n ' <<<"$stamped")"
fi

(cd "$dist" && sha256sum ./*.tar.gz | sed 's| \./| |' >checksums.txt)

hack/krew.sh render "$version" "$dist" >"$dist/svctrace.yaml"
hack/krew.sh install-all "$dist/svctrace.yaml" "$dist"
if [[ ${UPDATE_MANIFEST:-0} == 1 ]]; then
  cp "$dist/svctrace.yaml" plugins/svctrace.yaml
  echo "==> updated plugins/svctrace.yaml"
fi

echo "==> $dist"
ls -l "$dist"
cat "$dist/checksums.txt"
