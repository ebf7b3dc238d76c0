# The svctrace agent image for users' clusters: the kubectl-svctrace binary (the plugin pod
# runs `kubectl-svctrace agent ...`) on kube-proxy's own base image, which already carries
# iptables-legacy, iptables-nft, xtables-monitor, nft and their libraries, the same builds
# kube-proxy v1.36 uses. (The local test cluster builds an equivalent image without Docker
# from this machine's Debian packages: hack/build-image.sh.)
#
#   docker build -t REGISTRY/svctrace-agent:VERSION \
#     --build-arg VERSION=VERSION --build-arg IMAGE=REGISTRY/svctrace-agent:VERSION .
#
# IMAGE is stamped into the binary: it is the image the plugin starts its agent pods from.
# Note: in this base image `iptables` is kube-proxy's iptables-wrapper, which picks legacy or
# nft on first use from the node's rules; the agent calls the -legacy/-nft commands by name.

# The Go release that builds the plugin (go.mod: go 1.26).
ARG GO_VERSION=1.26
# kube-proxy v1.36.3's base image (kubernetes build/dependencies.yaml).
ARG BASE_IMAGE=registry.k8s.io/build-image/distroless-iptables:v0.9.6

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=dev
ARG IMAGE=docker.io/library/svctrace-agent:dev
WORKDIR /src
# Modules first: this layer stays cached while only the sources change.
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY pkg/ pkg/
RUN CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath -buildvcs=false \
      -ldflags "-s -w -X github.com/svctrace/kubectl-svctrace/pkg/version.Version=${VERSION} -X github.com/svctrace/kubectl-svctrace/pkg/version.Image=${IMAGE}" \
      -o /out/kubectl-svctrace ./cmd/kubectl-svctrace

FROM ${BASE_IMAGE}
COPY --from=build /out/kubectl-svctrace /kubectl-svctrace
# The agent adds and removes netfilter rules and reads the kernel log: it runs as root in a
# privileged pod; the image itself asks for nothing more.
USER 0:0
ENTRYPOINT ["/kubectl-svctrace"]
