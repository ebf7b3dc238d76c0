# svctrace build, test and demo entry points. Outputs and caches go under _output/.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c

export PATH := /usr/local/go/bin:$(PATH)
export GOFLAGS ?= -buildvcs=false

VERSION ?= dev
IMAGE ?= docker.io/library/svctrace-agent:$(VERSION)
PKG := github.com/svctrace/kubectl-svctrace
LDFLAGS := -s -w -X $(PKG)/pkg/version.Version=$(VERSION) -X $(PKG)/pkg/version.Image=$(IMAGE)
BIN := _output/bin/kubectl-svctrace

.PHONY: all build test unit e2e ci demo image dist verify bench fuzz clean cluster-up cluster-down

all: build

## build: the plugin binary in _output/bin (also the agent: same binary)
build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kubectl-svctrace

## unit: unit, golden and (as root) real-kernel tests
unit:
	go test -count=1 ./...

## e2e: the built binary against $$KUBECONFIG, or against a 2-node local cluster in each kube-proxy
## configuration (iptables/nft, iptables/legacy, nftables; E2E_CONFIGS and E2E_NODES choose)
e2e: build
	hack/e2e.sh

## test: everything CI runs: verify, unit + real-kernel tests, e2e, krew-test
test: verify unit e2e
test: krew-test

## ci: install what a fresh machine lacks, then run every test
ci:
	hack/install-deps.sh
	$(MAKE) test

## demo: 2-node local cluster + demo apps + live traces: svc/myapp on one node, and a cross-node
## path from the client pod to an endpoint on the second node (the main job; DEMO_NODES=N)
demo:
	hack/install-deps.sh
	hack/demo.sh

## image: the agent image (OCI layout under _output/image)
image: build
	SVCTRACE_IMAGE=$(IMAGE) hack/build-image.sh

## dist: release archives for every platform, with $(VERSION) stamped in
dist:
	hack/dist.sh $(VERSION)

## krew-test: make dist, then kubectl krew install it into a temporary KREW_ROOT and run kubectl svctrace version
.PHONY: krew-test
krew-test:
	hack/krew.sh test

## verify: formatting, vet, manifests
verify:
	hack/verify.sh

## bench: engine benchmarks
bench:
	go test -run '^$$' -bench . -benchmem ./pkg/...

## cluster-up: the local cluster (NODES=1..3, default 2; PROXY_MODE=iptables|nftables; PROXY_BACKEND=nft|legacy)
cluster-up:
	hack/local-cluster.sh up $(if $(NODES),--nodes $(NODES)) $(if $(PROXY_MODE),--proxy-mode $(PROXY_MODE)) $(if $(PROXY_BACKEND),--proxy-backend $(PROXY_BACKEND))

cluster-down:
	hack/local-cluster.sh down

clean:
	rm -rf _output
