//go:build tools

// Package tools pins the Kubernetes commands built by this module: the test
// control plane (kube-apiserver, kubectl; etcd is ./etcd) and, for the
// real cluster (make cluster), kubeadm, kubelet, kube-proxy,
// kube-controller-manager, kube-scheduler and the e2e suite's agnhost.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubeadm"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/test/images/agnhost"
)
