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

## e2e: the built binary against $$KUBECONFIG, or against the local cluster (both kube-proxy backends)
e2e: build
	hack/e2e.sh

## test: everything CI runs: verify, unit + real-kernel tests, e2e
test: verify unit e2e

## ci: install what a fresh machine lacks, then run every test
ci:
	hack/install-deps.sh
	$(MAKE) test

## demo: local cluster + demo apps + one live trace of svc/myapp (the main job)
demo:
	hack/install-deps.sh
	hack/demo.sh

## image: the agent image (OCI layout under _output/image)
image: build
	SVCTRACE_IMAGE=$(IMAGE) hack/build-image.sh

## dist: release archives for every platform, with $(VERSION) stamped in
dist:
	hack/dist.sh $(VERSION)

## verify: formatting, vet, manifests
verify:
	hack/verify.sh

## bench: engine benchmarks
bench:
	go test -run '^$$' -bench . -benchmem ./pkg/...

cluster-up:
	hack/local-cluster.sh up

cluster-down:
	hack/local-cluster.sh down

clean:
	rm -rf _output
