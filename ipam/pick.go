package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// checkExplicit checks a specifically requested address: some pool that
// contains it must serve req (the requested pool, when req names one), and
// every pool that contains it must allow req's subject, so that a pool
// open to all that overlaps a restricted pool does not open the
// restricted pool's addresses. Pools are checked before holders, so that
// a request no pool allows learns nothing about who holds the address.
func (a *Allocator) checkExplicit(addr netip.Addr, req Request) (netip.Addr, bool, error) {
	k, f := keyOf(addr), FamilyOf(addr)
	var reasons, refusals []string
	var unknown error // a refusal for want of the namespace, kept typed
	usable := false
	leasedOnly := false // a Leased pool contains it and does not allow req
	for _, ps := range a.sorted {
		if !ps.contains(k, f) {
			continue
		}
		if refused := ps.refusal(req.Subject); refused != nil {
			refusals = append(refusals, fmt.Sprintf("pool %q does not allow %s: %v", ps.Name, req.Name, refused))
			if errors.Is(refused, ErrUnknownNamespace) {
				unknown = ErrUnknownNamespace
			}
			continue
		}
		switch {
		case req.Pool != "" && req.Pool != ps.Name && !ps.Leased:
			reasons = append(reasons, fmt.Sprintf("it is in pool %q, not the requested pool %q", ps.Name, req.Pool))
		case ps.Leased && !slices.Contains(req.Leased, addr):
			reasons = append(reasons, fmt.Sprintf("pool %q holds addresses the LAN's DHCP server leases; a Service gets one only as IronLB leases it from the server", ps.Name))
			leasedOnly = true
		case ps.Leased && req.Pool != ps.Name:
			reasons = append(reasons, fmt.Sprintf("it is in pool %q, not the requested pool %q", ps.Name, req.Pool))
			leasedOnly = true
		case ps.avoids(f) && k.buggy():
			reasons = append(reasons, fmt.Sprintf("pool %q avoids addresses ending in .0 and .255", ps.Name))
		default:
			usable = true
		}
	}
	switch {
	case leasedOnly:
		// A leased address goes only where its lease does, whatever
		// else contains it.
		reasons = append(reasons, refusals...)
	case len(refusals) > 0:
		if usable {
			refusals = append(refusals, "an address must be allowed by every IPPool that contains it")
		}
		reasons = refusals
	case usable:
		if h, held := a.holdings[k]; held {
			if te := h.compatible(addr, req, req.Owner); te != nil {
				return netip.Addr{}, false, fmt.Errorf("%w: %s cannot use %s: %w", ErrConflict, req.Name, addr, te)
			}
			return addr, true, nil
		}
		return addr, false, nil
	case len(reasons) == 0:
		reasons = append(reasons, "it is in no IP pool")
	}
	if unknown != nil {
		return netip.Addr{}, false, fmt.Errorf("%w: %s cannot use %s (%w): %s", ErrNoPool, req.Name, addr, unknown, strings.Join(reasons, "; "))
	}
	return netip.Addr{}, false, fmt.Errorf("%w: %s cannot use %s: %s", ErrNoPool, req.Name, addr, strings.Join(reasons, "; "))
}

// pick chooses an address of family f for req: a compatible address shared
// under req's key if one is allocatable in a pool req may draw from, else the
// lowest free address of the first pool (by priority) that has one. Either
// way only addresses that every pool containing them allows req's subject
// to use.
func (a *Allocator) pick(f Family, req Request) (netip.Addr, bool, error) {
	pools, err := a.candidates(f, req)
	if err != nil {
		return netip.Addr{}, false, err
	}
	if req.Sharing.Key != "" {
		var shared []key
		for k := range a.groups[req.Sharing.Key] {
			if h := a.holdings[k]; h.family == f && h.compatible(k.addr(f), req, req.Owner) == nil {
				shared = append(shared, k)
			}
		}
		slices.SortFunc(shared, keyCompare)
		for _, k := range shared {
			if a.refuser(k, f, req.Subject) != nil {
				continue
			}
			for _, ps := range pools {
				if ps.allocatable(k, f) {
					return k.addr(f), true, nil
				}
			}
		}
	}
	usage := make([]string, 0, len(pools))
	var barredBy []string
	for _, ps := range pools {
		barred := ps.barred(req.Subject)
		if k, ok := ps.lowestFreeOutside(f, barred); ok {
			return k.addr(f), false, nil
		}
		usage = append(usage, ps.usage(f))
		for _, o := range barred {
			if !slices.Contains(barredBy, o.Name) {
				barredBy = append(barredBy, o.Name)
			}
		}
	}
	why := strings.Join(usage, "; ")
	if len(barredBy) > 0 {
		slices.Sort(barredBy)
		why += fmt.Sprintf("; addresses also in IPPools that do not allow %s (%s) are not handed out to it", req.Name, strings.Join(barredBy, ", "))
	}
	return netip.Addr{}, false, fmt.Errorf("%w: no free %s address for %s (%s)", ErrExhausted, f, req.Name, why)
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
		case ps.refusal(req.Subject) != nil:
			return nil, fmt.Errorf("%w: pool %q does not allow %s: %w", ErrNoPool, req.Pool, req.Name, ps.refusal(req.Subject))
		case ps.Leased:
			return nil, fmt.Errorf("%w: pool %q requested by %s: %w", ErrNoPool, req.Pool, req.Name, ErrLeasedPool)
		case !ps.has(f):
			return nil, fmt.Errorf("%w: pool %q requested by %s has no %s addresses", ErrNoPool, req.Pool, req.Name, f)
		}
		return []*poolState{ps}, nil
	}
	var out []*poolState
	var refused []string
	for _, ps := range a.sorted {
		if !ps.AutoAssign || !ps.has(f) || ps.Leased {
			continue
		}
		err := ps.refusal(req.Subject)
		switch {
		case errors.Is(err, ErrUnknownNamespace):
			// Picking from another pool could hand out an address of
			// the wrong tenant's pool for good: wait for the namespace.
			return nil, fmt.Errorf("%w: %s gets no address while pool %q cannot tell whether it allows it: %w", ErrNoPool, req.Name, ps.Name, err)
		case err != nil:
			refused = append(refused, fmt.Sprintf("pool %q: %v", ps.Name, err))
		default:
			out = append(out, ps)
		}
	}
	if len(out) == 0 {
		why := ""
		if len(refused) > 0 {
			why = " (" + strings.Join(refused, "; ") + ")"
		}
		return nil, fmt.Errorf("%w: no auto-assign pool with %s addresses allows %s%s", ErrNoPool, f, req.Name, why)
	}
	return out, nil
}
