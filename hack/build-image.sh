#!/usr/bin/env bash
# Builds svctrace's container images as OCI layouts without a Docker engine (umoci):
#
#   agent     docker.io/library/svctrace-agent:dev  _output/bin/kubectl-svctrace + iptables
#             (legacy and nft), xtables-monitor, nft and their shared libraries, taken from
#             this machine's Debian packages. `iptables` means iptables-nft, as on Debian.
#   workload  docker.io/library/svctrace-workload:1  busybox-static (every applet) + the
#             demo server (hack/workload): HTTP and UDP echo servers that log client addresses.
#   pause     docker.io/library/svctrace-pause:1  the local cluster's sandbox image.
#
# Usage: hack/build-image.sh [agent|workload|pause|all]...   (default: agent, i.e. `make image`)
# Environment: SVCTRACE_IMAGE overrides the agent's name:tag (default docker.io/library/svctrace-agent:dev);
# SVCTRACE_BIN the binary put into it (default _output/bin/kubectl-svctrace, from `make build`).
#
# Output per image under _output/image/: NAME/ (OCI layout, tagged), NAME.tar (the layout as a
# tar, what `ctr images import` takes), NAME.ref (the image reference) and NAME.hash (a hash of the
# inputs: the binary or sources, the Debian package database, this script; the image is rebuilt
# only when it changes).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${REPO}/_output/image"
export PATH="/usr/local/go/bin:${PATH}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

log() { echo "build-image: $*" >&2; }
die() { echo "build-image: error: $*" >&2; exit 1; }

need() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || die "$c not found: run hack/install-deps.sh"
  done
}

# copy_file SRC ROOT: copies SRC to the same path under ROOT, recreating every symlink met on
# the way (e.g. /lib64/ld-linux-x86-64.so.2 -> ../lib/x86_64-linux-gnu/...) because the dynamic
# loader and the multi-call binaries find things by those names. Directories are taken in their
# canonical form: Debian 12 is usr-merged and ROOT gets the same top-level links.
copy_file() {
  local src="$1" root="$2" dir path target
  dir="$(readlink -f "$(dirname "$src")")"
  path="${dir}/$(basename "$src")"
  [[ -e "$path" ]] || die "$src does not exist: install its Debian package (hack/install-deps.sh)"
  [[ -e "${root}${path}" || -L "${root}${path}" ]] && return 0
  mkdir -p "${root}${dir}"
  if [[ -L "$path" ]]; then
    target="$(readlink "$path")"
    ln -s "$target" "${root}${path}"
    if [[ "$target" != /* ]]; then target="${dir}/${target}"; fi
    copy_file "$target" "$root"
  else
    cp -p "$path" "${root}${path}"
  fi
}

# copy_with_libs ROOT FILE...: the files plus every shared library ldd says they load.
copy_with_libs() {
  local root="$1" f lib
  shift
  for f in "$@"; do
    copy_file "$f" "$root"
    while read -r lib; do
      copy_file "$lib" "$root"
    done < <(ldd "$f" 2>/dev/null | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)
  done
}

# usr_merged_root ROOT: the top-level symlinks of a usr-merged Debian, so /lib64/ld-linux... and
# /lib/x86_64-linux-gnu/... (what ldd prints) resolve to the copies under /usr.
usr_merged_root() {
  local root="$1" d
  for d in bin sbin lib lib64; do
    mkdir -p "${root}/usr/${d}"
    ln -s "usr/${d}" "${root}/${d}"
  done
  mkdir -p "${root}/etc" "${root}/run" "${root}/tmp" "${root}/var"
  chmod 1777 "${root}/tmp"
  ln -s ../run "${root}/var/run"
}

stage_agent() {
  local root="$1" bin="${SVCTRACE_BIN:-${REPO}/_output/bin/kubectl-svctrace}" f n
  [[ -x "$bin" ]] || die "$bin not found: run 'make build' first"
  need ldd ldconfig
  usr_merged_root "$root"
  cp -p "$bin" "${root}/kubectl-svctrace"

  copy_with_libs "$root" /usr/sbin/xtables-legacy-multi /usr/sbin/xtables-nft-multi /usr/sbin/nft
  for f in /usr/lib/x86_64-linux-gnu/xtables/*.so; do
    copy_with_libs "$root" "$f"
  done
  # The multi-call binaries dispatch on argv[0]: one relative symlink per name, as Debian does.
  for n in iptables ip6tables; do
    for f in "" -save -restore; do
      ln -s xtables-legacy-multi "${root}/usr/sbin/${n}-legacy${f}"
      ln -s xtables-nft-multi "${root}/usr/sbin/${n}-nft${f}"
      # Debian's alternatives default: plain iptables is the nft backend.
      ln -s "${n}-nft${f}" "${root}/usr/sbin/${n}${f}"
    done
  done
  ln -s xtables-nft-multi "${root}/usr/sbin/xtables-monitor"
  # Protocol/service/ethertype names used when parsing and printing rules.
  for f in /etc/protocols /etc/services /etc/ethertypes; do
    if [[ -f "$f" ]]; then cp -p "$f" "${root}${f}"; fi
  done
  # A loader cache, so libraries resolve even where the loader's built-in path lacks multiarch.
  printf '/usr/local/lib/x86_64-linux-gnu\n/lib/x86_64-linux-gnu\n/usr/lib/x86_64-linux-gnu\n' >"${root}/etc/ld.so.conf"
  ldconfig -r "$root"

  # Fail here, not in a pod: every tool must start from inside the image.
  for f in iptables-legacy iptables-nft ip6tables-legacy-save iptables-nft-save xtables-monitor nft; do
    chroot "$root" "/usr/sbin/$f" --version >/dev/null 2>&1 ||
      die "/usr/sbin/$f does not run inside the agent image (missing library?): chroot ${root} /usr/sbin/$f --version"
  done
}

stage_busybox() {
  local root="$1" a
  local bb=/bin/busybox
  [[ -x "$bb" ]] && "$bb" --list >/dev/null 2>&1 || die "busybox-static not installed: run hack/install-deps.sh"
  file_is_static "$bb" || die "$bb is not statically linked: install busybox-static"
  mkdir -p "${root}/bin" "${root}/etc" "${root}/tmp" "${root}/root"
  chmod 1777 "${root}/tmp"
  cp -p "$bb" "${root}/bin/busybox"
  if [[ "${2:-all}" == all ]]; then
    # Every applet EXCEPT busybox itself: a busybox -> busybox link would loop.
    while read -r a; do
      [[ "$a" == busybox ]] && continue
      ln -s busybox "${root}/bin/${a}"
    done < <("$bb" --list)
  else
    for a in "${@:2}"; do ln -s busybox "${root}/bin/${a}"; done
  fi
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"${root}/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"${root}/etc/group"
}

file_is_static() {
  ! ldd "$1" >/dev/null 2>&1
}

stage_workload() {
  local root="$1"
  stage_busybox "$root" all
  (cd "$REPO" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "${root}/bin/workload" ./hack/workload) ||
    die "building hack/workload failed"
}

stage_pause() {
  stage_busybox "$1" sh sleep
}

# inputs_NAME prints what the image is made of, cheaply: the image is rebuilt when it changes.
# The Debian package database stands for every host file taken (binaries, libraries, busybox).
inputs_agent() {
  sha256sum "${SVCTRACE_BIN:-${REPO}/_output/bin/kubectl-svctrace}" | cut -d' ' -f1
}
inputs_workload() {
  sha256sum "${REPO}"/hack/workload/*.go "${REPO}/go.mod"
  go env GOVERSION
}
inputs_pause() { :; }

# build NAME REF CONFIG_FLAG...: assembles the root file system and runs umoci, unless the
# inputs (and this script) are unchanged since the last build.
build() {
  local name="$1" ref="$2"
  shift 2
  local tag="${ref##*:}" stage layout hash
  layout="${OUT}/${name}"
  hash="$( {
    printf '%s\n' "$ref" "$@"
    sha256sum "${BASH_SOURCE[0]}" /var/lib/dpkg/status
    "inputs_${name}"
  } | sha256sum | cut -c1-64)"
  if [[ -f "${OUT}/${name}.hash" && "$(cat "${OUT}/${name}.hash")" == "$hash" && -f "${OUT}/${name}.tar" && -d "$layout" ]]; then
    log "${ref} up to date (${layout})"
    return 0
  fi

  log "building ${ref}"
  stage="$(mktemp -d "${OUT}/.stage-${name}.XXXXXX")"
  STAGE="$stage" # removed by the EXIT trap, also when a step fails
  mkdir -p "${stage}/rootfs"
  "stage_${name}" "${stage}/rootfs"
  rm -rf "$layout" "${OUT}/${name}.tar" "${OUT}/${name}.hash"
  umoci init --layout "$layout" >/dev/null
  umoci new --image "${layout}:${tag}" >/dev/null
  # One layer with the whole root file system.
  umoci insert --history.created_by "hack/build-image.sh ${name}" --image "${layout}:${tag}" "${stage}/rootfs" / >/dev/null
  local args=(--no-history --image "${layout}:${tag}" --os linux --architecture amd64
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
  local e
  for e in "$@"; do args+=("$e"); done
  umoci config "${args[@]}" >/dev/null
  umoci gc --layout "$layout"
  tar -C "$layout" -cf "${OUT}/${name}.tar.tmp" .
  mv "${OUT}/${name}.tar.tmp" "${OUT}/${name}.tar"
  printf '%s\n' "$ref" >"${OUT}/${name}.ref"
  printf '%s\n' "$hash" >"${OUT}/${name}.hash"
  rm -rf "$stage"
  log "built ${ref}: ${layout} (${OUT}/${name}.tar)"
}

STAGE=""
cleanup() { if [[ -n "$STAGE" ]]; then rm -rf "$STAGE"; fi; }
trap cleanup EXIT

main() {
  need umoci tar sha256sum chroot
  [[ "$(id -u)" == 0 ]] || die "run as root: image files must keep root ownership"
  mkdir -p "$OUT"
  local targets=("$@") t
  if ((${#targets[@]} == 0)); then targets=(agent); fi
  if [[ " ${targets[*]} " == *" all "* ]]; then targets=(agent workload pause); fi
  for t in "${targets[@]}"; do
    case "$t" in
      agent)
        build agent "${SVCTRACE_IMAGE:-docker.io/library/svctrace-agent:dev}" \
          --config.entrypoint /kubectl-svctrace
        ;;
      workload)
        build workload docker.io/library/svctrace-workload:1 --config.cmd /bin/sh
        ;;
      pause)
        # PID 1 of every pod sandbox: sleeps until told to stop.
        build pause docker.io/library/svctrace-pause:1 \
          --config.entrypoint /bin/sh --config.entrypoint -c \
          --config.entrypoint "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait \$!; done"
        ;;
      *) die "unknown image ${t}: want agent, workload, pause or all" ;;
    esac
  done
}

main "$@"; exit
