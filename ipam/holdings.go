package ipam

import (
	"net/netip"
	"slices"
)

// hold records a new holding of a free address.
func (a *Allocator) hold(k key, f Family, req Request) {
	a.holdings[k] = &holding{
		family:  f,
		key:     req.Sharing.Key,
		policy:  req.Sharing.TrafficPolicy,
		members: []member{memberOf(req)},
	}
	if req.Sharing.Key != "" {
		g := a.groups[req.Sharing.Key]
		if g == nil {
			g = map[key]struct{}{}
			a.groups[req.Sharing.Key] = g
		}
		g[k] = struct{}{}
	}
	for _, ps := range a.pools {
		if ps.allocatable(k, f) {
			ps.take(k, f)
		}
	}
}

// updateMember refreshes the owner's ports and, for a sole holder, the
// holding's sharing key and traffic policy.
func (a *Allocator) updateMember(k key, req Request) {
	h := a.holdings[k]
	for i := range h.members {
		if h.members[i].owner == req.Owner {
			h.members[i] = memberOf(req)
		}
	}
	if len(h.members) == 1 && (h.key != req.Sharing.Key || h.policy != req.Sharing.TrafficPolicy) {
		a.ungroup(k, h.key)
		h.key, h.policy = req.Sharing.Key, req.Sharing.TrafficPolicy
		if h.key != "" {
			if a.groups[h.key] == nil {
				a.groups[h.key] = map[key]struct{}{}
			}
			a.groups[h.key][k] = struct{}{}
		}
	}
}

func (a *Allocator) ungroup(k key, sharingKey string) {
	if g := a.groups[sharingKey]; g != nil {
		delete(g, k)
		if len(g) == 0 {
			delete(a.groups, sharingKey)
		}
	}
}

// leave removes owner from the address's holders, freeing it when none is
// left.
func (a *Allocator) leave(k key, owner string) {
	h := a.holdings[k]
	if h == nil {
		return
	}
	h.members = slices.DeleteFunc(h.members, func(m member) bool { return m.owner == owner })
	if len(h.members) > 0 {
		return
	}
	if len(a.claims[k]) > 0 && owner != staleOwner {
		// A stale claim keeps it, exclusively, until its status changes.
		a.ungroup(k, h.key)
		h.key, h.policy = "", ""
		h.members = []member{a.standIn(k)}
		return
	}
	delete(a.holdings, k)
	a.ungroup(k, h.key)
	for _, ps := range a.pools {
		if ps.allocatable(k, h.family) {
			ps.give(k, h.family)
		}
	}
}

// Release frees everything the owner holds and returns those addresses.
func (a *Allocator) Release(owner string) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		a.unclaim(owner, nil)
		return nil
	}
	for _, addr := range o.addrs {
		a.leave(keyOf(addr), owner)
	}
	delete(a.owners, owner)
	a.unclaim(owner, nil)
	return o.addrs
}
