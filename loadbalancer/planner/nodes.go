package planner

import (
	"net/netip"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// ReasonUnusableNodeAddress is the Warning Event on a Node whose InternalIP
// the CCM refuses to dial its speaker at.
const ReasonUnusableNodeAddress = "UnusableNodeAddress"

// syncNodes keeps one speaker session per Node with an address the CCM
// may dial (dialable). The speaker of a deleted Node is told to withdraw
// everything before its session ends.
func (p *Planner) syncNodes() {
	nodes, err := p.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	seen := map[string]bool{}
	refused := map[string]string{}
	for _, n := range nodes {
		a := nodeAddress(n)
		if !a.IsValid() {
			continue
		}
		if why := undialable(a); why != "" {
			refused[n.Name] = a.String() + ": " + why
			if p.refusedAddrs[n.Name] != refused[n.Name] {
				p.log.Info("Not dialling a node's speaker at its InternalIP", "node", n.Name, "address", a, "reason", why)
				if p.opts.Recorder != nil {
					p.opts.Recorder.Eventf(n, v1.EventTypeWarning, ReasonUnusableNodeAddress,
						"IronLB does not connect to this node's speaker at its InternalIP %s: %s; the node announces no VIP until its InternalIP is its own unicast address", a, why)
				}
			}
			continue
		}
		p.speakers.SetNode(n.Name, a)
		seen[n.Name] = true
	}
	p.refusedAddrs = refused
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
				return ip.Unmap()
			}
		}
	}
	return netip.Addr{}
}

// undialable says why the CCM must not dial a node's speaker at a, or ""
// when it may. A Node's status is written by its own kubelet: a
// compromised one could point the CCM at any address. What is left to
// bound is the CCM being used to reach addresses that are no node's: its
// own loopback, link-local (cloud metadata) services, broadcast and
// multicast.
//
// An address that a Service or another Node holds is dialled all the
// same: the speaker's certificate must name the node (pki, checked by
// speakers), so a kubelet that copies another node's InternalIP into its
// own status gets no session at that address and takes nothing from the
// node that has it, whichever of the two the CCM saw first; and a node
// whose address a Service kept (NodeAddressInUse) still announces the
// other VIPs.
func undialable(a netip.Addr) string {
	switch {
	case a.IsUnspecified():
		return "the unspecified address"
	case a.IsLoopback():
		return "a loopback address"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local address"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast address"
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "the broadcast address"
	}
	return ""
}
