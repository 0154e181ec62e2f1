# syntax=docker/dockerfile:1
# ironlb-speaker image. Build from the repository root (make image), e.g.
#   docker build -f build/speaker.Dockerfile --build-arg VERSION=v0.1.0 -t ironlb-speaker .

# The builder runs on the build machine's platform and cross-compiles.
FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS=linux
ARG TARGETARCH
ARG VERSION=v0.0.0-dev
# Defaults to the Makefile's LDFLAGS; make image passes them as they are.
ARG LDFLAGS="-X github.com/ironlb/ironlb/internal/version.Version=${VERSION} -X k8s.io/component-base/version.gitVersion=v1.37.2"
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH \
    go build -trimpath -buildvcs=false -ldflags "-s -w ${LDFLAGS}" -o /out/ironlb-speaker ./cmd/ironlb-speaker

FROM gcr.io/distroless/static
# Root with only NET_RAW and NET_ADMIN, granted by the DaemonSet's
# securityContext (raw packet sockets for ARP/NDP); see deploy/speaker.
COPY --from=build /out/ironlb-speaker /ironlb-speaker
ENTRYPOINT ["/ironlb-speaker"]
