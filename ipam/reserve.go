package ipam

import (
	"net/netip"
	"slices"
)

// Reserve records the addresses owner holds outside the allocator (a
// Node's InternalIPs), named name in messages ("Node node-a"), so that no
// Service is given them. It replaces what owner reserved before, and
// returns the addresses it could not reserve because Services hold them
// already (they keep them; the caller reports the clash).
func (a *Allocator) Reserve(owner, name string, addrs []netip.Addr) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	refused, _ := a.reserve(owner, name, addrs, ReasonReserved, false)
	return refused
}

// ReserveForeign records the addresses that a Service IronLB does not
// serve lists in its status (another load balancer gave them), named name
// in messages, so that no Service of IronLB's is given them. Like Reserve
// it replaces what owner reserved before and returns the addresses IronLB's
// Services hold already (they keep them).
func (a *Allocator) ReserveForeign(owner, name string, addrs []netip.Addr) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	refused, _ := a.reserve(owner, name, addrs, ReasonOtherLoadBalancer, false)
	return refused
}

// Eviction is an address ReserveControlPlane took from the Services that
// held it.
type Eviction struct {
	Addr netip.Addr
	// Owners are the owners that lost it and Names their names, in the
	// same order.
	Owners, Names []string
}

// ReserveControlPlane reserves addrs, the cluster's control-plane VIPs
// (the kube-apiserver's own address), for owner, named name in messages
// ("control-plane VIP from the cloud config"). It replaces what owner
// reserved before. Unlike Reserve it takes an address from the Services
// that hold it, and returns them: a Service whose VIP is the API server's
// would have IronLB answer for the API server and cut the cluster off from
// it, so the control-plane VIP wins over keeping a Service's address. An
// address another owner reserved (a Node's) stays with it: no Service gets
// it either way.
func (a *Allocator) ReserveControlPlane(owner, name string, addrs []netip.Addr) []Eviction {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, evicted := a.reserve(owner, name, addrs, ReasonControlPlaneVIP, true)
	return evicted
}

// reserve holds addrs for owner as reserved for reason; a.mu is held. An
// address Services hold is refused, or with evict taken from them; one
// another owner reserved is refused.
func (a *Allocator) reserve(owner, name string, addrs []netip.Addr, reason TakenReason, evict bool) (refused []netip.Addr, evicted []Eviction) {
	var kept []netip.Addr
	if cur := a.owners[owner]; cur != nil {
		for _, old := range cur.addrs {
			if slices.Contains(addrs, old) {
				kept = append(kept, old)
			} else {
				a.leave(keyOf(old), owner)
			}
		}
	}
	mine := member{owner: owner, name: name, reserved: reason}
	for _, addr := range addrs {
		if slices.Contains(kept, addr) || checkHeld(addr) != nil {
			continue
		}
		k := keyOf(addr)
		if h, held := a.holdings[k]; held {
			if !evict || slices.ContainsFunc(h.members, func(m member) bool { return m.reserved != "" }) {
				refused = append(refused, addr)
				continue
			}
			if ev := a.evict(k, addr); len(ev.Owners) > 0 {
				evicted = append(evicted, ev)
			}
			if h, held := a.holdings[k]; held {
				// Only stale claims hold it now (claims.go): their claims
				// stay, the reservation holds it in their stand-in's stead.
				h.key, h.policy = "", ""
				h.members = []member{mine}
				kept = append(kept, addr)
				continue
			}
		}
		a.hold(k, FamilyOf(addr), Request{Owner: owner, Name: name})
		a.holdings[k].members[0] = mine
		kept = append(kept, addr)
	}
	if len(kept) == 0 {
		delete(a.owners, owner)
	} else {
		a.owners[owner] = &ownerState{name: name, addrs: kept}
	}
	return refused, evicted
}

// evict takes the address at k from every owner that holds it (not from
// the stand-in of stale claims); a.mu is held.
func (a *Allocator) evict(k key, addr netip.Addr) Eviction {
	ev := Eviction{Addr: addr}
	for _, m := range slices.Clone(a.holdings[k].members) {
		if m.owner == staleOwner {
			continue
		}
		ev.Owners = append(ev.Owners, m.owner)
		ev.Names = append(ev.Names, m.name)
		if o := a.owners[m.owner]; o != nil {
			o.addrs = slices.DeleteFunc(slices.Clone(o.addrs), func(x netip.Addr) bool { return x == addr })
			if len(o.addrs) == 0 {
				delete(a.owners, m.owner)
			}
		}
		a.leave(k, m.owner)
	}
	return ev
}
