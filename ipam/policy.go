package ipam

import (
	"cmp"
	"net/netip"
	"slices"
)

// Refusal is an address an owner holds that a pool it lies in no longer
// allows the owner to use (its selectors changed, the owner's labels or
// namespace did, or a pool that refuses the owner now overlaps it). The
// owner keeps it: pool edits never take an address away.
type Refusal struct {
	Addr netip.Addr
	// Pool is the first pool, by priority, that contains the address and
	// refuses the owner.
	Pool string
	// Reason is why that pool refuses the owner.
	Reason error
}

// Refusals returns the addresses owner holds that some pool containing
// them does not allow subject to use: an address must be allowed by every
// pool that contains it. Addresses in no pool are left out: they are
// outside every pool, which Allocation.Pools reports.
func (a *Allocator) Refusals(owner string, subject Subject) []Refusal {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		return nil
	}
	var out []Refusal
	for _, addr := range o.addrs {
		if ps := a.refuser(keyOf(addr), FamilyOf(addr), subject); ps != nil {
			out = append(out, Refusal{Addr: addr, Pool: ps.Name, Reason: ps.refusal(subject)})
		}
	}
	return out
}

// OwnerRef names an owner: its identity (Request.Owner) and its name in
// messages (Request.Name).
type OwnerRef struct {
	Owner, Name string
}

// compareOwnerRefs orders by name and then by ID.
func compareOwnerRefs(x, y OwnerRef) int {
	return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Owner, y.Owner))
}

// OwnersIn returns the owners of the addresses that lie in pool, sorted by
// name (reservations such as Nodes' addresses included); none when the
// pool does not exist. It looks at every held address, as SetPool does.
func (a *Allocator) OwnersIn(pool string) []OwnerRef {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pools[pool]
	if ps == nil {
		return nil
	}
	var out []OwnerRef
	for k, h := range a.holdings {
		if !ps.contains(k, h.family) {
			continue
		}
		for _, m := range h.members {
			if m.owner != staleOwner {
				out = append(out, OwnerRef{Owner: m.owner, Name: m.name})
			}
		}
	}
	slices.SortFunc(out, compareOwnerRefs)
	return slices.Compact(out)
}
