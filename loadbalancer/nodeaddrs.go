package loadbalancer

import (
	"maps"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// Nodes' addresses are never handed out: a pool that contains one is
// marked Conflicting, and the allocator holds each as reserved by its Node.
// A Service that held such an address before keeps it (its Node gets a
// Warning Event).

// ReasonNodeAddressInUse is the Event on a Node whose address a Service
// holds.
const ReasonNodeAddressInUse = "NodeAddressInUse"

// reserveNodeAddresses reserves every Node's InternalIPs and ExternalIPs
// and releases those of Nodes that are gone.
func (b *Balancer) reserveNodeAddresses() {
	nodes, err := b.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	all := map[netip.Addr]string{}
	seen := map[string]bool{}
	for _, n := range nodes {
		addrs := nodeAddresses(n)
		for _, a := range addrs {
			all[a] = n.Name
		}
		seen[n.Name] = true
		for _, a := range b.alloc.Reserve(nodeOwner(n.Name), "Node "+n.Name, addrs) {
			h, _ := b.alloc.Holder(a)
			b.log.Error(nil, "A Service holds an address of a Node; it keeps it, but announcing it breaks the node", "node", n.Name, "address", a, "holders", h.Owners)
			b.recorder.Eventf(n, v1.EventTypeWarning, ReasonNodeAddressInUse,
				"Service %v holds this node's address %s as its load-balancer IP; give the Service another address", h.Owners, a)
		}
	}
	b.mu.Lock()
	gone := slices.Collect(maps.Keys(b.reserved))
	b.reserved = seen
	b.mu.Unlock()
	for _, name := range gone {
		if !seen[name] {
			b.alloc.Release(nodeOwner(name))
		}
	}
	b.pools.SetNodeAddresses(all)
}

func nodeOwner(name string) string { return "node/" + name }

// nodeAddresses returns a Node's InternalIPs and ExternalIPs.
func nodeAddresses(n *v1.Node) []netip.Addr {
	var out []netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// nodesChanged refreshes the reservations once allocations were restored
// (Run makes the first ones).
func (b *Balancer) nodesChanged() {
	if b.Ready() {
		b.reserveNodeAddresses()
	}
}

// nodeUpdated ignores Node updates that leave its addresses as they were
// (status heartbeats).
func (b *Balancer) nodeUpdated(old, cur any) {
	o, ok1 := old.(*v1.Node)
	c, ok2 := cur.(*v1.Node)
	if ok1 && ok2 && slices.Equal(nodeAddresses(o), nodeAddresses(c)) {
		return
	}
	b.nodesChanged()
}
