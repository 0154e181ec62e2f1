package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"sync"

	"github.com/google/btree"
)

// Errors callers tell apart with errors.Is.
var (
	// ErrNoPools means no pool exists at all.
	ErrNoPools = errors.New("no IP pools configured")
	// ErrNoPool means no pool may serve the request.
	ErrNoPool = errors.New("no usable IP pool")
	// ErrExhausted means the pools that may serve the request are full.
	ErrExhausted = errors.New("IP pool exhausted")
	// ErrConflict means a requested address is held by someone it cannot be
	// shared with.
	ErrConflict = errors.New("address conflict")
	// ErrInvalid means the request contradicts itself.
	ErrInvalid = errors.New("invalid request")
	// ErrUnknownNamespace means a pool that selects by namespace cannot
	// tell whether it allows a subject whose namespace is unknown
	// (Subject.NamespaceErr); it refuses it.
	ErrUnknownNamespace = errors.New("namespace unknown")
	// ErrLeasedPool means a pool's addresses are leased from a DHCP
	// server: the allocator does not pick them (see Pool.Leased).
	ErrLeasedPool = errors.New("its addresses are leased from the LAN's DHCP server, not picked by IronLB")
)

// Allocator hands out addresses from pools. It is safe for concurrent use.
// Every operation on one address costs O(log n) in the number of allocated
// addresses, and memory grows with allocated addresses and ranges, never
// with the size of pools.
type Allocator struct {
	mu       sync.Mutex
	pools    map[string]*poolState
	holdings map[key]*holding
	owners   map[string]*ownerState
	groups   map[string]map[key]struct{} // sharing key -> addresses
	claims   map[key]map[string]string   // stale claims (claims.go): address -> owner -> name
	claimsOf map[string][]key            // owner -> addresses it claims
	sorted   []*poolState                // pools by priority, then name
}

type poolState struct {
	Pool
	fam [2]famState // by famIndex
	// overlaps are the other pools that share addresses with this one
	// (overlap.go).
	overlaps []*poolState
}

type famState struct {
	free  *btree.BTreeG[interval] // free, allocatable addresses
	total *big.Int                // allocatable addresses
	inUse uint64                  // allocatable addresses held by anyone
}

type interval struct{ first, last key }

type holding struct {
	family  Family
	key     string
	policy  string
	members []member
}

type member struct {
	owner, name string
	ports       []Port
	policy      string
	namespace   string      // the owner's
	namespaces  []string    // Sharing.Namespaces
	selector    string      // Sharing.Selector
	reserved    TakenReason // why it is held by Reserve or ReserveControlPlane, not by a Service ("": a Service's)
}

// memberOf is req as a member of a holding.
func memberOf(req Request) member {
	return member{
		owner: req.Owner, name: req.Name, ports: slices.Clone(req.Sharing.Ports), policy: req.Sharing.TrafficPolicy,
		namespace: req.Subject.Namespace, namespaces: slices.Clone(req.Sharing.Namespaces), selector: req.Sharing.Selector,
	}
}

type ownerState struct {
	name  string
	addrs []netip.Addr
}

// New returns an empty Allocator.
func New() *Allocator {
	return &Allocator{
		pools:    map[string]*poolState{},
		holdings: map[key]*holding{},
		owners:   map[string]*ownerState{},
		groups:   map[string]map[key]struct{}{},
		claims:   map[key]map[string]string{},
		claimsOf: map[string][]key{},
	}
}

// Ensure gives the owner the addresses the request asks for and returns
// them. Calling it again with the same request returns the same addresses;
// an address the owner holds is kept unless the request now rules it out
// (other specific addresses, another pool, another sharing key, a family no
// longer wanted). On error nothing changes.
func (a *Allocator) Ensure(req Request) (Allocation, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	families, err := req.families()
	if err != nil {
		return Allocation{}, err
	}
	cur := a.owners[req.Owner]
	type choice struct {
		addr netip.Addr
		keep bool
		join bool
	}
	var plan []choice
	var errs []error
	for _, f := range families {
		explicit := req.addressFor(f)
		if cur != nil {
			if have := cur.addrFor(f); have.IsValid() {
				keep, err := a.keeps(have, explicit, req)
				if err != nil {
					return Allocation{}, err
				}
				if keep {
					plan = append(plan, choice{addr: have, keep: true})
					continue
				}
			}
		}
		var c choice
		var err error
		if explicit.IsValid() {
			c.addr, c.join, err = a.checkExplicit(explicit, req)
		} else {
			c.addr, c.join, err = a.pick(f, req)
		}
		if err != nil {
			if req.RequireAll || len(families) == 1 {
				return Allocation{}, err
			}
			errs = append(errs, err)
			continue
		}
		plan = append(plan, c)
	}
	if len(plan) == 0 {
		return Allocation{}, errors.Join(errs...)
	}

	// Commit: take new addresses, then release those no longer wanted.
	var next []netip.Addr
	for _, c := range plan {
		k := keyOf(c.addr)
		switch {
		case c.keep:
			a.updateMember(k, req)
		case c.join:
			h := a.holdings[k]
			h.members = append(h.members, memberOf(req))
		default:
			a.hold(k, FamilyOf(c.addr), req)
		}
		next = append(next, c.addr)
	}
	if cur != nil {
		for _, old := range cur.addrs {
			if !slices.Contains(next, old) {
				a.leave(keyOf(old), req.Owner)
			}
		}
	}
	a.owners[req.Owner] = &ownerState{name: req.Name, addrs: next}
	al := a.allocation(next)
	for _, err := range errs {
		al.Warnings = append(al.Warnings, err.Error())
		al.Taken = append(al.Taken, TakenErrors(err)...)
	}
	return al, nil
}

// families returns the families the request will be served in.
func (req Request) families() ([]Family, error) {
	if len(req.Families) == 0 || len(req.Families) > 2 || (len(req.Families) == 2 && req.Families[0] == req.Families[1]) ||
		slices.ContainsFunc(req.Families, func(f Family) bool { return f != IPv4 && f != IPv6 }) {
		return nil, fmt.Errorf("%w: %s asks for families %v", ErrInvalid, req.Name, req.Families)
	}
	if len(req.Addresses) == 0 {
		return req.Families, nil
	}
	var fams []Family
	for _, addr := range req.Addresses {
		if err := checkHeld(addr); err != nil {
			return nil, fmt.Errorf("%w: %s requests %v", ErrInvalid, req.Name, err)
		}
		f := FamilyOf(addr)
		if !slices.Contains(req.Families, f) {
			return nil, fmt.Errorf("%w: requested address %s is %s, but %s has ipFamilies %v", ErrInvalid, addr, f, req.Name, req.Families)
		}
		if slices.Contains(fams, f) {
			return nil, fmt.Errorf("%w: %s requests more than one %s address", ErrInvalid, req.Name, f)
		}
		fams = append(fams, f)
	}
	if req.RequireAll && len(fams) < len(req.Families) {
		return nil, fmt.Errorf("%w: %s requires %v but requests addresses only for %v", ErrInvalid, req.Name, req.Families, fams)
	}
	// Serve in the Service's family order.
	slices.SortFunc(fams, func(x, y Family) int {
		return slices.Index(req.Families, x) - slices.Index(req.Families, y)
	})
	return fams, nil
}

// checkHeld checks an address a caller wants held: an IPv4-mapped address
// would share its key with the IPv4 address, and a zone means nothing here.
func checkHeld(a netip.Addr) error {
	if !a.IsValid() {
		return fmt.Errorf("an invalid (zero) address")
	}
	return checkAddr(a)
}

func (req Request) addressFor(f Family) netip.Addr {
	for _, addr := range req.Addresses {
		if FamilyOf(addr) == f {
			return addr
		}
	}
	return netip.Addr{}
}

func (o *ownerState) addrFor(f Family) netip.Addr {
	for _, addr := range o.addrs {
		if FamilyOf(addr) == f {
			return addr
		}
	}
	return netip.Addr{}
}

// keeps decides whether the owner keeps an address it holds.
func (a *Allocator) keeps(have, explicit netip.Addr, req Request) (bool, error) {
	if explicit.IsValid() && explicit != have {
		return false, nil
	}
	k, f := keyOf(have), FamilyOf(have)
	if req.Pool != "" {
		if ps, ok := a.pools[req.Pool]; !ok || !ps.contains(k, f) {
			// Moved to another pool by the user, unless the address is in
			// no pool at all (its pool was deleted or shrunk): then keep it.
			if a.poolOf(k, f) != "" {
				return false, nil
			}
		}
	}
	h := a.holdings[k]
	if len(h.members) == 1 {
		return true, nil
	}
	if req.Sharing.Key != h.key {
		return false, nil // the user changed the sharing key: leave the group
	}
	if te := h.compatibleMember(have, req); te != nil {
		return false, fmt.Errorf("%w: %s cannot keep sharing %s: %w", ErrConflict, req.Name, have, te)
	}
	return true, nil
}
