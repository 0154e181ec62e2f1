# syntax=docker/dockerfile:1
# ironlb-ccm image. Build from the repository root (make image), e.g.
#   docker build -f build/ccm.Dockerfile --build-arg VERSION=v0.1.0 -t ironlb-ccm .

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
    go build -trimpath -buildvcs=false -ldflags "-s -w ${LDFLAGS}" -o /out/ironlb-ccm ./cmd/ironlb-ccm

FROM gcr.io/distroless/static:nonroot
# Non-root (UID 65532): the CCM needs no privilege.
COPY --from=build /out/ironlb-ccm /ironlb-ccm
ENTRYPOINT ["/ironlb-ccm"]
