package ipam

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Restore records addresses an owner already holds (after a restart, from a
// Service's status), in or out of any pool. An address it cannot keep stays
// claimed by it (claims.go) until Unclaim says its status changed. Restore keeps what the owner
// holds unless it cannot: an address another owner holds is kept when the
// two share it under one sharing key (req.Sharing.Key or one of its
// Aliases), even if their ports or traffic policies clash (SharingConflicts
// reports those); an address held without a common key is not restored and
// is reported in the error, as are invalid addresses. The others are
// restored.
func (a *Allocator) Restore(req Request, addrs []netip.Addr) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var kept []netip.Addr
	var errs []error
	if cur := a.owners[req.Owner]; cur != nil {
		kept = cur.addrs
	}
	for _, addr := range addrs {
		if err := checkHeld(addr); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s lists %v", ErrInvalid, req.Name, err))
			continue
		}
		if slices.Contains(kept, addr) {
			continue
		}
		if slices.ContainsFunc(kept, func(x netip.Addr) bool { return FamilyOf(x) == FamilyOf(addr) }) {
			errs = append(errs, fmt.Errorf("%w: %s lists a second %s address %s", ErrInvalid, req.Name, FamilyOf(addr), addr))
			continue
		}
		k := keyOf(addr)
		if h, held := a.holdings[k]; held {
			if h.key == "" || (h.key != req.Sharing.Key && !slices.Contains(req.Sharing.Aliases, h.key)) {
				var why error = h.taken(addr, req, ReasonInUse, "it is in use", "it is held")
				if te := h.compatible(addr, req, req.Owner); te != nil {
					why = te
				}
				errs = append(errs, fmt.Errorf("%w: %s cannot keep %s: %w", ErrConflict, req.Name, addr, why))
				a.claim(k, req.Owner, req.Name)
				continue
			}
			h.members = append(h.members, memberOf(req))
		} else {
			a.hold(k, FamilyOf(addr), req)
		}
		kept = append(kept, addr)
	}
	if len(kept) > 0 {
		a.owners[req.Owner] = &ownerState{name: req.Name, addrs: kept}
	}
	return errors.Join(errs...)
}

// Restoration is what one owner held before a restart: its request and
// the addresses it held (a Service's status).
type Restoration struct {
	Req   Request
	Addrs []netip.Addr
	// SharedAs records, where known, the sharing key each address was
	// shared under when it was last recorded.
	SharedAs map[netip.Addr]string
}

// RestoreAll restores many owners at once, oldest first in rs, and returns
// each one's Restore error. When several owners claim one address but no
// longer agree on a sharing key (one changed its key while no CCM ran),
// the address stays with the owners whose key is the one it was recorded
// as shared under; without a record, with the largest group that still
// shares a key, and among equal groups with the one holding the oldest
// owner (an owner whose request stopped sharing yields to owners that
// still share). Only the owners outside that group lose the address: the
// ones whose request changed.
func (a *Allocator) RestoreAll(rs []Restoration) []error {
	claims := map[netip.Addr][]int{}
	for i, r := range rs {
		for _, addr := range r.Addrs {
			claims[addr] = append(claims[addr], i)
		}
	}
	lost := map[int][]netip.Addr{}
	for addr, idx := range claims {
		if len(idx) < 2 {
			continue
		}
		winners := recordedGroup(rs, idx, addr)
		if len(winners) == 0 {
			winners = sharingGroup(rs, idx)
		}
		for _, i := range idx {
			if !slices.Contains(winners, i) {
				lost[i] = append(lost[i], addr)
			}
		}
	}
	errs := make([]error, len(rs))
	for i, r := range rs {
		keep := slices.DeleteFunc(slices.Clone(r.Addrs), func(x netip.Addr) bool { return slices.Contains(lost[i], x) })
		errs[i] = a.Restore(r.Req, keep)
	}
	for i, addrs := range lost {
		errs[i] = errors.Join(errs[i], a.Restore(rs[i].Req, addrs))
	}
	return errs
}

// recordedGroup returns the claimants of addr whose sharing keys include
// the key addr was recorded as shared under (the most recorded one, when
// records disagree); none without a record.
func recordedGroup(rs []Restoration, claimants []int, addr netip.Addr) []int {
	votes := map[string]int{}
	for _, i := range claimants {
		if k := rs[i].SharedAs[addr]; k != "" {
			votes[k]++
		}
	}
	recorded := ""
	for _, k := range slices.Sorted(maps.Keys(votes)) {
		if recorded == "" || votes[k] > votes[recorded] {
			recorded = k
		}
	}
	if recorded == "" {
		return nil
	}
	var out []int
	for _, i := range claimants {
		sh := rs[i].Req.Sharing
		if sh.Key == recorded || slices.Contains(sh.Aliases, recorded) {
			out = append(out, i)
		}
	}
	return out
}

// sharingGroup returns the claimants (indexes into rs, oldest first) that
// keep a contested address: the largest group sharing one non-empty key,
// ties going to the group with the oldest member. Claimants without a key
// yield to any with one (they can only have held the address under a key
// they since dropped); when none has a key, the oldest keeps it.
func sharingGroup(rs []Restoration, claimants []int) []int {
	keys := map[string][]int{}
	for _, i := range claimants {
		sh := rs[i].Req.Sharing
		for _, k := range append([]string{sh.Key}, sh.Aliases...) {
			if k != "" && !slices.Contains(keys[k], i) {
				keys[k] = append(keys[k], i)
			}
		}
	}
	var best []int
	for _, k := range slices.Sorted(maps.Keys(keys)) {
		g := keys[k]
		if len(g) > len(best) || (len(g) == len(best) && len(g) > 0 && g[0] < best[0]) {
			best = g
		}
	}
	if len(best) == 0 {
		return claimants[:1]
	}
	return best
}
