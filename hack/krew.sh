#!/usr/bin/env bash
# svctrace's krew manifests, checked by krew itself (sigs.k8s.io/krew, built by hack/tools.sh).
#
#   hack/krew.sh render VERSION [DIR]      print .krew.yaml rendered for VERSION as krew-release-bot
#                                          renders it: {{ .TagName }} -> VERSION, each
#                                          {{addURIAndSha "URL" .TagName }} -> uri and sha256 lines,
#                                          the sha256 of DIR/<archive named by URL> (without DIR:
#                                          a placeholder hash)
#   hack/krew.sh validate                  validate-krew-manifest on plugins/svctrace.yaml and on
#                                          .krew.yaml rendered with placeholder hashes (make verify)
#   hack/krew.sh install-all MANIFEST DIR  validate MANIFEST, then krew-install every archive in DIR
#                                          (KREW_OS/KREW_ARCH pick its platform) into a temporary
#                                          KREW_ROOT, as krew-index's validation installs each
#                                          platform: krew checks the sha256, the files and bin
#                                          entries; this checks what landed (hack/dist.sh)
#   hack/krew.sh test                      make dist, then the user's path through kubectl: `kubectl
#                                          krew install --manifest --archive` into a temporary
#                                          KREW_ROOT, `kubectl plugin list`, `kubectl svctrace
#                                          version` (make krew-test)
#
# kubectl for the test: $KUBECTL, else the one hack/local-cluster.sh build builds (and caches).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
export PATH="/usr/local/go/bin:${PATH}"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
# krew must never reach out: no upgrade check (install --manifest never updates the index).
export KREW_NO_UPGRADE_CHECK=1

PLUGIN=svctrace
TEST_VERSION=v0.0.0-krew.test

die() {
  echo "krew: $*" >&2
  exit 1
}

# render TEMPLATE VERSION [DIR]
render() {
  local template="$1" version="$2" dir="${3:-}" line n=0 indent uri sum
  local action='^([[:space:]]*)\{\{[[:space:]]*addURIAndSha[[:space:]]+"([^"]+)"[[:space:]]+\.TagName[[:space:]]*\}\}[[:space:]]*$'
  local tag='{{ .TagName }}'
  while IFS= read -r line || [[ -n $line ]]; do
    n=$((n + 1))
    [[ $line == '#'* ]] && continue # the template's own comments describe the template
    if [[ $line =~ $action ]]; then
      indent="${BASH_REMATCH[1]}"
      uri="${BASH_REMATCH[2]//"$tag"/$version}"
      sum="$(printf '0%.0s' {1..64})"
      if [[ -n $dir ]]; then
        [[ -f "${dir}/${uri##*/}" ]] || die "${template}:${n}: no archive ${dir}/${uri##*/} (build it with make dist VERSION=${version})"
        sum="$(sha256sum "${dir}/${uri##*/}" | cut -d' ' -f1)"
      fi
      # Quoted: an all-digit hash would otherwise read as a YAML number.
      printf '%suri: %s\n%ssha256: "%s"\n' "$indent" "$uri" "$indent" "$sum"
      continue
    fi
    line="${line//"$tag"/$version}"
    [[ $line != *'{{'* ]] || die "${template}:${n}: a template action krew-release-bot has but this renderer does not: ${line}"
    printf '%s\n' "$line"
  done <"$template"
}

# validate MANIFEST...: krew-index's own check of each manifest's structure (the archives are not
# downloaded: -skip-install; install-all installs local ones).
validate() {
  local validator m
  validator="$("${REPO}/hack/tools.sh" validate-krew-manifest)"
  for m in "$@"; do
    if ! "$validator" -manifest "$m" -skip-install 2>"${tmp}/validate.log"; then
      # Its error is klog's fatal line (a goroutine dump follows it).
      grep -E '^[EF][0-9]{4} ' "${tmp}/validate.log" >&2 || cat "${tmp}/validate.log" >&2
      die "${m} is not a valid krew plugin manifest"
    fi
    echo "krew: ${m}: valid" >&2
  done
}

cmd_validate() {
  mkdir -p "${tmp}/template"
  # validate-krew-manifest wants the file named after the plugin.
  render .krew.yaml v0.0.0 >"${tmp}/template/${PLUGIN}.yaml"
  validate plugins/svctrace.yaml "${tmp}/template/${PLUGIN}.yaml"
  echo "krew: .krew.yaml renders to a valid manifest" >&2
}

# installed ROOT VERSION OS: the files of the installed plugin and its link in ROOT/bin.
installed() {
  local root="$1" version="$2" os="$3" ext="" f store
  [[ $os == windows ]] && ext=.exe
  store="${root}/store/${PLUGIN}/${version}"
  for f in "kubectl-svctrace${ext}" "kubectl_complete-svctrace${ext}" LICENSE; do
    [[ -f "${store}/${f}" ]] || die "krew did not install ${f} into ${store} (it has: $(ls -A "$store" 2>/dev/null | tr '\n' ' '))"
  done
  [[ -e "${root}/bin/kubectl-svctrace${ext}" ]] || die "krew did not put kubectl-svctrace${ext} into ${root}/bin"
  [[ -f "${root}/receipts/${PLUGIN}.yaml" ]] || die "krew wrote no receipt ${root}/receipts/${PLUGIN}.yaml"
}

cmd_install_all() {
  local manifest="$1" dir="$2" krew archive base platform os arch version n=0
  [[ -f $manifest && -d $dir ]] || die "usage: hack/krew.sh install-all MANIFEST DIR"
  validate "$manifest"
  krew="$("${REPO}/hack/tools.sh" krew)"
  version="$(sed -n 's/^  version: //p' "$manifest")"
  for archive in "${dir}/kubectl-svctrace_${version}_"*.tar.gz; do
    [[ -f $archive ]] || die "no archives kubectl-svctrace_${version}_OS_ARCH.tar.gz in ${dir}"
    base="${archive##*/}"
    platform="${base#"kubectl-svctrace_${version}_"}"
    platform="${platform%.tar.gz}"
    os="${platform%_*}" arch="${platform#*_}"
    rm -rf "${tmp}/root"
    if ! HOME="$tmp" KREW_ROOT="${tmp}/root" KREW_OS="$os" KREW_ARCH="$arch" PATH="${tmp}/root/bin:${PATH}" \
      "$krew" install --manifest="$manifest" --archive="$archive" >"${tmp}/install.log" 2>&1; then
      cat "${tmp}/install.log" >&2
      die "krew install of ${base} (${os}/${arch}) with ${manifest} failed"
    fi
    installed "${tmp}/root" "$version" "$os"
    echo "krew: installed ${base} as ${os}/${arch}" >&2
    n=$((n + 1))
  done
  local platforms
  platforms="$(grep -c '^  - selector:' "$manifest")"
  ((n == platforms)) || die "${manifest} has ${platforms} platforms but ${dir} ${n} archives"
}

# kubectl_bin: $KUBECTL, or the kubectl of hack/local-cluster.sh's Kubernetes build.
kubectl_bin() {
  if [[ -n ${KUBECTL:-} ]]; then
    echo "$KUBECTL"
    return
  fi
  local out dir
  # build prints the folder of each component it built (or found cached): one holds kubectl.
  out="$("${REPO}/hack/local-cluster.sh" build)" || die "no kubectl: hack/local-cluster.sh build failed (or set KUBECTL=/path/to/kubectl)"
  while IFS= read -r dir; do
    if [[ -x "${dir}/kubectl" ]]; then
      echo "${dir}/kubectl"
      return
    fi
  done <<<"$out"
  die "hack/local-cluster.sh build printed no folder with kubectl: ${out}"
}

cmd_test() {
  local start=$SECONDS kubectl krew dist="${tmp}/dist" root="${tmp}/root" image host out want
  kubectl="$(kubectl_bin)"
  [[ -x $kubectl ]] || die "kubectl ${kubectl} is not executable"
  krew="$("${REPO}/hack/tools.sh" krew)"
  image="docker.io/library/svctrace-agent:${TEST_VERSION}"
  # make dist checks the rendered manifest and every archive with krew (install-all).
  DIST_DIR="$dist" make --no-print-directory -s dist VERSION="$TEST_VERSION" IMAGE="$image" >"${tmp}/dist.log" 2>&1 ||
    { cat "${tmp}/dist.log" >&2; die "make dist failed"; }
  grep '^krew: ' "${tmp}/dist.log" >&2 || die "make dist did not check its manifest and archives with krew"

  host="$(go env GOOS)_$(go env GOARCH)"
  # Only what a user has: kubectl and krew on PATH, a fresh KREW_ROOT, no cluster.
  local -a env=(env -i "HOME=${tmp}" "KREW_ROOT=${root}" "KREW_NO_UPGRADE_CHECK=1" "KUBECONFIG=${tmp}/no-kubeconfig"
    "PATH=${root}/bin:$(dirname "$krew"):$(dirname "$kubectl")")
  "${env[@]}" kubectl krew install --manifest="${dist}/${PLUGIN}.yaml" \
    --archive="${dist}/kubectl-svctrace_${TEST_VERSION}_${host}.tar.gz" >"${tmp}/install.log" 2>&1 ||
    { cat "${tmp}/install.log" >&2; die "kubectl krew install failed"; }
  installed "$root" "$TEST_VERSION" "$(go env GOOS)"
  # kubectl finds the plugin where krew linked it (krew list and uninstall need a cloned index).
  out="$("${env[@]}" kubectl plugin list 2>&1)" || die "kubectl plugin list failed: ${out}"
  grep -qx "${root}/bin/kubectl-svctrace" <<<"$out" || die "kubectl plugin list does not list ${root}/bin/kubectl-svctrace:
${out}"

  out="$("${env[@]}" kubectl svctrace version 2>&1)" || die "kubectl svctrace version failed: ${out}"
  want="kubectl-svctrace ${TEST_VERSION} ($(go env GOOS)/$(go env GOARCH), $(go env GOVERSION))
agent image: ${image}"
  [[ $out == "$want" ]] || die "kubectl svctrace version printed
${out}
want
${want}"
  out="$("${env[@]}" kubectl svctrace version -o json 2>&1)" || die "kubectl svctrace version -o json failed: ${out}"
  grep -q "\"version\": \"${TEST_VERSION}\"" <<<"$out" || die "kubectl svctrace version -o json: no version ${TEST_VERSION}: ${out}"

  echo "krew: kubectl krew install, kubectl plugin list and kubectl svctrace version ok ($((SECONDS - start))s)" >&2
}

mkdir -p "${REPO}/_output"
tmp="$(mktemp -d "${REPO}/_output/krew.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

case "${1:-}" in
  render)
    (($# == 2 || $# == 3)) || die "usage: hack/krew.sh render VERSION [DIR]"
    render .krew.yaml "$2" "${3:-}"
    ;;
  validate) cmd_validate ;;
  install-all)
    (($# == 3)) || die "usage: hack/krew.sh install-all MANIFEST DIR"
    cmd_install_all "$2" "$3"
    ;;
  test) cmd_test ;;
  *) die "usage: hack/krew.sh render VERSION [DIR] | validate | install-all MANIFEST DIR | test" ;;
esac
