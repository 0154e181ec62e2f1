package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
)

// TestAllocatorProperties runs random sequences of requests, releases,
// restores, pool edits and restarts against a simple model, and checks
// after every step that the allocator agrees with the model and keeps its
// rules: an address belongs to one owner or one compatible sharing group,
// new addresses come from pools the request may use (lowest free first,
// compatible groups joined first) and are allowed by every pool that
// contains them, kept addresses are kept (Refusals lists those a pool
// containing them no longer allows), and the pools' counts match what is
// held.
func TestAllocatorProperties(t *testing.T) {
	seeds, steps := 50, 2000
	if testing.Short() {
		seeds, steps = 10, 400
	}
	for seed := range uint64(seeds) {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			t.Parallel()
			newPropRun(t, seed).run(steps)
		})
	}
}

// The universe: small stretches of addresses across the awkward places, an
// IPv4 /24 boundary (.255 then .0) and an IPv6 64-bit boundary, so pools
// are small, fill up and overlap.
const universeSize = 48

var (
	universeV4 = stretch(netip.MustParseAddr("10.0.0.232"))
	universeV6 = stretch(netip.MustParseAddr("2001:db8::ffff:ffff:ffff:ffe8"))
)

func stretch(first netip.Addr) []netip.Addr {
	out := make([]netip.Addr, universeSize)
	for i, a := 0, first; i < universeSize; i, a = i+1, a.Next() {
		out[i] = a
	}
	return out
}

func universe(f Family) []netip.Addr {
	if f == IPv4 {
		return universeV4
	}
	return universeV6
}

// isBuggy is the model's idea of the addresses AvoidBuggyIPs skips.
func isBuggy(a netip.Addr) bool {
	if !a.Is4() {
		return false
	}
	last := a.As4()[3]
	return last == 0 || last == 255
}

// modelPool is a pool as the model sees it.
type modelPool struct {
	name        string
	entries     []string // as given to ParseRanges
	ranges      []Range
	auto, avoid bool
	priority    int32
	allowNS     []string // nil: everyone
}

func (mp *modelPool) pool() Pool {
	p := Pool{Name: mp.name, Ranges: slices.Clone(mp.ranges), AutoAssign: mp.auto, AvoidBuggyIPs: mp.avoid, Priority: mp.priority}
	if mp.allowNS != nil {
		allow := slices.Clone(mp.allowNS)
		p.Refuses = func(s Subject) error {
			if !slices.Contains(allow, s.Namespace) {
				return fmt.Errorf("namespace %s is not in %v", s.Namespace, allow)
			}
			return nil
		}
	}
	return p
}

func (mp *modelPool) String() string {
	allow := "everyone"
	if mp.allowNS != nil {
		allow = fmt.Sprint(mp.allowNS)
	}
	return fmt.Sprintf("%s%v auto=%v avoid=%v prio=%d allow=%s", mp.name, mp.entries, mp.auto, mp.avoid, mp.priority, allow)
}

func (mp *modelPool) contains(a netip.Addr) bool {
	return slices.ContainsFunc(mp.ranges, func(r Range) bool { return r.Contains(a) })
}

func (mp *modelPool) allocatable(a netip.Addr) bool {
	return mp.contains(a) && !(mp.avoid && isBuggy(a))
}

func (mp *modelPool) allows(ns string) bool {
	return mp.allowNS == nil || slices.Contains(mp.allowNS, ns)
}

// allowedEverywhere is the model's overlap rule: every pool that contains
// a allows namespace ns.
func (p *propRun) allowedEverywhere(a netip.Addr, ns string) bool {
	for _, mp := range p.pools {
		if mp.contains(a) && !mp.allows(ns) {
			return false
		}
	}
	return true
}

func (mp *modelPool) total(f Family) int {
	n := 0
	for _, a := range universe(f) {
		if mp.allocatable(a) {
			n++
		}
	}
	return n
}

// modelOwner is what the model knows of an owner: its last successful
// request and what it holds.
type modelOwner struct {
	req   Request
	addrs []netip.Addr
	// restored: the owner's addresses came from Restore, which keeps an
	// address shared under one key even when ports or policies clash. A
	// successful Ensure proves the owner clashes with nobody.
	restored bool
	// born orders owners by age (when they last came to hold anything),
	// like a Service's creationTimestamp: a restart restores oldest first.
	born int
}

type propRun struct {
	t       *testing.T
	seed    uint64
	step    int
	r       *rand.Rand
	a       *Allocator
	pools   map[string]*modelPool
	deleted map[string]*modelPool
	owners  map[string]*modelOwner
	log     []string
	// byAddr indexes owners by address; nil after the model changes.
	byAddr map[netip.Addr][]string
	// joined lists, per address, its holders in the order they joined:
	// a holder must be compatible with those before it to keep sharing.
	joined map[netip.Addr][]string
	// claims lists, per address, the owners that could not restore it:
	// their statuses still list it, so nobody else may get it.
	claims map[netip.Addr]map[string]bool
	// births counts owners coming to hold something, for modelOwner.born.
	births int
}

func newPropRun(t *testing.T, seed uint64) *propRun {
	return &propRun{
		t:       t,
		seed:    seed,
		r:       rand.New(rand.NewPCG(seed, 0x1b5a_c0de)),
		a:       New(),
		pools:   map[string]*modelPool{},
		deleted: map[string]*modelPool{},
		owners:  map[string]*modelOwner{},
	}
}

func (p *propRun) fatalf(format string, args ...any) {
	p.t.Helper()
	p.t.Fatalf("seed %d, step %d: %s\nlast operations (newest last):\n  %s\nrerun: go test -run 'TestAllocatorProperties/seed=%d$' ./ipam/",
		p.seed, p.step, fmt.Sprintf(format, args...), strings.Join(p.log, "\n  "), p.seed)
}

func (p *propRun) logf(format string, args ...any) {
	p.log = append(p.log, fmt.Sprintf("%d: ", p.step)+fmt.Sprintf(format, args...))
	if len(p.log) > 25 {
		p.log = p.log[1:]
	}
}

func (p *propRun) run(steps int) {
	p.t.Helper()
	for p.step = 0; p.step < steps; p.step++ {
		switch n := p.r.IntN(100); {
		case n < 60:
			p.ensure(p.randomRequest())
		case n < 72:
			p.release(p.randomOwner())
		case n < 84:
			p.editPool()
		case n < 87:
			p.deletePool()
		case n < 92:
			p.restoreNew()
		case n < 94:
			p.restart()
		default:
			p.ensureExisting()
		}
		p.check()
	}
}

// --- random inputs ---

func (p *propRun) randomOwner() string { return fmt.Sprint("o", p.r.IntN(30)) }

func (p *propRun) pick(xs ...string) string { return xs[p.r.IntN(len(xs))] }

func (p *propRun) randomFamily() Family {
	if p.r.IntN(2) == 0 {
		return IPv4
	}
	return IPv6
}

// randomAddress returns an address of f: one someone holds, or any of the
// universe.
func (p *propRun) randomAddress(f Family) netip.Addr {
	if p.r.IntN(2) == 0 {
		var held []netip.Addr
		for _, o := range p.sortedOwners() {
			for _, a := range p.owners[o].addrs {
				if FamilyOf(a) == f {
					held = append(held, a)
				}
			}
		}
		if len(held) > 0 {
			return held[p.r.IntN(len(held))]
		}
	}
	u := universe(f)
	return u[p.r.IntN(len(u))]
}

func (p *propRun) randomSharing() Sharing {
	if p.r.IntN(2) == 0 {
		return Sharing{TrafficPolicy: p.pick("Cluster", "Cluster", "Local")}
	}
	// Owners of different namespaces share only with consent, and Local
	// sharers only with one selector.
	s := Sharing{Key: p.pick("k0", "k1"), TrafficPolicy: p.pick("Cluster", "Cluster", "Local"), Selector: p.pick("app=a", "app=a", "app=b")}
	switch p.r.IntN(5) {
	case 0:
		s.Namespaces = []string{"*"}
	case 1:
		s.Namespaces = []string{p.pick("ns0", "ns1", "ns2")}
	}
	all := []Port{{"TCP", 80}, {"TCP", 443}, {"UDP", 53}, {"UDP", 80}}
	for _, i := range p.r.Perm(len(all))[:1+p.r.IntN(2)] {
		s.Ports = append(s.Ports, all[i])
	}
	return s
}

func (p *propRun) randomRequest() Request {
	owner := p.randomOwner()
	req := Request{
		Owner:   owner,
		Name:    "n/" + owner,
		Subject: Subject{Namespace: p.pick("ns0", "ns0", "ns1", "ns2")},
		Sharing: p.randomSharing(),
	}
	switch n := p.r.IntN(100); {
	case n < 40:
		req.Families, req.RequireAll = []Family{IPv4}, true
	case n < 62:
		req.Families, req.RequireAll = []Family{IPv6}, true
	case n < 80:
		req.Families, req.RequireAll = []Family{IPv4, IPv6}, p.r.IntN(2) == 0
	case n < 98:
		req.Families, req.RequireAll = []Family{IPv6, IPv4}, p.r.IntN(2) == 0
	default: // invalid
		req.Families = [][]Family{nil, {IPv4, IPv4}, {IPv6, IPv4, IPv6}, {Family(0)}}[p.r.IntN(4)]
	}
	switch n := p.r.IntN(100); {
	case n < 72:
	case n < 92:
		req.Pool = p.pick("p0", "p1", "p2", "p3")
	default:
		req.Pool = "missing"
	}
	if p.r.IntN(100) < 30 && len(req.Families) > 0 {
		for _, f := range req.Families {
			if req.RequireAll || p.r.IntN(2) == 0 {
				req.Addresses = append(req.Addresses, p.randomAddress(cmp.Or(f, IPv4)))
			}
		}
		if p.r.IntN(40) == 0 { // rarely something invalid
			req.Addresses = append(req.Addresses, netip.MustParseAddr(p.pick("::ffff:10.0.0.240", "2001:db8::ffff:ffff:ffff:fff0%eth0", "10.0.0.241")))
		}
	}
	return req
}

// ensureExisting repeats or slightly changes an owner's last request, to
// exercise keeping.
func (p *propRun) ensureExisting() {
	owners := p.sortedOwners()
	if len(owners) == 0 {
		p.ensure(p.randomRequest())
		return
	}
	req := p.owners[owners[p.r.IntN(len(owners))]].req
	req.Addresses = slices.Clone(req.Addresses)
	req.Sharing.Ports = slices.Clone(req.Sharing.Ports)
	if len(req.Families) == 0 { // a restored owner's request may have none
		req.Families, req.RequireAll = []Family{IPv4, IPv6}, false
	}
	switch p.r.IntN(8) {
	case 0:
		req.Sharing = p.randomSharing()
	case 1:
		req.Pool = p.pick("", "p0", "p1", "p2", "p3")
	case 2:
		req.Addresses = nil
	case 3:
		req.Subject.Namespace = p.pick("ns0", "ns1", "ns2")
	case 4:
		if !req.RequireAll {
			req.Families = []Family{req.Families[len(req.Families)-1]}
			req.RequireAll = true
			req.Addresses = nil
		}
	}
	p.ensure(req)
}

func (p *propRun) randomPool(name string) *modelPool {
	mp := &modelPool{
		name:     name,
		auto:     p.r.IntN(5) != 0,
		avoid:    p.r.IntN(3) == 0,
		priority: int32(p.r.IntN(3)),
	}
	if p.r.IntN(3) == 0 {
		mp.allowNS = []string{}
		for _, ns := range []string{"ns0", "ns1", "ns2"} {
			if p.r.IntN(2) == 0 {
				mp.allowNS = append(mp.allowNS, ns)
			}
		}
	}
	for range 1 + p.r.IntN(3) {
		mp.entries = append(mp.entries, p.randomEntry())
	}
	return mp
}

func (p *propRun) randomEntry() string {
	u := universe(p.randomFamily())
	first := p.r.IntN(len(u))
	last := min(first+p.r.IntN(14), len(u)-1)
	return Range{First: u[first], Last: u[last]}.String()
}

func (p *propRun) setPool(mp *modelPool) {
	rs, err := ParseRanges(mp.entries)
	if err != nil {
		p.fatalf("ParseRanges(%q): %v", mp.entries, err)
	}
	mp.ranges = rs
	p.pools[mp.name] = mp
	delete(p.deleted, mp.name)
	p.a.SetPool(mp.pool())
	p.logf("SetPool %v -> %v", mp, rs)
}

func (p *propRun) editPool() {
	name := p.pick("p0", "p1", "p2", "p3")
	old := p.pools[name]
	if old == nil {
		if d := p.deleted[name]; d != nil && p.r.IntN(2) == 0 {
			p.setPool(d) // re-add
			return
		}
		p.setPool(p.randomPool(name))
		return
	}
	mp := *old
	mp.entries = slices.Clone(old.entries)
	switch p.r.IntN(6) {
	case 0: // grow
		mp.entries = append(mp.entries, p.randomEntry())
	case 1: // shrink
		if len(mp.entries) > 1 {
			i := p.r.IntN(len(mp.entries))
			mp.entries = slices.Delete(mp.entries, i, i+1)
		} else {
			r, _ := ParseRange(mp.entries[0])
			mp.entries[0] = Range{First: r.First, Last: r.First}.String()
		}
	case 2:
		mp.avoid = !mp.avoid
	case 3:
		mp.auto = !mp.auto
	case 4:
		mp.priority = int32(p.r.IntN(3))
	default:
		mp = *p.randomPool(name)
	}
	p.setPool(&mp)
}

func (p *propRun) deletePool() {
	name := p.pick("p0", "p1", "p2", "p3")
	if mp := p.pools[name]; mp != nil {
		p.deleted[name] = mp
		delete(p.pools, name)
	}
	p.a.DeletePool(name)
	p.logf("DeletePool %s", name)
}

// --- the model's rules ---

func (p *propRun) sortedOwners() []string {
	out := make([]string, 0, len(p.owners))
	for o := range p.owners {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

// sortedPools returns the pools by priority, highest first, then name.
func (p *propRun) sortedPools() []*modelPool {
	var out []*modelPool
	for _, mp := range p.pools {
		out = append(out, mp)
	}
	slices.SortFunc(out, func(x, y *modelPool) int {
		return cmp.Or(cmp.Compare(y.priority, x.priority), cmp.Compare(x.name, y.name))
	})
	return out
}

// holders returns the owners holding a, sorted.
func (p *propRun) holders(a netip.Addr) []string {
	if p.byAddr == nil {
		p.byAddr = map[netip.Addr][]string{}
		for _, o := range p.sortedOwners() {
			for _, x := range p.owners[o].addrs {
				p.byAddr[x] = append(p.byAddr[x], o)
			}
		}
	}
	return slices.Clone(p.byAddr[a])
}

// setOwner records what owner holds now; nil for nothing.
func (p *propRun) setOwner(owner string, mo *modelOwner) {
	if p.joined == nil {
		p.joined = map[netip.Addr][]string{}
	}
	var before, after []netip.Addr
	if old := p.owners[owner]; old != nil {
		before = old.addrs
	}
	if mo != nil {
		after = mo.addrs
	}
	for _, a := range before {
		if !slices.Contains(after, a) {
			p.joined[a] = slices.DeleteFunc(p.joined[a], func(o string) bool { return o == owner })
		}
	}
	for _, a := range after {
		if !slices.Contains(before, a) {
			p.joined[a] = append(p.joined[a], owner)
		}
	}
	if mo == nil {
		delete(p.owners, owner)
	} else {
		if old := p.owners[owner]; old != nil {
			mo.born = old.born
		} else {
			p.births++
			mo.born = p.births
		}
		p.owners[owner] = mo
	}
	p.byAddr = nil
}

func (p *propRun) held(a netip.Addr) bool { return len(p.holders(a)) > 0 || len(p.claims[a]) > 0 }

// claimedOnly reports whether only stale claims hold a.
func (p *propRun) claimedOnly(a netip.Addr) bool {
	return len(p.holders(a)) == 0 && len(p.claims[a]) > 0
}

func (p *propRun) poolOf(a netip.Addr) string {
	for _, mp := range p.sortedPools() {
		if mp.contains(a) {
			return mp.name
		}
	}
	return ""
}

// compatible reports whether req may share a with its holders other than
// req's owner.
func (p *propRun) compatible(req Request, a netip.Addr) bool {
	if p.claimedOnly(a) {
		return false
	}
	for _, o := range p.holders(a) {
		if o != req.Owner && !sharesWith(p.owners[o].req, req) {
			return false
		}
	}
	return true
}

// sharesWith is the model's sharing rule: req may share with holder.
func sharesWith(holder, req Request) bool {
	s := holder.Sharing
	if req.Sharing.Key == "" || s.Key != req.Sharing.Key || s.TrafficPolicy != req.Sharing.TrafficPolicy {
		return false
	}
	for _, port := range req.Sharing.Ports {
		if slices.Contains(s.Ports, port) {
			return false
		}
	}
	allows := func(nss []string, ns string) bool { return slices.Contains(nss, "*") || slices.Contains(nss, ns) }
	if hn, rn := holder.Subject.Namespace, req.Subject.Namespace; hn != rn && (!allows(s.Namespaces, rn) || !allows(req.Sharing.Namespaces, hn)) {
		return false
	}
	return s.TrafficPolicy != "Local" || s.Selector == req.Sharing.Selector
}

// groupKey returns the sharing key a is held under.
func (p *propRun) groupKey(a netip.Addr) string {
	hs := p.holders(a)
	if len(hs) == 0 {
		return ""
	}
	return p.owners[hs[0]].req.Sharing.Key
}

// invalid returns why the model thinks req is invalid, or "".
func invalid(req Request) string {
	fams := req.Families
	if len(fams) == 0 || len(fams) > 2 || (len(fams) == 2 && fams[0] == fams[1]) {
		return "families"
	}
	for _, f := range fams {
		if f != IPv4 && f != IPv6 {
			return "unknown family"
		}
	}
	var seen []Family
	for _, a := range req.Addresses {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			return "bad address"
		}
		f := FamilyOf(a)
		if !slices.Contains(fams, f) {
			return "address of an unwanted family"
		}
		if slices.Contains(seen, f) {
			return "two addresses of a family"
		}
		seen = append(seen, f)
	}
	if req.RequireAll && len(req.Addresses) > 0 && len(seen) < len(fams) {
		return "RequireAll with addresses missing"
	}
	return ""
}

// wantedFamilies is the families a valid request is served in, in order.
func wantedFamilies(req Request) []Family {
	if len(req.Addresses) == 0 {
		return req.Families
	}
	var out []Family
	for _, f := range req.Families {
		if req.addressFor(f).IsValid() {
			out = append(out, f)
		}
	}
	return out
}

// candidates returns the pools an auto request may draw family f from.
func (p *propRun) candidates(f Family, req Request) []*modelPool {
	var out []*modelPool
	for _, mp := range p.sortedPools() {
		if req.Pool != "" && mp.name != req.Pool || req.Pool == "" && !mp.auto {
			continue
		}
		if mp.allows(req.Subject.Namespace) && mp.total(f) > 0 {
			out = append(out, mp)
		}
	}
	return out
}

func allocatableIn(pools []*modelPool, a netip.Addr) bool {
	return slices.ContainsFunc(pools, func(mp *modelPool) bool { return mp.allocatable(a) })
}

// joinable returns the lowest address of family f an auto request would
// join, if any.
func (p *propRun) joinable(f Family, req Request, pools []*modelPool) (netip.Addr, bool) {
	if req.Sharing.Key == "" {
		return netip.Addr{}, false
	}
	for _, a := range universe(f) {
		if p.held(a) && p.groupKey(a) == req.Sharing.Key && p.policy(a) == req.Sharing.TrafficPolicy &&
			p.compatible(req, a) && allocatableIn(pools, a) && p.allowedEverywhere(a, req.Subject.Namespace) {
			return a, true
		}
	}
	return netip.Addr{}, false
}

func (p *propRun) policy(a netip.Addr) string {
	return p.owners[p.holders(a)[0]].req.Sharing.TrafficPolicy
}

// lowestFree returns the lowest free address of family f of the first of
// pools that has one that every pool containing it allows req.
func (p *propRun) lowestFree(f Family, req Request, pools []*modelPool) (netip.Addr, bool) {
	for _, mp := range pools {
		for _, a := range universe(f) {
			if mp.allocatable(a) && !p.held(a) && p.allowedEverywhere(a, req.Subject.Namespace) {
				return a, true
			}
		}
	}
	return netip.Addr{}, false
}

// explicitOK reports whether req may use the specific address a.
func (p *propRun) explicitOK(req Request, a netip.Addr) bool {
	if !p.allowedEverywhere(a, req.Subject.Namespace) {
		return false
	}
	for _, mp := range p.pools {
		if mp.contains(a) && mp.allows(req.Subject.Namespace) && (req.Pool == "" || req.Pool == mp.name) && !(mp.avoid && isBuggy(a)) {
			return true
		}
	}
	return false
}

// keepDecision says what must happen to have, an address of the owner,
// under req: "keep", "drop" (the request rules it out) or "conflict".
func (p *propRun) keepDecision(req Request, have netip.Addr) string {
	if e := req.addressFor(FamilyOf(have)); e.IsValid() && e != have {
		return "drop"
	}
	if req.Pool != "" && p.poolOf(have) != "" {
		if mp := p.pools[req.Pool]; mp == nil || !mp.contains(have) {
			return "drop"
		}
	}
	if len(p.holders(have)) == 1 {
		return "keep"
	}
	if p.groupKey(have) != req.Sharing.Key {
		return "drop"
	}
	if !p.compatibleWithEarlier(req, have) || (p.termsChanged(req) && !p.compatible(req, have)) {
		return "conflict"
	}
	return "keep"
}

// termsChanged reports whether req changes the ports or policy its owner
// holds its addresses under.
func (p *propRun) termsChanged(req Request) bool {
	mo := p.owners[req.Owner]
	if mo == nil {
		return true
	}
	was := mo.req.Sharing
	if was.TrafficPolicy != req.Sharing.TrafficPolicy || len(was.Ports) != len(req.Sharing.Ports) ||
		was.Selector != req.Sharing.Selector || !slices.Equal(was.Namespaces, req.Sharing.Namespaces) || mo.req.Subject.Namespace != req.Subject.Namespace {
		return true
	}
	for _, port := range req.Sharing.Ports {
		if !slices.Contains(was.Ports, port) {
			return true
		}
	}
	return false
}

// compatibleWithEarlier reports whether req, a holder of a, may keep
// sharing it with the holders that joined before it.
func (p *propRun) compatibleWithEarlier(req Request, a netip.Addr) bool {
	for _, o := range p.joined[a] {
		if o == req.Owner {
			return true
		}
		if !sharesWith(p.owners[o].req, req) {
			return false
		}
	}
	return true
}

// --- operations ---

func describe(req Request) string {
	return fmt.Sprintf("%s fams=%v all=%v pool=%q addrs=%v ns=%s sharing=%+v", req.Owner, req.Families, req.RequireAll, req.Pool, req.Addresses, req.Subject.Namespace, req.Sharing)
}

func (p *propRun) ensure(req Request) {
	p.t.Helper()
	al, err := p.a.Ensure(req)
	p.logf("Ensure %s -> %v %q, %v", describe(req), al.Addresses, al.Warnings, err)
	bad := invalid(req)
	if err != nil {
		if !slices.ContainsFunc([]error{ErrNoPools, ErrNoPool, ErrExhausted, ErrConflict, ErrInvalid}, func(e error) bool { return errors.Is(err, e) }) {
			p.fatalf("Ensure error %q wraps none of the package's errors", err)
		}
		if (bad != "") != errors.Is(err, ErrInvalid) {
			p.fatalf("Ensure error %q, but the model says invalid=%q", err, bad)
		}
		if errors.Is(err, ErrNoPools) && len(p.pools) > 0 {
			p.fatalf("ErrNoPools with %d pools", len(p.pools))
		}
		if errors.Is(err, ErrExhausted) && !p.someFamilyExhausted(req) {
			p.fatalf("ErrExhausted, but every wanted family has a free or joinable address")
		}
		if bad == "" && len(req.Addresses) == 0 && p.owners[req.Owner] == nil && req.Sharing.Key == "" {
			served := true
			for _, f := range req.Families {
				if _, ok := p.lowestFree(f, req, p.candidates(f, req)); !ok {
					served = false
				}
			}
			if served {
				p.fatalf("Ensure failed (%v), but every family has a free address in a usable pool", err)
			}
		}
		return // check() verifies that nothing changed
	}
	if bad != "" {
		p.fatalf("Ensure succeeded, but the model says the request is invalid: %s", bad)
	}
	p.checkAllocation(req, al)
	p.setOwner(req.Owner, &modelOwner{req: req, addrs: slices.Clone(al.Addresses)})
}

func (p *propRun) someFamilyExhausted(req Request) bool {
	for _, f := range wantedFamilies(req) {
		if req.addressFor(f).IsValid() {
			continue
		}
		pools := p.candidates(f, req)
		if len(pools) == 0 {
			continue
		}
		_, free := p.lowestFree(f, req, pools)
		_, join := p.joinable(f, req, pools)
		if !free && !join {
			return true
		}
	}
	return false
}

// checkAllocation checks a successful Ensure against the model, before the
// model records it.
func (p *propRun) checkAllocation(req Request, al Allocation) {
	p.t.Helper()
	wanted := wantedFamilies(req)
	var prev []netip.Addr
	if mo := p.owners[req.Owner]; mo != nil {
		prev = mo.addrs
	}
	if len(al.Addresses) == 0 {
		p.fatalf("Ensure succeeded with no address")
	}
	if len(al.Pools) != len(al.Addresses) {
		p.fatalf("Allocation has %d pools for %d addresses", len(al.Pools), len(al.Addresses))
	}
	// Families: in the order asked, all of them when required, a warning
	// for each one missing.
	i := 0
	var got []Family
	for _, a := range al.Addresses {
		f := FamilyOf(a)
		for i < len(wanted) && wanted[i] != f {
			i++
		}
		if i == len(wanted) {
			p.fatalf("addresses %v do not follow the wanted families %v", al.Addresses, wanted)
		}
		got = append(got, f)
		i++
	}
	if req.RequireAll && len(got) != len(wanted) {
		p.fatalf("RequireAll request got %v for %v", al.Addresses, wanted)
	}
	if len(al.Warnings) != len(wanted)-len(got) {
		p.fatalf("%d warnings %q for %d missing families", len(al.Warnings), al.Warnings, len(wanted)-len(got))
	}
	for _, have := range prev {
		if !slices.Contains(wanted, FamilyOf(have)) {
			continue // no longer wanted: released
		}
		switch d := p.keepDecision(req, have); {
		case d == "keep" && !slices.Contains(al.Addresses, have):
			p.fatalf("%s was not kept, though nothing in the request rules it out", have)
		case d == "drop" && slices.Contains(al.Addresses, have):
			p.fatalf("%s was kept, though the request rules it out", have)
		case d == "conflict":
			p.fatalf("Ensure succeeded, though %s can no longer be shared", have)
		}
	}
	for _, a := range al.Addresses {
		f := FamilyOf(a)
		if pool := p.poolOf(a); al.Pools[slices.Index(al.Addresses, a)] != pool {
			p.fatalf("Allocation.Pools says %s is in %q, the model says %q", a, al.Pools[slices.Index(al.Addresses, a)], pool)
		}
		if e := req.addressFor(f); e.IsValid() && e != a {
			p.fatalf("asked for %s, got %s", e, a)
		}
		if slices.Contains(prev, a) {
			continue // kept, checked above
		}
		// Overlapping pools: a new address is allowed by every pool that
		// contains it.
		if !p.allowedEverywhere(a, req.Subject.Namespace) {
			p.fatalf("%s was handed out to namespace %s, but a pool containing it does not allow that namespace", a, req.Subject.Namespace)
		}
		others := slices.DeleteFunc(p.holders(a), func(o string) bool { return o == req.Owner })
		if len(others) > 0 && (p.groupKey(a) != req.Sharing.Key || p.policy(a) != req.Sharing.TrafficPolicy || !p.compatible(req, a)) {
			p.fatalf("%s, held by %v, was handed out to an incompatible owner", a, others)
		}
		if e := req.addressFor(f); e.IsValid() {
			if !p.explicitOK(req, a) {
				p.fatalf("%s was given as asked, but lies in no pool the request may use", a)
			}
			continue
		}
		pools := p.candidates(f, req)
		if !allocatableIn(pools, a) {
			p.fatalf("%s was handed out, but is allocatable in none of the usable pools %v", a, pools)
		}
		join, canJoin := p.joinable(f, req, pools)
		switch {
		case canJoin && a != join:
			p.fatalf("got %s, want the lowest compatible shared address %s", a, join)
		case !canJoin && len(others) > 0:
			p.fatalf("joined %s, which the model does not find joinable", a)
		case !canJoin:
			if want, _ := p.lowestFree(f, req, pools); a != want {
				p.fatalf("got %s, want the lowest free address %s of the first usable pool", a, want)
			}
		}
	}
	if len(got) < len(wanted) {
		for _, f := range wanted {
			if !slices.Contains(got, f) && !req.addressFor(f).IsValid() {
				pools := p.candidates(f, req)
				_, free := p.lowestFree(f, req, pools)
				_, join := p.joinable(f, req, pools)
				if free || join {
					p.fatalf("%s was not served, but the model finds an address for it", f)
				}
			}
		}
	}
}

func (p *propRun) release(owner string) {
	got := p.a.Release(owner)
	p.logf("Release %s -> %v", owner, got)
	var want []netip.Addr
	if mo := p.owners[owner]; mo != nil {
		want = mo.addrs
	}
	if !slices.Equal(got, want) {
		p.fatalf("Release(%s) = %v, want %v", owner, got, want)
	}
	p.setOwner(owner, nil)
	for a, cl := range p.claims {
		delete(cl, owner)
		if len(cl) == 0 {
			delete(p.claims, a)
		}
	}
}

// restoreNew restores random addresses for an owner holding nothing, as
// if read from a Service's status.
func (p *propRun) restoreNew() {
	req := p.randomRequest()
	if p.owners[req.Owner] != nil {
		return
	}
	var as []netip.Addr
	for range 1 + p.r.IntN(2) {
		as = append(as, p.randomAddress(p.randomFamily()))
	}
	req.Addresses = nil
	err := p.a.Restore(req, as)
	p.logf("Restore %s %v -> %v", describe(req), as, err)
	var kept []netip.Addr
	var wantErr bool
	for _, a := range as {
		switch {
		case slices.Contains(kept, a):
		case slices.ContainsFunc(kept, func(k netip.Addr) bool { return FamilyOf(k) == FamilyOf(a) }):
			wantErr = true
		case p.held(a) && (p.groupKey(a) == "" || p.groupKey(a) != req.Sharing.Key):
			// Restore keeps an address shared under one key even when
			// ports or policies clash; only a missing common key loses it.
			// The owner's status still lists it: a stale claim.
			wantErr = true
			if p.claims == nil {
				p.claims = map[netip.Addr]map[string]bool{}
			}
			if p.claims[a] == nil {
				p.claims[a] = map[string]bool{}
			}
			p.claims[a][req.Owner] = true
		default:
			kept = append(kept, a)
		}
	}
	if (err != nil) != wantErr {
		p.fatalf("Restore error %v, want an error: %v", err, wantErr)
	}
	if len(kept) > 0 {
		p.setOwner(req.Owner, &modelOwner{req: req, addrs: kept, restored: true})
	}
}

// restart builds a new allocator from the pools and what the model says
// every owner holds, as after a restart of the CCM: oldest owner first, as
// RestoreAll wants, so that sharers keep the order they joined in.
func (p *propRun) restart() {
	p.logf("restart")
	a := New()
	setPools := func() {
		names := make([]string, 0, len(p.pools))
		for n := range p.pools {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			a.SetPool(p.pools[n].pool())
		}
	}
	poolsFirst := p.r.IntN(2) == 0
	if poolsFirst {
		setPools()
	}
	p.joined = map[netip.Addr][]string{}
	p.claims = nil // statuses are as the owners hold them
	owners := p.sortedOwners()
	slices.SortFunc(owners, func(x, y string) int { return cmp.Compare(p.owners[x].born, p.owners[y].born) })
	for _, o := range owners {
		mo := p.owners[o]
		if err := a.Restore(mo.req, mo.addrs); err != nil {
			p.fatalf("restart: Restore(%s, %v): %v", o, mo.addrs, err)
		}
		for _, x := range mo.addrs {
			p.joined[x] = append(p.joined[x], o)
		}
	}
	if !poolsFirst {
		setPools()
	}
	p.a = a
}

// --- the checks after every step ---

func (p *propRun) check() {
	p.t.Helper()
	// No address has two owners, unless they share it under one key, and
	// compatibly unless Restore brought the clash in.
	for _, f := range []Family{IPv4, IPv6} {
		for _, a := range universe(f) {
			hs := p.holders(a)
			for i, x := range hs {
				sx := p.owners[x].req.Sharing
				for _, y := range hs[i+1:] {
					sy := p.owners[y].req.Sharing
					clash := !sharesWith(p.owners[x].req, p.owners[y].req)
					if sx.Key == "" || sx.Key != sy.Key || (clash && !p.owners[x].restored && !p.owners[y].restored) {
						p.fatalf("%s is held by %s (%+v) and %s (%+v)", a, x, sx, y, sy)
					}
				}
			}
			// Holder agrees.
			h, ok := p.a.Holder(a)
			if ok != p.held(a) {
				p.fatalf("Holder(%s) = %+v, %v; the model says it is held by %v, claimed by %v", a, h, ok, hs, p.claims[a])
			}
			if ok && p.claimedOnly(a) {
				if len(h.Owners) != 1 || h.SharingKey != "" || !strings.HasPrefix(h.Owners[0], "the status of ") {
					p.fatalf("Holder(%s) = %+v; want the stand-in of its claims %v", a, h, p.claims[a])
				}
				for o := range p.claims[a] {
					if !strings.Contains(h.Owners[0], "n/"+o) {
						p.fatalf("Holder(%s) = %+v does not name claimant %s", a, h, o)
					}
				}
			} else if ok {
				want := Holding{SharingKey: p.groupKey(a)}
				for _, o := range hs {
					want.Owners = append(want.Owners, "n/"+o)
				}
				if diff := gocmp.Diff(want, h); diff != "" {
					p.fatalf("Holder(%s) mismatch (-model +allocator):\n%s", a, diff)
				}
			}
		}
	}
	// Lookup agrees.
	for i := range 30 {
		o := fmt.Sprint("o", i)
		al, ok := p.a.Lookup(o)
		mo := p.owners[o]
		if ok != (mo != nil) {
			p.fatalf("Lookup(%s) = %v, %v; the model says %v", o, al.Addresses, ok, mo)
		}
		if !ok {
			continue
		}
		if !slices.Equal(al.Addresses, mo.addrs) {
			p.fatalf("Lookup(%s) = %v, the model says %v", o, al.Addresses, mo.addrs)
		}
		for j, a := range al.Addresses {
			if want := p.poolOf(a); al.Pools[j] != want {
				p.fatalf("Lookup(%s).Pools[%d] = %q, want %q", o, j, al.Pools[j], want)
			}
		}
		// Refusals lists exactly the held addresses some pool containing
		// them does not allow (kept after pool edits and restores).
		var want, got []netip.Addr
		for _, a := range mo.addrs {
			if !p.allowedEverywhere(a, mo.req.Subject.Namespace) {
				want = append(want, a)
			}
		}
		for _, r := range p.a.Refusals(o, mo.req.Subject) {
			got = append(got, r.Addr)
		}
		if !slices.Equal(want, got) {
			p.fatalf("Refusals(%s) = %v, the model says %v", o, got, want)
		}
	}
	// Stats count the held allocatable addresses.
	for _, name := range []string{"p0", "p1", "p2", "p3"} {
		s4, s6, ok := p.a.Stats(name)
		mp := p.pools[name]
		if ok != (mp != nil) {
			p.fatalf("Stats(%s) found = %v, the model has %v", name, ok, mp)
		}
		if !ok {
			continue
		}
		for _, fs := range []struct {
			f Family
			s PoolStats
		}{{IPv4, s4}, {IPv6, s6}} {
			used := 0
			for _, a := range universe(fs.f) {
				if mp.allocatable(a) && p.held(a) {
					used++
				}
			}
			total := mp.total(fs.f)
			got := []string{fs.s.Total.String(), fmt.Sprint(fs.s.Used), fs.s.Free.String()}
			want := []string{fmt.Sprint(total), fmt.Sprint(used), fmt.Sprint(total - used)}
			if diff := gocmp.Diff(want, got); diff != "" {
				p.fatalf("Stats(%s) %s [total used free] mismatch (-model +allocator):\n%s", name, fs.f, diff)
			}
		}
	}
	if p.t.Failed() {
		p.fatalf("internal state inconsistent")
	}
	checkInternalConsistency(p.t, p.a)
	if p.t.Failed() {
		p.fatalf("internal state inconsistent")
	}
}
