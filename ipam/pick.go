package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// checkExplicit checks a specifically requested address.
func (a *Allocator) checkExplicit(addr netip.Addr, req Request) (netip.Addr, bool, error) {
	k, f := keyOf(addr), FamilyOf(addr)
	var reasons []string
	inPool := false
	for _, ps := range a.sorted {
		if !ps.contains(k, f) {
			continue
		}
		switch {
		case req.Pool != "" && req.Pool != ps.Name:
			reasons = append(reasons, fmt.Sprintf("it is in pool %q, not the requested pool %q", ps.Name, req.Pool))
		case !ps.allows(req.Subject):
			reasons = append(reasons, fmt.Sprintf("pool %q does not allow %s", ps.Name, req.Name))
		case ps.avoids(f) && k.buggy():
			reasons = append(reasons, fmt.Sprintf("pool %q avoids addresses ending in .0 and .255", ps.Name))
		default:
			inPool = true
		}
		if inPool {
			break
		}
	}
	if !inPool {
		if len(reasons) == 0 {
			reasons = append(reasons, "it is in no IP pool")
		}
		return netip.Addr{}, false, fmt.Errorf("%w: %s cannot use %s: %s", ErrNoPool, req.Name, addr, strings.Join(reasons, "; "))
	}
	if h, held := a.holdings[k]; held {
		if err := h.compatible(req, req.Owner); err != nil {
			return netip.Addr{}, false, fmt.Errorf("%w: %s cannot use %s: %v", ErrConflict, req.Name, addr, err)
		}
		return addr, true, nil
	}
	return addr, false, nil
}

// pick chooses an address of family f for req: a compatible address shared
// under req's key if one is allocatable in a pool req may draw from, else the
// lowest free address of the first pool (by priority) that has one.
func (a *Allocator) pick(f Family, req Request) (netip.Addr, bool, error) {
	pools, err := a.candidates(f, req)
	if err != nil {
		return netip.Addr{}, false, err
	}
	if req.Sharing.Key != "" {
		var shared []key
		for k := range a.groups[req.Sharing.Key] {
			if h := a.holdings[k]; h.family == f && h.compatible(req, req.Owner) == nil {
				shared = append(shared, k)
			}
		}
		slices.SortFunc(shared, keyCompare)
		for _, k := range shared {
			for _, ps := range pools {
				if ps.allocatable(k, f) {
					return k.addr(f), true, nil
				}
			}
		}
	}
	usage := make([]string, 0, len(pools))
	for _, ps := range pools {
		if k, ok := ps.lowestFree(f); ok {
			return k.addr(f), false, nil
		}
		usage = append(usage, ps.usage(f))
	}
	return netip.Addr{}, false, fmt.Errorf("%w: no free %s address for %s (%s)", ErrExhausted, f, req.Name, strings.Join(usage, "; "))
}

// candidates returns the pools req may draw new addresses of family f from.
func (a *Allocator) candidates(f Family, req Request) ([]*poolState, error) {
	if len(a.pools) == 0 {
		return nil, fmt.Errorf("%w: %s cannot get an address", ErrNoPools, req.Name)
	}
	if req.Pool != "" {
		ps, ok := a.pools[req.Pool]
		switch {
		case !ok:
			return nil, fmt.Errorf("%w: pool %q requested by %s does not exist", ErrNoPool, req.Pool, req.Name)
		case !ps.allows(req.Subject):
			return nil, fmt.Errorf("%w: pool %q does not allow %s (see its spec.serviceAllocation)", ErrNoPool, req.Pool, req.Name)
		case !ps.has(f):
			return nil, fmt.Errorf("%w: pool %q requested by %s has no %s addresses", ErrNoPool, req.Pool, req.Name, f)
		}
		return []*poolState{ps}, nil
	}
	var out []*poolState
	for _, ps := range a.sorted {
		if ps.AutoAssign && ps.allows(req.Subject) && ps.has(f) {
			out = append(out, ps)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: no auto-assign pool with %s addresses allows %s", ErrNoPool, f, req.Name)
	}
	return out, nil
}
