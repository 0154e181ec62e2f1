# IronLB. `make demo` shows it working; `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := build

GO        ?= go
CACHE     := $(CURDIR)/.cache
TOOLS_BIN := $(CACHE)/bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo v0.0.0-dev)
LDFLAGS   := -X github.com/ironlb/ironlb/internal/version.Version=$(VERSION) \
             -X k8s.io/component-base/version.gitVersion=v1.37.2
KUBE_LDFLAGS := -X k8s.io/component-base/version.gitVersion=v1.37.2 \
                -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=37
TEST_TIMEOUT ?= 60m
CONTROLPLANE := $(TOOLS_BIN)/kube-apiserver $(TOOLS_BIN)/etcd $(TOOLS_BIN)/kubectl
# The Kubernetes programs a real node runs (make cluster, the cluster test).
NODE_TOOLS := $(addprefix $(TOOLS_BIN)/,kubeadm kubelet kube-proxy kube-controller-manager kube-scheduler agnhost)

.PHONY: build
build: ## Build bin/ironlb-ccm, bin/ironlb-speaker and bin/kubectl-ironlb.
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/ironlb-ccm ./cmd/ironlb-speaker ./cmd/kubectl-ironlb

# The test control plane: kube-apiserver and kubectl v1.37.2 and etcd, built
# from the Go module proxy by the separate module in test/tools (about 6 min
# cold). Rebuilt only when that module changes. Static (CGO_ENABLED=0), as
# the cluster's images need them, and sharing one build cache with
# NODE_TOOLS.
.PHONY: controlplane
controlplane: $(CONTROLPLANE)
$(CONTROLPLANE) &: test/tools/go.mod test/tools/go.sum test/tools/etcd/main.go
	@mkdir -p $(TOOLS_BIN)
	cd test/tools && CGO_ENABLED=0 $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(TOOLS_BIN)/ \
		k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl ./etcd
	@touch $(CONTROLPLANE)

# The real cluster (make cluster, make conformance, the cluster test in
# make test; see docs/development.md, "A real cluster"): Debian's containerd, runc, CNI
# plugins, nftables and the tools agnhost's pods exec (busybox, OpenBSD
# nc, GNU wget, curl); kubeadm, kubelet, kube-proxy, kube-controller-manager,
# kube-scheduler and agnhost v2.66.1 from test/tools (about 2 min more
# than controlplane cold); the pod sandbox (test/cluster/pause). CoreDNS
# v1.14.6 (separate module test/tools/coredns, about 2 min cold) only for
# make cluster and make conformance: the cluster test runs without it.
.PHONY: cluster-deps cluster-tools
cluster-deps: deps
	@test -x /usr/bin/containerd -a -x /usr/sbin/runc -a -x /usr/lib/cni/bridge -a -x /usr/sbin/nft -a -x /bin/busybox \
		-a -x /bin/nc.openbsd -a -x /usr/bin/curl -a -x /usr/bin/wget -a -x /usr/sbin/conntrack -a -x /usr/sbin/iptables -a -x /usr/bin/nsenter || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		containerd runc containernetworking-plugins nftables iptables conntrack busybox-static netcat-openbsd curl wget util-linux; }
cluster-tools: cluster-deps $(CONTROLPLANE) $(NODE_TOOLS) $(TOOLS_BIN)/pause
$(NODE_TOOLS) &: test/tools/go.mod test/tools/go.sum
	@mkdir -p $(TOOLS_BIN)
	cd test/tools && CGO_ENABLED=0 $(GO) build -ldflags '$(KUBE_LDFLAGS)' -o $(TOOLS_BIN)/ \
		k8s.io/kubernetes/cmd/kubeadm k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy \
		k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
		k8s.io/kubernetes/test/images/agnhost
	@touch $(NODE_TOOLS)
$(TOOLS_BIN)/pause: test/cluster/pause/main.go
	CGO_ENABLED=0 $(GO) build -o $@ ./test/cluster/pause
$(TOOLS_BIN)/coredns: test/tools/coredns/go.mod test/tools/coredns/go.sum
	cd test/tools/coredns && CGO_ENABLED=0 $(GO) build -o $@ github.com/coredns/coredns

# Go tools at pinned versions, in .cache/bin.
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(TOOLS_BIN)/controller-gen
PROMTOOL := $(TOOLS_BIN)/promtool
.PHONY: tools
tools: $(CONTROLLER_GEN) $(TOOLS_BIN)/helm $(PROMTOOL)
$(CONTROLLER_GEN):
	GOBIN=$(TOOLS_BIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)

# promtool, for the tests of the alerts and the dashboard (test/monitoring):
# Debian's prometheus package (bookworm: 2.42; a 19 MB download), unpacked
# into .cache/bin rather than installed (apt-get download needs no root once
# the package lists are there). Installing it would pull a dozen JavaScript
# and font packages, add a prometheus user and start a Prometheus server on
# :9090 (its postinst runs invoke-rc.d prometheus start) wherever no
# policy-rc.d forbids it.
.PHONY: promtool
promtool: $(PROMTOOL)
$(PROMTOOL):
	@mkdir -p $(TOOLS_BIN) $(CACHE)/deb
	cd $(CACHE)/deb && rm -f prometheus_*.deb && \
		{ apt-get download prometheus 2>/dev/null || { apt-get update && apt-get download prometheus; }; }
	dpkg-deb --fsys-tarfile $(CACHE)/deb/prometheus_*.deb | tar -xO ./usr/bin/promtool > $@.tmp
	chmod +x $@.tmp && mv $@.tmp $@ && rm -f $(CACHE)/deb/prometheus_*.deb
	$@ --version | head -1

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Regenerate the CRD (deploy/crds) and deepcopy code from api/.
	$(CONTROLLER_GEN) object:headerFile= paths=./api/... crd output:crd:dir=deploy/crds

# The speaker gRPC API: api/speaker/v1/*.pb.go from speaker.proto, with
# protoc from Debian and the Go generators at pinned versions.
PROTOC_GEN_GO_VERSION      := v1.36.11
PROTOC_GEN_GO_GRPC_VERSION := v1.6.1
$(TOOLS_BIN)/protoc-gen-go:
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(TOOLS_BIN)/protoc-gen-go-grpc:
	GOBIN=$(TOOLS_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
.PHONY: proto
proto: $(TOOLS_BIN)/protoc-gen-go $(TOOLS_BIN)/protoc-gen-go-grpc ## Regenerate the speaker API's Go code.
	@command -v protoc >/dev/null || { apt-get update && apt-get install -y protobuf-compiler; }
	PATH=$(TOOLS_BIN):$$PATH protoc --proto_path=. \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		api/speaker/v1/speaker.proto

# System packages the rig needs: iproute2 (network namespaces, veth,
# bridges) and FRR, the router of the BGP tests (Debian's frr package;
# its service is not started: tests run their own FRR in namespaces), and
# the DHCP servers of speaker/dhcp's tests, Kea and dnsmasq (their
# services are not started either: the tests run their own in namespaces).
.PHONY: deps
deps:
	@command -v ip >/dev/null || { apt-get update && apt-get install -y iproute2; }
	@test -x /usr/lib/frr/bgpd || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends frr; }
	@command -v kea-dhcp4 >/dev/null && command -v dnsmasq >/dev/null || \
		{ apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kea-dhcp4-server dnsmasq-base; }

.PHONY: demo
demo: deps controlplane ## Run IronLB on a local control plane (ONCE=1: exit after the steps).
	$(GO) run ./test/demo $(if $(ONCE),-once)

# Test packages run one at a time (-p 1): the end-to-end, demo and chaos
# tests each run a control plane, CCMs and speakers, and measure outages;
# two at once on a two-core machine would skew what they measure. The
# first command compiles everything in parallel, so that only the runs
# are serial.
.PHONY: test
test: deps controlplane tools vet cluster-tools ## Unit, integration, end-to-end, short chaos and real-cluster tests.
	$(GO) test -count=1 -run '^$$' ./... > /dev/null
	$(GO) test -p 1 -count=1 -timeout $(TEST_TIMEOUT) ./...

# Benchmarks print one line per figure: BENCH <name> <value> <unit>.
# Group cp (go run ./test/bench -only cp) brings up the real kubeadm
# cluster with three control-plane nodes behind the control-plane VIP
# (make cluster CONTROL_PLANES=3) and measures its failovers: it needs
# cluster-tools.
BENCH_COUNT ?= 5
.PHONY: bench
bench: deps controlplane cluster-tools ## Allocator, speaker and CCM micro-benchmarks and end-to-end figures.
	@mkdir -p $(CACHE)
	$(GO) test -run='^$$' -bench=. -benchmem -count=$(BENCH_COUNT) ./ipam/ > $(CACHE)/bench-ipam.txt
	$(GO) test -run='^$$' -bench=BenchmarkBGPUpdate -benchmem -count=$(BENCH_COUNT) ./speaker/ >> $(CACHE)/bench-ipam.txt
	$(GO) test -run='^$$' -bench=BenchmarkAddrSetPatch -benchmem -count=$(BENCH_COUNT) ./loadbalancer/speakers/ >> $(CACHE)/bench-ipam.txt
	$(GO) run ./test/bench -gobench $(CACHE)/bench-ipam.txt
	@# Cluster API claims on a real API server: 100 IPAddressClaims to 100 IPAddresses.
	$(GO) test -run='^$$' -bench=BenchmarkClaims -benchtime=1x -count=1 ./loadbalancer/capiipam/ | grep '^BENCH '

# The scale figures (test/scalerig: the shipped CCM and a standby, simulated
# speakers, half the Services layer 2 and half BGP) at each point of
# SCALE_POINTS, <nodes>x<Services>. Issue 24's grid is 100, 300 and 1000
# nodes × 1000, 3000 and 10000 Services; the default runs its diagonal (a
# 300×1000 point takes about 2 minutes, 1000×10000 much longer). The BENCH
# lines also go to $(CACHE)/scale.txt; then how each figure grows with nodes
# and with Services (fitted exponents, scale_growth_* lines) to
# $(CACHE)/scale-growth.txt. Nodes beyond 508 take IPv6
# addresses. make test runs a short version (TestScale in test/scalerig).
SCALE_POINTS ?= 100x1000 300x3000 1000x10000
# SCALE_FLAGS go to every point, e.g. -scale-layer2-only (every Service
# layer 2) or -scale-profile DIR (the CCM's CPU profiles).
SCALE_FLAGS ?=
.PHONY: scale
scale: deps controlplane cluster-tools ## Scale figures at SCALE_POINTS (nodes x Services), as BENCH lines.
	@mkdir -p $(CACHE)
	$(GO) build -o $(CACHE)/scalebench ./test/bench
	@: > $(CACHE)/scale.txt
	@set -eo pipefail; for p in $(SCALE_POINTS); do \
		echo "scale: $${p%x*} nodes, $${p#*x} Services" >&2; \
		$(CACHE)/scalebench -only scale -scale-nodes $${p%x*} -scale-services $${p#*x} \
			-scale-node-prefixes 198.51.100.0/24,192.0.2.0/24,2001:db8:100::/112 $(SCALE_FLAGS) | tee -a $(CACHE)/scale.txt; \
	done
	$(CACHE)/scalebench -scale-growth $(CACHE)/scale.txt | tee $(CACHE)/scale-growth.txt

# The full chaos suite: 100 kills of the leading CCM during churn of ~500
# Services on ~600 addresses, ten blips of the CCM's network, a 60 s
# kube-apiserver outage and leader handovers (about 30 minutes). make test
# runs a short version (test/chaos).
.PHONY: chaos
chaos: deps controlplane ## The full chaos suite, as BENCH lines.
	$(GO) run ./test/bench -only chaos

# Fuzz targets (package:function). make test runs their seed corpora as
# ordinary tests; make fuzz runs each for FUZZTIME. A failing input lands in
# the package's testdata/fuzz, where make test replays it from then on.
FUZZTIME ?= 30s
FUZZ_TARGETS := speaker/layer2:FuzzParseARPRequest speaker/layer2:FuzzParseNS \
	speaker/layer2:FuzzParseARPFrame speaker/layer2:FuzzParseAdvert \
	speaker/bfd:FuzzParsePacket speaker:FuzzAgentInstructions \
	pki:FuzzParseCA pki:FuzzInstall pki:FuzzParseAttestation loadbalancer/speakers:FuzzReports \
	api/v1alpha1:FuzzCheckBGPPassword loadbalancer:FuzzValidateSharingKey \
	loadbalancer:FuzzRequestFor loadbalancer:FuzzParseAddressList \
	loadbalancer/announced:FuzzDecode loadbalancer/announced:FuzzRoundTrip status:FuzzEscape \
	cpvip:FuzzParse
.PHONY: fuzz
fuzz: ## Each fuzz target for FUZZTIME (default 30s).
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$fn (./$$pkg)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./$$pkg 2>&1 | tail -3; \
	done

.PHONY: unit
unit: ## Unit tests only (no control plane, no root).
	$(GO) test -short ./...

.PHONY: vet
vet:
	@files=$$(gofmt -l $$(find . -path ./.cache -prune -o -name '*.go' -print)); \
		test -z "$$files" || { echo "gofmt needed:"; echo "$$files"; exit 1; }
	$(GO) vet ./...

.PHONY: clean
clean:
	rm -rf bin .cache/test-bin

.PHONY: clean-all
clean-all: clean
	rm -rf .cache

.PHONY: help
help:
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

# helm, for the chart tests (helm lint, helm template), built from the Go
# module proxy by the separate module in test/tools/helm (about 5 min cold
# on 2 cores, 8 with module downloads; cache .cache/bin in CI keyed on
# test/tools/helm/go.sum). Rebuilt only when that module changes. The -X flags are those of helm's own
# Makefile: its version, and the Kubernetes version its lint and template
# assume (that of its k8s.io modules, 1.37).
HELM := $(TOOLS_BIN)/helm
HELM_VERSION = $(shell cd test/tools/helm && $(GO) list -m -f '{{.Version}}' helm.sh/helm/v3)
HELM_LDFLAGS = -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
               -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
               -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37
.PHONY: helm
helm: $(HELM)
$(HELM): test/tools/helm/go.mod test/tools/helm/go.sum test/tools/helm/tools.go
	@mkdir -p $(TOOLS_BIN)
	cd test/tools/helm && CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(HELM_LDFLAGS)' -o $(HELM) helm.sh/helm/v3/cmd/helm
	@touch $(HELM)

# Container images of ironlb-ccm and ironlb-speaker, without a container
# engine: build/mkimage cross-compiles static binaries (CGO_ENABLED=0,
# -trimpath, -s -w and LDFLAGS) for each of PLATFORMS and writes, per
# program, an OCI image layout holding an index of one image per platform:
# bin/images/ironlb-{ccm,speaker}/, named $(REGISTRY)/ironlb-{ccm,speaker}:$(IMAGE_TAG)
# (package build/oci assembles them with go-containerregistry). Reproducible:
# files and configuration carry the commit's time (SOURCE_DATE_EPOCH), so a
# commit gives the same digests on every machine with the same Go.
# LICENSES (an SPDX expression) becomes the images' licenses label; mkimage
# refuses to build without it once the repository has a LICENSE file.
REGISTRY  ?= ghcr.io/ironlb
IMAGE_TAG ?= $(VERSION)
PLATFORMS ?= linux/amd64,linux/arm64
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
LICENSES  ?=
IMAGE_FLAGS = -out bin/images -registry $(REGISTRY) -tag $(IMAGE_TAG) -version $(VERSION)
.PHONY: image
image: ## OCI images of ironlb-ccm and ironlb-speaker in bin/images (no Docker needed).
	$(GO) run ./build/mkimage build $(IMAGE_FLAGS) -platforms $(PLATFORMS) \
		-ldflags '-s -w $(LDFLAGS)' -revision $(REVISION) -epoch $(SOURCE_DATE_EPOCH) -licenses '$(LICENSES)'

# Pushes what make image built, with the credentials of docker login or
# crane auth login (anonymous without). INSECURE=1: plain HTTP to a registry
# that is not on loopback.
.PHONY: image-push
image-push: image ## Push the images to $(REGISTRY) as :$(IMAGE_TAG).
	$(GO) run ./build/mkimage push $(IMAGE_FLAGS) $(if $(INSECURE),-insecure)

# The install files of a release, for VERSION: bin/manifests/ironlb.yaml
# (deploy/ rendered by kustomize through an overlay, on a temporary copy,
# that tags the images $(VERSION)) and the chart packaged with appVersion $(VERSION), the default
# tag of its images. TestManifestsVersioned checks them.
MANIFESTS_DIR ?= bin/manifests
KUBECTL ?= $(TOOLS_BIN)/kubectl
.PHONY: manifests
manifests: $(KUBECTL) $(HELM) ## bin/manifests: ironlb.yaml and the Helm chart, images tagged VERSION.
	@set -e; rm -rf $(MANIFESTS_DIR); mkdir -p $(MANIFESTS_DIR); \
	overlay=$$(mktemp -d); trap 'rm -rf "$$overlay"' EXIT; cp -r deploy $$overlay/; \
	printf '%s\n' 'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' \
		'resources:' '  - deploy' 'images:' \
		'  - name: ghcr.io/ironlb/ironlb-ccm' '    newTag: $(VERSION)' \
		'  - name: ghcr.io/ironlb/ironlb-speaker' '    newTag: $(VERSION)' > $$overlay/kustomization.yaml; \
	$(KUBECTL) kustomize $$overlay > $(MANIFESTS_DIR)/ironlb.yaml; \
	$(HELM) package deploy/chart/ironlb --app-version $(VERSION) --destination $(MANIFESTS_DIR) >/dev/null; \
	ls -1 $(MANIFESTS_DIR)/*

# A real Kubernetes v1.37.2 cluster on this machine (test/cluster): kubeadm,
# containerd, the kubelet, kube-proxy (nftables) and CoreDNS on NODES
# machines (network, PID, mount and UTS namespaces on the rig's LAN, node-1
# the control plane), a router with FRR and a client behind it, IronLB
# installed from its images (make image, linux/amd64, tagged as deploy/
# names them) with kubectl apply --server-side -k deploy/ and configured
# for BGP (CLUSTER_CONFIG=l2: a layer-2 pool). It stays up, held by a
# daemon, until make cluster-down; bin/ironlb-cluster uses it (docs/development.md, "A
# real cluster"). About 1 min once the tools are built.
# CONTROL_PLANES=3: a highly available control plane, the kube-apiserver
# behind IronLB's own control-plane VIP 192.0.2.250:6443 (the speaker's
# control-plane static pod on each control-plane node; kubeadm init
# --upload-certs on node-1, kubeadm join --control-plane through the VIP
# on the others): make cluster CONTROL_PLANES=3 (NODES=4: and a worker).
NODES ?= 3
CONTROL_PLANES ?= 1
CLUSTER_CONFIG ?= bgp
APP_VERSION := $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' deploy/chart/ironlb/Chart.yaml)
.PHONY: cluster cluster-down cluster-image
cluster: cluster-tools $(TOOLS_BIN)/coredns cluster-image bin/ironlb-cluster ## A real kubeadm cluster with IronLB installed, kept up until make cluster-down.
	bin/ironlb-cluster up -nodes $(NODES) -control-planes $(CONTROL_PLANES) -config $(CLUSTER_CONFIG)
cluster-down: bin/ironlb-cluster ## Tear down what make cluster made.
	bin/ironlb-cluster down
cluster-image:
	$(MAKE) image PLATFORMS=linux/amd64 IMAGE_TAG=$(APP_VERSION)
.PHONY: bin/ironlb-cluster
bin/ironlb-cluster:
	$(GO) build -o $@ ./test/cluster/ironlb-cluster

# Kubernetes' own LoadBalancer e2e specs (every [Feature:LoadBalancer] spec
# of k8s.io/kubernetes v1.37.2, test/e2e/network, built as e2e.test by the
# module test/tools) against a fresh real cluster, in the BGP and the
# layer-2 configuration, from the client behind the router, with
# --provider=skeleton: one line per spec and "N passed, M failed, K skipped"
# per configuration; exits non-zero on any failure. In layer 2 one spec is
# skipped by name (test/conformance: "should target all nodes with
# endpoints" needs two nodes to take a VIP's traffic at once, and a
# layer-2 VIP has one). CONFORMANCE_FLAGS: -configs l2, -focus <regexp>,
# -keep. About 50 minutes (25 per configuration: the two rolling-update specs
# take 10 each), plus the builds.
CONFORMANCE_FLAGS ?=
.PHONY: conformance
conformance: cluster-tools $(TOOLS_BIN)/coredns cluster-image $(TOOLS_BIN)/e2e.test ## The upstream LoadBalancer e2e suite on a real cluster, BGP and layer 2.
	$(GO) run ./test/conformance $(CONFORMANCE_FLAGS)
$(TOOLS_BIN)/e2e.test: test/tools/go.mod test/tools/go.sum test/tools/e2e/e2e_test.go
	cd test/tools && CGO_ENABLED=0 $(GO) test -c -ldflags '$(KUBE_LDFLAGS)' -o $@ ./e2e
