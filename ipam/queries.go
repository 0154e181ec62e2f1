package ipam

import (
	"math/big"
	"net/netip"
	"slices"
)

// Lookup returns what the owner holds.
func (a *Allocator) Lookup(owner string) (Allocation, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		return Allocation{}, false
	}
	return a.allocation(o.addrs), true
}

func (a *Allocator) allocation(addrs []netip.Addr) Allocation {
	al := Allocation{Addresses: slices.Clone(addrs), Pools: make([]string, len(addrs))}
	for i, addr := range addrs {
		al.Pools[i] = a.poolOf(keyOf(addr), FamilyOf(addr))
	}
	return al
}

// Holder returns who holds addr.
func (a *Allocator) Holder(addr netip.Addr) (Holding, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.holdings[keyOf(addr)]
	if h == nil {
		return Holding{}, false
	}
	out := Holding{SharingKey: h.key}
	for _, m := range h.members {
		out.Owners = append(out.Owners, m.name)
	}
	slices.Sort(out.Owners)
	return out, true
}

// Holders returns the owners that hold addr, each with its ID
// (Request.Owner) and name (Request.Name), sorted by name and then ID;
// none for an address only a stale status claims.
func (a *Allocator) Holders(addr netip.Addr) []OwnerRef {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := a.holdings[keyOf(addr)]
	if h == nil {
		return nil
	}
	out := make([]OwnerRef, 0, len(h.members))
	for _, m := range h.members {
		if m.owner != staleOwner {
			out = append(out, OwnerRef{Owner: m.owner, Name: m.name})
		}
	}
	slices.SortFunc(out, compareOwnerRefs)
	return out
}

// PoolStats are a pool's address counts for one family.
type PoolStats struct {
	// Total counts allocatable addresses.
	Total *big.Int
	// Used counts allocatable addresses that are held.
	Used uint64
	// Free is Total - Used.
	Free *big.Int
}

// Stats returns a pool's counts for each family, or false if it does not
// exist.
func (a *Allocator) Stats(pool string) (v4, v6 PoolStats, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pools[pool]
	if ps == nil {
		return v4, v6, false
	}
	stats := func(fs famState) PoolStats {
		used := new(big.Int).SetUint64(fs.inUse)
		return PoolStats{Total: new(big.Int).Set(fs.total), Used: fs.inUse, Free: used.Sub(fs.total, used)}
	}
	return stats(ps.fam[0]), stats(ps.fam[1]), true
}

// PoolContaining returns the name of the first pool (by priority) whose
// ranges contain addr, or "" when none does.
func (a *Allocator) PoolContaining(addr netip.Addr) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.poolOf(keyOf(addr), FamilyOf(addr))
}

// Holds reports whether addr is held (allocated or reserved).
func (a *Allocator) Holds(addr netip.Addr) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdings[keyOf(addr)] != nil
}

// HoldsEach reports, for each of addrs, whether it is held (allocated
// or reserved). It takes the allocator's lock once for all of them, and
// does nothing else under it: a caller checking many addresses (a
// speaker's report) does not compete with Ensure once per address.
func (a *Allocator) HoldsEach(addrs []netip.Addr) []bool {
	held := make([]bool, len(addrs))
	keys := make([]key, len(addrs))
	for i, addr := range addrs {
		keys[i] = keyOf(addr)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for i, k := range keys {
		held[i] = a.holdings[k] != nil
	}
	return held
}

// Held is how many addresses are held.
func (a *Allocator) Held() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.holdings)
}
