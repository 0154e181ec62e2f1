package ipam

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// A stale claim is an address an owner's status still lists although the
// owner could not keep it at a restore (another owner held it without a
// common sharing key). Until that status changes, the address is not handed
// to anyone else: when its holders release it, the claim keeps it, held
// exclusively by a stand-in member, so that two statuses never list it for
// unrelated owners and the next restore does not fight over it again.

// staleOwner is the owner of the stand-in member of an address that only
// stale claims hold.
const staleOwner = "\x00stale-claims"

// claim records that owner's status lists k although owner does not hold
// it; a.mu is held.
func (a *Allocator) claim(k key, owner, name string) {
	if a.claims[k] == nil {
		a.claims[k] = map[string]string{}
	}
	a.claims[k][owner] = name
	if !slices.Contains(a.claimsOf[owner], k) {
		a.claimsOf[owner] = append(a.claimsOf[owner], k)
	}
	a.renameStandIn(k)
}

// standIn returns the member that holds k for its stale claims.
func (a *Allocator) standIn(k key) member {
	names := slices.Sorted(maps.Values(a.claims[k]))
	return member{owner: staleOwner, name: "the status of " + strings.Join(names, ", ") + " (it lost the address at a restart; freed once that status changes)"}
}

// renameStandIn keeps the stand-in's name in step with the claims.
func (a *Allocator) renameStandIn(k key) {
	if h := a.holdings[k]; h != nil && len(h.members) == 1 && h.members[0].owner == staleOwner && len(a.claims[k]) > 0 {
		h.members[0] = a.standIn(k)
	}
}

// Unclaim tells the allocator which addresses owner's status lists now:
// its stale claims on any other address end, and an address that only
// stale claims held is free again once none is left. Call it whenever an
// owner's status changes and when the owner is deleted (keep nil).
func (a *Allocator) Unclaim(owner string, keep []netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.unclaim(owner, keep)
}

func (a *Allocator) unclaim(owner string, keep []netip.Addr) {
	ks := a.claimsOf[owner]
	if len(ks) == 0 {
		return
	}
	var left []key
	for _, k := range ks {
		if slices.ContainsFunc(keep, func(x netip.Addr) bool { return keyOf(x) == k }) {
			left = append(left, k)
			continue
		}
		delete(a.claims[k], owner)
		if len(a.claims[k]) > 0 {
			a.renameStandIn(k)
			continue
		}
		delete(a.claims, k)
		if h := a.holdings[k]; h != nil && len(h.members) == 1 && h.members[0].owner == staleOwner {
			a.leave(k, staleOwner)
		}
	}
	if len(left) == 0 {
		delete(a.claimsOf, owner)
	} else {
		a.claimsOf[owner] = left
	}
}

// HasClaims reports whether owner has stale claims.
func (a *Allocator) HasClaims(owner string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.claimsOf[owner]) > 0
}
