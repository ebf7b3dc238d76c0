#!/usr/bin/env bash
# Installs the Debian packages the local cluster, the image builds and the e2e tests need.
# Idempotent and quiet when everything is already there; runs `apt-get update` at most once.
set -euo pipefail

# Why each package is needed:
#   containerd runc containernetworking-plugins  the node's container runtime and pod network
#   etcd-server                                   the API server's store
#   iptables nftables conntrack                   kube-proxy backends, TRACE captures, agent image
#   ipset                                         kube-router's NetworkPolicy firewall
#   umoci                                         OCI images without a Docker engine
#   busybox-static                                userland of the workload and pause images
#   iproute2 util-linux                           network namespaces, veths, nsenter
#   openssl                                       cluster CA, serving certificate, service-account key
#   curl                                          e2e traffic from the node and the gateway
#   ca-certificates make                          the Go module proxy over TLS, make targets
packages=(
  containerd runc etcd-server containernetworking-plugins
  iptables nftables conntrack ipset umoci busybox-static iproute2 util-linux
  openssl curl ca-certificates make
)

if [[ "$(id -u)" != 0 ]]; then
  echo "install-deps: run as root (apt-get install needs it)" >&2
  exit 1
fi

missing=()
for p in "${packages[@]}"; do
  status="$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)"
  if [[ "$status" != installed ]]; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Package scripts must not start the distribution's own containerd/etcd services: the
# harness runs its own instances in a network namespace (policy-rc.d exit 101 = "don't").
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e "$policy" ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod 0755 "$policy"
  created_policy=1
fi
cleanup() { if ((created_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "install-deps: done" >&2
