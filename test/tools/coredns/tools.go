//go:build tools

// Package tools pins CoreDNS, the cluster DNS of the real-cluster rig
// (make cluster): kubeadm v1.37.2 installs registry.k8s.io/coredns/coredns
// v1.14.6, which the rig builds from the Go module proxy. A module of its
// own, so that CoreDNS's dependencies never meet Kubernetes' in test/tools.
package tools

import _ "github.com/coredns/coredns"
