package planner

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// syncNodes keeps one speaker session per Node with an address. The
// speaker of a deleted Node is told to withdraw everything before its
// session ends.
func (p *Planner) syncNodes() {
	nodes, err := p.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if a := nodeAddress(n); a.IsValid() {
			p.speakers.SetNode(n.Name, a)
			seen[n.Name] = true
		}
	}
	for _, n := range p.speakers.Nodes() {
		if !seen[n] {
			p.speakers.RemoveNode(n)
		}
	}
}

// nodeAddress is where the node's speaker listens: its first InternalIP.
func nodeAddress(n *v1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}
