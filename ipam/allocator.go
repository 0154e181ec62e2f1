package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net/netip"
	"slices"
	"strings"
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
)

// Subject describes who asks for addresses, for pools' selectors.
type Subject struct {
	Namespace       string
	NamespaceLabels map[string]string
	Labels          map[string]string
}

// Pool is a set of addresses and the rules for handing them out.
type Pool struct {
	Name string
	// Ranges come from ParseRanges: sorted and merged.
	Ranges []Range
	// AutoAssign lets requests that name no pool draw from this one.
	AutoAssign bool
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255.
	AvoidBuggyIPs bool
	// Priority orders auto-assign pools: higher first, then by name.
	Priority int32
	// Allows reports whether subject may use the pool; nil allows everyone.
	Allows func(Subject) bool
}

// Port is a protocol and port a Service listens on, for sharing checks.
type Port struct {
	Protocol string
	Port     int32
}

// Sharing says with whom an owner may share an address: owners with the same
// non-empty Key, the same TrafficPolicy and no Port in common.
type Sharing struct {
	Key           string
	TrafficPolicy string
	Ports         []Port
	// Aliases are more keys the owner shares under, for Restore only: the
	// spellings of a Service's sharing annotations when they disagree, so
	// that a Service whose annotations stopped parsing keeps its address.
	Aliases []string
}

// Request asks for the addresses of one owner (a Service).
type Request struct {
	// Owner identifies the owner for good (a Service UID): Ensure is
	// idempotent per Owner.
	Owner string
	// Name is shown in messages ("namespace/name").
	Name    string
	Subject Subject
	// Pool, when set, is the only pool to draw from.
	Pool string
	// Addresses are specific addresses wanted, at most one per family.
	Addresses []netip.Addr
	// Families are the families wanted, in order (a Service's ipFamilies).
	Families []Family
	// RequireAll fails the request unless every family gets an address
	// (SingleStack, RequireDualStack); otherwise (PreferDualStack) one is
	// enough.
	RequireAll bool
	Sharing    Sharing
}

// Allocation is what an owner holds.
type Allocation struct {
	// Addresses in the order of the request's families.
	Addresses []netip.Addr
	// Pools holds, per address, the pool it lies in now ("" if none).
	Pools []string
	// Warnings explain families of a PreferDualStack request that got no
	// address.
	Warnings []string
}

// Holding describes who holds an address.
type Holding struct {
	// Owners are the owners' names ("namespace/name"), sorted.
	Owners []string
	// SharingKey is the key they share under, "" for an exclusive address.
	SharingKey string
}

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
	sorted   []*poolState                // pools by priority, then name
}

type poolState struct {
	Pool
	fam [2]famState // by famIndex
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
	}
}

func famIndex(f Family) int {
	if f == IPv4 {
		return 0
	}
	return 1
}

func lessInterval(a, b interval) bool { return a.first.less(b.first) }

// SetPool adds a pool or replaces the one with the same name. Addresses held
// already stay held, whether or not the new ranges contain them.
func (a *Allocator) SetPool(p Pool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := &poolState{Pool: p}
	ps.Ranges = slices.Clone(p.Ranges)
	for i := range ps.fam {
		ps.fam[i] = famState{free: btree.NewG(16, lessInterval), total: new(big.Int)}
	}
	for _, r := range ps.Ranges {
		fs := &ps.fam[famIndex(r.Family())]
		first, last := keyOf(r.First), keyOf(r.Last)
		n := span(first, last)
		if ps.avoids(r.Family()) {
			n.Sub(n, new(big.Int).SetUint64(buggyIn(first, last)))
		}
		fs.total.Add(fs.total, n)
		if iv, ok := ps.trim(interval{first, last}, r.Family()); ok {
			fs.free.ReplaceOrInsert(iv)
		}
	}
	for k, h := range a.holdings {
		if ps.allocatable(k, h.family) {
			ps.take(k, h.family)
		}
	}
	a.pools[p.Name] = ps
	a.sortPools()
}

// DeletePool removes a pool. Addresses held from it stay held.
func (a *Allocator) DeletePool(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pools, name)
	a.sortPools()
}

func (ps *poolState) avoids(f Family) bool { return ps.AvoidBuggyIPs && f == IPv4 }

func (ps *poolState) contains(k key, f Family) bool {
	i, found := slices.BinarySearchFunc(ps.Ranges, k, func(r Range, k key) int {
		return keyCompare(keyOf(r.First), k)
	})
	if found {
		return true
	}
	if i == 0 {
		return false
	}
	r := ps.Ranges[i-1]
	return r.Family() == f && !keyOf(r.Last).less(k)
}

func (ps *poolState) allocatable(k key, f Family) bool {
	return ps.contains(k, f) && !(ps.avoids(f) && k.buggy())
}

func (ps *poolState) allows(s Subject) bool { return ps.Allows == nil || ps.Allows(s) }

func (ps *poolState) has(f Family) bool { return ps.fam[famIndex(f)].total.Sign() > 0 }

// trim narrows iv so that it starts and ends on an allocatable address.
func (ps *poolState) trim(iv interval, f Family) (interval, bool) {
	if ps.avoids(f) {
		for iv.first.buggy() && !iv.last.less(iv.first) {
			iv.first = iv.first.next()
		}
		for iv.last.buggy() && !iv.last.less(iv.first) {
			iv.last = iv.last.prev()
		}
	}
	return iv, !iv.last.less(iv.first)
}

// take marks an allocatable address of the pool as used.
func (ps *poolState) take(k key, f Family) {
	fs := &ps.fam[famIndex(f)]
	fs.inUse++
	var iv interval
	found := false
	fs.free.DescendLessOrEqual(interval{first: k}, func(x interval) bool {
		iv, found = x, true
		return false
	})
	if !found || iv.last.less(k) {
		return
	}
	fs.free.Delete(iv)
	if k != iv.first {
		if left, ok := ps.trim(interval{iv.first, k.prev()}, f); ok {
			fs.free.ReplaceOrInsert(left)
		}
	}
	if k != iv.last {
		if right, ok := ps.trim(interval{k.next(), iv.last}, f); ok {
			fs.free.ReplaceOrInsert(right)
		}
	}
}

// give returns an allocatable address of the pool to the free set, merged
// with its free neighbours.
func (ps *poolState) give(k key, f Family) {
	fs := &ps.fam[famIndex(f)]
	fs.inUse--
	iv := interval{k, k}
	var pred, succ interval
	var hasPred, hasSucc bool
	fs.free.DescendLessOrEqual(interval{first: k}, func(x interval) bool {
		pred, hasPred = x, ps.nextAllocatable(x.last, f) == k
		return false
	})
	fs.free.AscendGreaterOrEqual(interval{first: k}, func(x interval) bool {
		succ, hasSucc = x, x.first == ps.nextAllocatable(k, f)
		return false
	})
	if hasPred {
		fs.free.Delete(pred)
		iv.first = pred.first
	}
	if hasSucc {
		fs.free.Delete(succ)
		iv.last = succ.last
	}
	fs.free.ReplaceOrInsert(iv)
}

// nextAllocatable returns the address after k, skipping the buggy ones a
// pool avoids: free intervals may span those (they never start or end on
// one), so that freed space merges back into one interval.
func (ps *poolState) nextAllocatable(k key, f Family) key {
	k = k.next()
	for ps.avoids(f) && k.buggy() {
		k = k.next()
	}
	return k
}

// lowestFree returns the pool's lowest free address of family f.
func (ps *poolState) lowestFree(f Family) (key, bool) {
	iv, ok := ps.fam[famIndex(f)].free.Min()
	return iv.first, ok
}

func (ps *poolState) usage(f Family) string {
	fs := ps.fam[famIndex(f)]
	return fmt.Sprintf("pool %q: %d of %s %s addresses in use", ps.Name, fs.inUse, fs.total, f)
}

// sortPools refreshes the pools in priority order (highest first), then
// by name.
func (a *Allocator) sortPools() {
	a.sorted = a.sorted[:0]
	for _, ps := range a.pools {
		a.sorted = append(a.sorted, ps)
	}
	slices.SortFunc(a.sorted, func(x, y *poolState) int {
		if c := cmp.Compare(y.Priority, x.Priority); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
}

// poolOf returns the name of the first pool (by priority) that contains a.
func (a *Allocator) poolOf(k key, f Family) string {
	for _, ps := range a.sorted {
		if ps.contains(k, f) {
			return ps.Name
		}
	}
	return ""
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
			h.members = append(h.members, member{owner: req.Owner, name: req.Name, ports: slices.Clone(req.Sharing.Ports), policy: req.Sharing.TrafficPolicy})
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
	if err := h.compatibleMember(req); err != nil {
		return false, fmt.Errorf("%w: %s cannot keep sharing %s: %v", ErrConflict, req.Name, have, err)
	}
	return true, nil
}

// compatibleMember reports why req, a member of h, cannot keep sharing it.
// A member that changes its ports or policy must stay compatible with
// every other member; one that changes nothing only with the members that
// joined before it. So the first come keep an address, and a clash (which
// only Restore lets in) fails the latecomer or the member that caused it.
func (h *holding) compatibleMember(req Request) error {
	i := slices.IndexFunc(h.members, func(m member) bool { return m.owner == req.Owner })
	if i < 0 || h.members[i].changedBy(req) {
		return h.compatible(req, req.Owner)
	}
	earlier := &holding{family: h.family, key: h.key, policy: h.policy, members: h.members[:i+1]}
	return earlier.compatible(req, req.Owner)
}

// changedBy reports whether req changes the member's ports or policy.
func (m member) changedBy(req Request) bool {
	if m.policy != req.Sharing.TrafficPolicy || len(m.ports) != len(req.Sharing.Ports) {
		return true
	}
	for _, p := range req.Sharing.Ports {
		if !slices.Contains(m.ports, p) {
			return true
		}
	}
	return false
}

// compatible reports why req cannot share h, ignoring member self.
func (h *holding) compatible(req Request, self string) error {
	var others []string
	for _, m := range h.members {
		if m.owner != self {
			others = append(others, m.name)
		}
	}
	switch {
	case req.Sharing.Key == "":
		return fmt.Errorf("it is held by %s and %s has no sharing key", strings.Join(others, ", "), req.Name)
	case h.key != req.Sharing.Key:
		return fmt.Errorf("it is held by %s under sharing key %q, not %q", strings.Join(others, ", "), h.key, req.Sharing.Key)
	}
	for _, m := range h.members {
		if m.owner == self {
			continue
		}
		if m.policy != req.Sharing.TrafficPolicy {
			return fmt.Errorf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, req.Name, req.Sharing.TrafficPolicy)
		}
		for _, p := range req.Sharing.Ports {
			if slices.Contains(m.ports, p) {
				return fmt.Errorf("%s already uses %s/%d", m.name, p.Protocol, p.Port)
			}
		}
	}
	return nil
}

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

// hold records a new holding of a free address.
func (a *Allocator) hold(k key, f Family, req Request) {
	a.holdings[k] = &holding{
		family:  f,
		key:     req.Sharing.Key,
		policy:  req.Sharing.TrafficPolicy,
		members: []member{{owner: req.Owner, name: req.Name, ports: slices.Clone(req.Sharing.Ports), policy: req.Sharing.TrafficPolicy}},
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
			h.members[i].name = req.Name
			h.members[i].ports = slices.Clone(req.Sharing.Ports)
			h.members[i].policy = req.Sharing.TrafficPolicy
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
		return nil
	}
	for _, addr := range o.addrs {
		a.leave(keyOf(addr), owner)
	}
	delete(a.owners, owner)
	return o.addrs
}

// Restore records addresses an owner already holds (after a restart, from a
// Service's status), in or out of any pool. Restore keeps what the owner
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
				errs = append(errs, fmt.Errorf("%w: %s cannot keep %s: %v", ErrConflict, req.Name, addr, h.compatible(req, req.Owner)))
				continue
			}
			h.members = append(h.members, member{owner: req.Owner, name: req.Name, ports: slices.Clone(req.Sharing.Ports), policy: req.Sharing.TrafficPolicy})
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

// Reserve records the addresses owner holds outside the allocator (a
// Node's InternalIPs), named name in messages ("Node node-a"), so that no
// Service is given them. It replaces what owner reserved before, and
// returns the addresses it could not reserve because Services hold them
// already (they keep them; the caller reports the clash).
func (a *Allocator) Reserve(owner, name string, addrs []netip.Addr) []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var kept, refused []netip.Addr
	if cur := a.owners[owner]; cur != nil {
		for _, old := range cur.addrs {
			if slices.Contains(addrs, old) {
				kept = append(kept, old)
			} else {
				a.leave(keyOf(old), owner)
			}
		}
	}
	req := Request{Owner: owner, Name: name}
	for _, addr := range addrs {
		if slices.Contains(kept, addr) || checkHeld(addr) != nil {
			continue
		}
		if _, held := a.holdings[keyOf(addr)]; held {
			refused = append(refused, addr)
			continue
		}
		a.hold(keyOf(addr), FamilyOf(addr), req)
		kept = append(kept, addr)
	}
	if len(kept) == 0 {
		delete(a.owners, owner)
	} else {
		a.owners[owner] = &ownerState{name: name, addrs: kept}
	}
	return refused
}

// Restoration is what one owner held before a restart: its request and
// the addresses it held (a Service's status).
type Restoration struct {
	Req   Request
	Addrs []netip.Addr
}

// RestoreAll restores many owners at once, oldest first in rs, and returns
// each one's Restore error. When several owners claim one address but no
// longer agree on a sharing key (one changed its key while no CCM ran),
// the address stays with the largest group that still shares a key, and
// among equal groups with the one holding the oldest owner; an owner whose
// request stopped sharing (no key) yields to owners that still share. Only
// the owners outside that group lose the address: the ones whose request
// changed.
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
		winners := sharingGroup(rs, idx)
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

// SharingConflicts explains, for each address the owner shares, why it
// could not share it with the sharers that joined before it if it asked
// now (ports used twice, different traffic policies). Restore keeps such
// addresses rather than re-addressing a Service; Ensure fails for the
// owner until the user fixes the clash, while the earlier sharers keep
// working.
func (a *Allocator) SharingConflicts(owner string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		return nil
	}
	var out []string
	for _, addr := range o.addrs {
		if msg := a.holdings[keyOf(addr)].clash(owner); msg != "" {
			out = append(out, fmt.Sprintf("%s: %s", addr, msg))
		}
	}
	return out
}

// ConflictingAddresses counts the shared addresses whose sharers clash.
func (a *Allocator) ConflictingAddresses() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, h := range a.holdings {
		if len(h.members) > 1 && h.clash("") != "" {
			n++
		}
	}
	return n
}

// clash says why member owner (or, for "", any member) clashes with a
// sharer of h that joined before it: a port both use, or another traffic
// policy; "" if none does.
func (h *holding) clash(owner string) string {
	for i, m := range h.members {
		if owner != "" && m.owner != owner {
			continue
		}
		for _, o := range h.members[:i] {
			if m.policy != o.policy {
				return fmt.Sprintf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, o.name, o.policy)
			}
			for _, p := range m.ports {
				if slices.Contains(o.ports, p) {
					return fmt.Sprintf("%s and %s both use %s/%d", m.name, o.name, p.Protocol, p.Port)
				}
			}
		}
	}
	return ""
}

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
