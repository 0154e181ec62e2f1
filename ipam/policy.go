package ipam

import (
	"cmp"
	"net/netip"
	"slices"
)

// Refusal is an address an owner holds that the pool it lies in no longer
// allows the owner to use (its selectors changed, or the owner's labels
// or namespace did). The owner keeps it: pool edits never take an address
// away.
type Refusal struct {
	Addr netip.Addr
	// Pool is the pool the address is counted in: the first, by
	// priority, that contains it.
	Pool string
	// Reason is why that pool refuses the owner.
	Reason error
}

// Refusals returns the addresses owner holds that lie in some pool but in
// none that allows subject. Addresses in no pool are left out: they are
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
		k, f := keyOf(addr), FamilyOf(addr)
		var first Refusal
		allowed := false
		for _, ps := range a.sorted {
			if !ps.contains(k, f) {
				continue
			}
			err := ps.refusal(subject)
			if err == nil {
				allowed = true
				break
			}
			if first.Reason == nil {
				first = Refusal{Addr: addr, Pool: ps.Name, Reason: err}
			}
		}
		if !allowed && first.Reason != nil {
			out = append(out, first)
		}
	}
	return out
}

// OwnerRef names an owner: its identity (Request.Owner) and its name in
// messages (Request.Name).
type OwnerRef struct {
	Owner, Name string
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
	slices.SortFunc(out, func(x, y OwnerRef) int {
		return cmp.Or(cmp.Compare(x.Name, y.Name), cmp.Compare(x.Owner, y.Owner))
	})
	return slices.Compact(out)
}
