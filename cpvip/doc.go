// Package cpvip holds the kube-apiserver's own virtual IP for a cluster's
// control-plane nodes: the control-plane mode of ironlb-speaker, run as a
// static pod on every control-plane node from before kubeadm init on.
//
// It needs no Kubernetes API. In layer 2 the control-plane speakers elect
// one holder among the nodes whose local kube-apiserver is ready, over
// authenticated UDP messages on the LAN; in BGP every node whose
// kube-apiserver is ready advertises the VIP. The node that serves the VIP
// has it as a local address (address.go), so the kernel delivers its
// packets to the local kube-apiserver.
package cpvip
