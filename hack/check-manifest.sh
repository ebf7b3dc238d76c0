#!/usr/bin/env bash
# Validates svctrace's krew manifests: plugins/svctrace.yaml (the krew-index
# manifest) and .krew.yaml (the krew-release-bot template, rendered with
# placeholder hashes). Checks the YAML parses strictly, the required fields,
# one archive per os/arch (linux, darwin, windows x amd64, arm64) with uri,
# sha256, bin and LICENSE, and caveats about the privileged pod.
#   hack/check-manifest.sh [--archives DIR]   DIR: also check sha256s and
#                                             contents of built archives
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
go run ./hack/check-manifest "$@" plugins/svctrace.yaml
go run ./hack/check-manifest --template .krew.yaml
