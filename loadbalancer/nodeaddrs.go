package loadbalancer

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/capiipam"
)

// Nodes' addresses are never handed out: a Service given a node's own
// address would have IronLB answer for the node (invariant 10) and break
// it. A pool that contains one is marked Conflicting, and the allocator
// holds each as reserved by its Node. A Service that held such an address
// before keeps it (its Node gets a Warning Event).
//
// What a Node reserves is bounded, because a Node's status is written by
// its own kubelet: a compromised one could list any addresses to take them
// out of every pool. IronLB reserves only what its InstancesV2 derives and
// keeps for the node: its first InternalIP of each family (the kubelet's
// --node-ip, one per family). ExternalIPs (copied from the status, never
// derived) and further InternalIPs are not reserved; those inside a pool
// get a Warning Event on the Node, so that an administrator whose node
// really holds one excludes it from the pool.

// Two Nodes may list the same first InternalIP: a kubelet can copy
// another node's address into its own status. The address is reserved
// for the Node that was created first (creationTimestamp, then name),
// whatever order the Nodes are seen in, so the copier (a newer Node)
// never holds the reservation, also not after a leader change; both get
// a Warning Event naming the other. The planner still dials each at the
// address: the speaker there proves which node it is (its certificate).

// ReasonNodeAddressInUse is the Event on a Node whose address a Service
// holds.
const ReasonNodeAddressInUse = "NodeAddressInUse"

// ReasonNodeAddressNotReserved is the Warning Event on a Node that lists
// addresses inside a pool that IronLB does not reserve for it.
const ReasonNodeAddressNotReserved = "NodeAddressNotReserved"

// ReasonDuplicateNodeAddress is the Warning Event on Nodes that list the
// same first InternalIP, naming the Node it is reserved for and the ones
// that copied it.
const ReasonDuplicateNodeAddress = "DuplicateNodeAddress"

// maxListedAddresses bounds how many addresses one Event names.
const maxListedAddresses = 5

// reserveNodeAddresses reserves every Node's trusted addresses
// (reservedAddresses), each for the oldest Node listing it, and releases
// those of Nodes that are gone.
func (b *Balancer) reserveNodeAddresses() {
	nodes, err := b.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	slices.SortFunc(nodes, olderNode)
	first := map[netip.Addr]*v1.Node{} // the oldest Node listing each address
	for _, n := range nodes {
		for _, a := range reservedAddresses(n) {
			if _, ok := first[a]; !ok {
				first[a] = n
			}
		}
	}
	all := map[netip.Addr]string{}
	for a, n := range first {
		all[a] = n.Name
	}
	dups := duplicates(nodes, first)
	seen := map[string]bool{}
	unreserved := map[string]string{}
	var warn []*v1.Node
	// Newest first: a copier lets go of an address before the Node it
	// belongs to reserves it (Reserve keeps what an owner held before).
	for _, n := range slices.Backward(nodes) {
		listed := reservedAddresses(n)
		var addrs []netip.Addr
		for _, a := range listed {
			if first[a] == n {
				addrs = append(addrs, a)
			}
		}
		seen[n.Name] = true
		for _, a := range b.alloc.Reserve(nodeOwner(n.Name), "Node "+n.Name, addrs) {
			h, _ := b.alloc.Holder(a)
			if hs := b.alloc.Holders(a); len(hs) > 0 && !slices.ContainsFunc(hs, notAClaim) {
				// A Cluster API machine's own address, claimed from an
				// IronLB pool: the claim keeps it from Services already.
				b.log.V(2).Info("A Node's address is its machine's Cluster API claim", "node", n.Name, "address", a, "claims", h.Owners)
				continue
			}
			b.log.Error(nil, "A Service holds an address of a Node; it keeps it, but announcing it breaks the node", "node", n.Name, "address", a, "holders", h.Owners)
			b.recorder.Eventf(n, v1.EventTypeWarning, ReasonNodeAddressInUse,
				"Service %v holds this node's address %s as its load-balancer IP; give the Service another address", h.Owners, a)
		}
		if msg := b.notReserved(n, listed); msg != "" {
			unreserved[n.Name] = msg
			warn = append(warn, n)
		}
	}
	b.mu.Lock()
	gone := slices.Collect(maps.Keys(b.reserved))
	b.reserved = seen
	prev := b.unreserved
	b.unreserved = unreserved
	prevDups := b.duplicated
	b.duplicated = dups
	b.mu.Unlock()
	for _, n := range warn {
		if msg := unreserved[n.Name]; prev[n.Name] != msg {
			b.log.Info("A Node lists addresses inside pools that IronLB does not reserve for it", "node", n.Name, "addresses", msg)
			b.recorder.Eventf(n, v1.EventTypeWarning, ReasonNodeAddressNotReserved,
				"This node's status lists %s, inside IronLB's pools; IronLB reserves only a node's first InternalIP of each family (its --node-ip), so these may be given to Services: if this node really holds one, exclude it from the pool", msg)
		}
	}
	for _, n := range nodes {
		if msg := dups[n.Name]; msg != "" && prevDups[n.Name] != msg {
			b.log.Info("Nodes list the same InternalIP; it is reserved for the oldest", "node", n.Name, "duplicates", msg)
			b.recorder.Eventf(n, v1.EventTypeWarning, ReasonDuplicateNodeAddress,
				"Nodes list the same InternalIP: %s; IronLB reserves it for the Node created first, and the speaker at it serves only the node its certificate names: a Node that copied another's address announces nothing there (is its kubelet compromised?)", msg)
		}
	}
	for _, name := range gone {
		if !seen[name] {
			b.alloc.Release(nodeOwner(name))
		}
	}
	b.pools.SetNodeAddresses(all)
}

// olderNode orders Nodes by creation, then by name.
func olderNode(a, b *v1.Node) int {
	if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
		return c
	}
	return strings.Compare(a.Name, b.Name)
}

// duplicates describes, per Node, the addresses it shares with other
// Nodes: "192.0.2.10 (reserved for Node node-a; also listed by Node
// node-evil)", on the oldest and on each copier. nodes are oldest first;
// first is the oldest Node listing each address.
func duplicates(nodes []*v1.Node, first map[netip.Addr]*v1.Node) map[string]string {
	copiers := map[netip.Addr][]string{}
	for _, n := range nodes {
		for _, a := range reservedAddresses(n) {
			if first[a] != n {
				copiers[a] = append(copiers[a], n.Name)
			}
		}
	}
	out := map[string]string{}
	for _, a := range slices.SortedFunc(maps.Keys(copiers), netip.Addr.Compare) {
		names := copiers[a]
		var listed []string
		for i, name := range names {
			if i == maxListedAddresses {
				listed = append(listed, fmt.Sprintf("and %d more", len(names)-i))
				break
			}
			listed = append(listed, "Node "+name)
		}
		msg := fmt.Sprintf("%s (reserved for Node %s; also listed by %s)", a, first[a].Name, strings.Join(listed, ", "))
		for _, name := range append([]string{first[a].Name}, names...) {
			if out[name] != "" {
				out[name] += ", "
			}
			out[name] += msg
		}
	}
	return out
}

// notReserved describes n's addresses inside a pool that are not among
// reserved ("" for none), naming at most maxListedAddresses of them.
func (b *Balancer) notReserved(n *v1.Node, reserved []netip.Addr) string {
	var listed []string
	count := 0
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP && a.Type != v1.NodeExternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil || slices.Contains(reserved, ip.Unmap()) {
			continue
		}
		pool := b.alloc.PoolContaining(ip.Unmap())
		if pool == "" {
			continue // outside every pool: reserving it would change nothing
		}
		if count++; count <= maxListedAddresses {
			listed = append(listed, fmt.Sprintf("%s %s (pool %s)", a.Type, ip.Unmap(), pool))
		}
	}
	if count > maxListedAddresses {
		listed = append(listed, fmt.Sprintf("and %d more", count-maxListedAddresses))
	}
	return strings.Join(listed, ", ")
}

// notAClaim reports whether an owner is anything but a Cluster API claim.
func notAClaim(o ipam.OwnerRef) bool { return !capiipam.IsClaimOwner(o.Owner) }

// nodeOwner is the allocator owner of a Node's reservation.
func nodeOwner(name string) string { return "node/" + name }

// reservedAddresses returns the addresses IronLB reserves for a Node: its
// first InternalIP of each family (IronLB's InstancesV2 sets one per
// family, from the kubelet's --node-ip), at most two.
func reservedAddresses(n *v1.Node) []netip.Addr {
	var v4, v6 netip.Addr
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		if err != nil {
			continue
		}
		ip = ip.Unmap()
		switch {
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	var out []netip.Addr
	for _, ip := range []netip.Addr{v4, v6} {
		if ip.IsValid() {
			out = append(out, ip)
		}
	}
	return out
}

// nodeAddresses returns a Node's InternalIPs and ExternalIPs, the
// addresses whose change is worth a new look.
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
		b.reserveControlPlane() // a Node may have let go of a control-plane VIP
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
