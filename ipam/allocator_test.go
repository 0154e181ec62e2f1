package ipam

import (
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, 0, len(ss))
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func strs(as []netip.Addr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

// autoPool is an auto-assign pool for everyone.
func autoPool(t testing.TB, name string, entries ...string) Pool {
	t.Helper()
	return Pool{Name: name, Ranges: mustRanges(t, entries...), AutoAssign: true}
}

func newAllocator(pools ...Pool) *Allocator {
	a := New()
	for _, p := range pools {
		a.SetPool(p)
	}
	return a
}

// v4 is a SingleStack IPv4 request of owner, named "ns/owner".
func v4(owner string) Request {
	return Request{Owner: owner, Name: "ns/" + owner, Subject: Subject{Namespace: "ns"}, Families: []Family{IPv4}, RequireAll: true}
}

func v6(owner string) Request {
	r := v4(owner)
	r.Families = []Family{IPv6}
	return r
}

// dual is a dual-stack request: RequireDualStack if require, else
// PreferDualStack.
func dual(owner string, require bool, fams ...Family) Request {
	r := v4(owner)
	r.Families, r.RequireAll = fams, require
	return r
}

// withAddrs asks for specific addresses.
func withAddrs(r Request, as ...string) Request {
	r.Addresses = addrs(as...)
	return r
}

func with(r Request, f func(*Request)) Request {
	f(&r)
	return r
}

func shared(r Request, key, policy string, ports ...Port) Request {
	r.Sharing = Sharing{Key: key, TrafficPolicy: policy, Ports: ports}
	return r
}

// addrComparer lets cmp compare netip.Addr values.
var addrComparer = cmp.Comparer(func(x, y netip.Addr) bool { return x == y })

var (
	tcp80  = Port{"TCP", 80}
	tcp443 = Port{"TCP", 443}
	udp53  = Port{"UDP", 53}
)

// mustEnsure runs Ensure and fails the test on error.
func mustEnsure(t testing.TB, a *Allocator, req Request) Allocation {
	t.Helper()
	al, err := a.Ensure(req)
	if err != nil {
		t.Fatalf("Ensure(%s): %v", req.Name, err)
	}
	return al
}

// ensureGets runs Ensure and checks the addresses it returns.
func ensureGets(t testing.TB, a *Allocator, req Request, want ...string) Allocation {
	t.Helper()
	al := mustEnsure(t, a, req)
	if diff := cmp.Diff(want, strs(al.Addresses)); diff != "" {
		t.Fatalf("Ensure(%s) addresses mismatch (-want +got):\n%s", req.Name, diff)
	}
	return al
}

// ensureFails runs Ensure, checks that it fails with an error wrapping
// target and containing each of msgs, and that the allocator did not change.
func ensureFails(t testing.TB, a *Allocator, req Request, target error, msgs ...string) error {
	t.Helper()
	before := dump(a)
	al, err := a.Ensure(req)
	if err == nil {
		t.Fatalf("Ensure(%s) = %v, want an error wrapping %q", req.Name, strs(al.Addresses), target)
	}
	if !errors.Is(err, target) {
		t.Errorf("Ensure(%s) error %q does not wrap %q", req.Name, err, target)
	}
	for _, m := range msgs {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("Ensure(%s) error %q does not contain %q", req.Name, err, m)
		}
	}
	if diff := cmp.Diff(before, dump(a)); diff != "" {
		t.Errorf("failed Ensure(%s) changed the allocator (-before +after):\n%s", req.Name, diff)
	}
	return err
}

// wantHolder checks who holds addr; no owners means free.
func wantHolder(t testing.TB, a *Allocator, addr string, key string, owners ...string) {
	t.Helper()
	h, ok := a.Holder(netip.MustParseAddr(addr))
	if len(owners) == 0 {
		if ok {
			t.Errorf("Holder(%s) = %+v, want free", addr, h)
		}
		return
	}
	if diff := cmp.Diff(Holding{Owners: owners, SharingKey: key}, h); diff != "" || !ok {
		t.Errorf("Holder(%s) (ok=%v) mismatch (-want +got):\n%s", addr, ok, diff)
	}
}

// wantLookup checks what owner holds; no addresses means nothing.
func wantLookup(t testing.TB, a *Allocator, owner string, want ...string) {
	t.Helper()
	al, ok := a.Lookup(owner)
	if len(want) == 0 {
		if ok {
			t.Errorf("Lookup(%s) = %v, want nothing", owner, strs(al.Addresses))
		}
		return
	}
	if !ok {
		t.Errorf("Lookup(%s) found nothing, want %v", owner, want)
		return
	}
	if diff := cmp.Diff(want, strs(al.Addresses)); diff != "" {
		t.Errorf("Lookup(%s) mismatch (-want +got):\n%s", owner, diff)
	}
}

// counts are one family's PoolStats as strings.
type counts struct{ Total, Used, Free string }

func countsOf(s PoolStats) counts {
	return counts{s.Total.String(), fmt.Sprint(s.Used), s.Free.String()}
}

func wantStats(t testing.TB, a *Allocator, pool string, v4, v6 counts) {
	t.Helper()
	s4, s6, ok := a.Stats(pool)
	if !ok {
		t.Fatalf("Stats(%q): no such pool", pool)
	}
	if diff := cmp.Diff([]counts{v4, v6}, []counts{countsOf(s4), countsOf(s6)}); diff != "" {
		t.Errorf("Stats(%q) [IPv4, IPv6] mismatch (-want +got):\n%s", pool, diff)
	}
}

// dump renders the allocator's whole state, to tell whether it changed.
func dump(a *Allocator) map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[string]string{}
	for o, st := range a.owners {
		out["owner "+o] = fmt.Sprint(st.name, strs(st.addrs))
	}
	for k, h := range a.holdings {
		out["holding "+k.addr(h.family).String()] = fmt.Sprintf("%s key=%q policy=%q members=%v", h.family, h.key, h.policy, h.members)
	}
	for g, ks := range a.groups {
		var as []string
		for k := range ks {
			as = append(as, fmt.Sprint(k))
		}
		slices.Sort(as)
		out["group "+g] = fmt.Sprint(as)
	}
	for name, ps := range a.pools {
		for i, fs := range ps.fam {
			var free []string
			fs.free.Ascend(func(iv interval) bool {
				free = append(free, fmt.Sprint(iv))
				return true
			})
			out[fmt.Sprintf("pool %s fam %d", name, i)] = fmt.Sprintf("total=%s inUse=%d free=%v", fs.total, fs.inUse, free)
		}
	}
	return out
}

func TestEnsureLowestFreeFirst(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/29", "2001:db8::/126"))
	for i := range 8 {
		ensureGets(t, a, v4(fmt.Sprint("o", i)), fmt.Sprint("192.0.2.", i))
	}
	for i, want := range []string{"2001:db8::", "2001:db8::1", "2001:db8::2", "2001:db8::3"} {
		ensureGets(t, a, v6(fmt.Sprint("s", i)), want)
	}
	a.Release("o5")
	a.Release("o2")
	ensureGets(t, a, v4("n1"), "192.0.2.2")
	ensureGets(t, a, v4("n2"), "192.0.2.5")
	ensureFails(t, a, v4("n3"), ErrExhausted)
}

func TestAvoidBuggyIPs(t *testing.T) {
	p := autoPool(t, "p", "192.0.2.254-192.0.3.1", "2001:db8::ff-2001:db8::100")
	p.AvoidBuggyIPs = true
	a := newAllocator(p)
	ensureGets(t, a, v4("a"), "192.0.2.254")
	ensureGets(t, a, v4("b"), "192.0.3.1")
	ensureFails(t, a, v4("c"), ErrExhausted, `pool "p": 2 of 2 IPv4 addresses in use`)
	// IPv6 has no such addresses to avoid.
	ensureGets(t, a, v6("d"), "2001:db8::ff")
	ensureGets(t, a, v6("e"), "2001:db8::100")
	wantStats(t, a, "p", counts{"2", "2", "0"}, counts{"2", "2", "0"})

	// Only buggy addresses: the pool has no IPv4 addresses at all.
	onlyBuggy := autoPool(t, "buggy", "192.0.2.255-192.0.3.0")
	onlyBuggy.AvoidBuggyIPs = true
	b := newAllocator(onlyBuggy)
	ensureFails(t, b, v4("a"), ErrNoPool, "no auto-assign pool with IPv4 addresses allows ns/a")
	wantStats(t, b, "buggy", counts{"0", "0", "0"}, counts{"0", "0", "0"})

	// The same addresses without AvoidBuggyIPs.
	c := newAllocator(autoPool(t, "p", "192.0.2.254-192.0.3.1"))
	for i, want := range []string{"192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1"} {
		ensureGets(t, c, v4(fmt.Sprint("o", i)), want)
	}
}

func TestAvoidBuggyIPsAcrossManyBlocks(t *testing.T) {
	p := autoPool(t, "p", "10.0.0.0/22")
	p.AvoidBuggyIPs = true
	a := newAllocator(p)
	var got []netip.Addr
	for i := 0; ; i++ {
		al, err := a.Ensure(v4(fmt.Sprint("o", i)))
		if err != nil {
			if !errors.Is(err, ErrExhausted) {
				t.Fatal(err)
			}
			break
		}
		got = append(got, al.Addresses[0])
	}
	var want []netip.Addr
	for a := netip.MustParseAddr("10.0.0.0"); a.Compare(netip.MustParseAddr("10.0.3.255")) <= 0; a = a.Next() {
		if b := a.As4()[3]; b != 0 && b != 255 {
			want = append(want, a)
		}
	}
	if diff := cmp.Diff(strs(want), strs(got)); diff != "" {
		t.Errorf("addresses handed out mismatch (-want +got):\n%s", diff)
	}
	wantStats(t, a, "p", counts{"1016", "1016", "0"}, counts{"0", "0", "0"})
}

func TestPriorityFallThrough(t *testing.T) {
	high := autoPool(t, "high", "198.51.100.0/31")
	high.Priority = 10
	a5 := autoPool(t, "a", "203.0.113.0/32")
	a5.Priority = 5
	b5 := autoPool(t, "b", "203.0.113.8/32")
	b5.Priority = 5
	low := autoPool(t, "low", "192.0.2.0/32")
	neg := autoPool(t, "negative", "192.0.2.100/32")
	neg.Priority = -3
	manual := Pool{Name: "manual", Ranges: mustRanges(t, "10.0.0.0/24"), Priority: 100}
	v6only := autoPool(t, "v6only", "2001:db8::/120")
	v6only.Priority = 50
	a := newAllocator(low, neg, b5, manual, a5, high, v6only)

	for i, want := range []string{"198.51.100.0", "198.51.100.1", "203.0.113.0", "203.0.113.8", "192.0.2.0", "192.0.2.100"} {
		al := ensureGets(t, a, v4(fmt.Sprint("o", i)), want)
		if len(al.Warnings) != 0 {
			t.Errorf("warnings: %q", al.Warnings)
		}
	}
	ensureFails(t, a, v4("full"), ErrExhausted,
		`IP pool exhausted: no free IPv4 address for ns/full (pool "high": 2 of 2 IPv4 addresses in use; pool "a": 1 of 1 IPv4 addresses in use; pool "b": 1 of 1 IPv4 addresses in use; pool "low": 1 of 1 IPv4 addresses in use; pool "negative": 1 of 1 IPv4 addresses in use)`)

	// Freed addresses are handed out again, highest priority first.
	a.Release("o3")
	a.Release("o1")
	ensureGets(t, a, v4("n1"), "198.51.100.1")
	ensureGets(t, a, v4("n2"), "203.0.113.8")
}

func TestExhaustionErrorAndRecovery(t *testing.T) {
	a := newAllocator(autoPool(t, "small", "192.0.2.0/31", "2001:db8::/127"))
	ensureGets(t, a, v4("a"), "192.0.2.0")
	ensureGets(t, a, v4("b"), "192.0.2.1")
	err := ensureFails(t, a, v4("c"), ErrExhausted)
	if want := `IP pool exhausted: no free IPv4 address for ns/c (pool "small": 2 of 2 IPv4 addresses in use)`; err.Error() != want {
		t.Errorf("error mismatch (-want +got):\n%s", cmp.Diff(want, err.Error()))
	}
	// The other family is unaffected.
	ensureGets(t, a, v6("d"), "2001:db8::")

	if diff := cmp.Diff([]string{"192.0.2.1"}, strs(a.Release("b"))); diff != "" {
		t.Errorf("Release(b) mismatch (-want +got):\n%s", diff)
	}
	if got := a.Release("b"); got != nil {
		t.Errorf("second Release(b) = %v, want nil", got)
	}
	if got := a.Release("never"); got != nil {
		t.Errorf("Release(never) = %v, want nil", got)
	}
	wantLookup(t, a, "b")
	wantHolder(t, a, "192.0.2.1", "")
	ensureGets(t, a, v4("c"), "192.0.2.1")
	wantStats(t, a, "small", counts{"2", "2", "0"}, counts{"2", "1", "1"})
}

func TestNoPools(t *testing.T) {
	a := New()
	ensureFails(t, a, v4("a"), ErrNoPools, "no IP pools configured: ns/a cannot get an address")
	a.SetPool(autoPool(t, "p", "192.0.2.0/30"))
	ensureGets(t, a, v4("a"), "192.0.2.0")
	a.DeletePool("p")
	ensureFails(t, a, v4("b"), ErrNoPools)
	// a keeps its address without any pool.
	ensureGets(t, a, v4("a"), "192.0.2.0")
}

func TestSelectors(t *testing.T) {
	onlyA := func(s Subject) error {
		if s.Namespace != "team-a" {
			return errors.New("not team-a")
		}
		return nil
	}
	teamA := autoPool(t, "team-a", "192.0.2.0/30")
	teamA.Refuses, teamA.Priority = onlyA, 10
	inA := func(r Request) Request { r.Subject.Namespace = "team-a"; return r }

	t.Run("only pool refuses", func(t *testing.T) {
		a := newAllocator(teamA)
		ensureFails(t, a, v4("b"), ErrNoPool, "no auto-assign pool with IPv4 addresses allows ns/b")
		ensureFails(t, a, with(v4("b"), func(r *Request) { r.Pool = "team-a" }), ErrNoPool, `pool "team-a" does not allow ns/b`)
		ensureFails(t, a, with(v4("b"), func(r *Request) { r.Addresses = addrs("192.0.2.1") }), ErrNoPool, `ns/b cannot use 192.0.2.1: pool "team-a" does not allow ns/b`)
		ensureGets(t, a, inA(v4("a")), "192.0.2.0")
		ensureGets(t, a, inA(with(v4("x"), func(r *Request) { r.Addresses = addrs("192.0.2.3") })), "192.0.2.3")
	})
	t.Run("falls through to an allowed pool", func(t *testing.T) {
		a := newAllocator(teamA, autoPool(t, "everyone", "198.51.100.0/30"))
		ensureGets(t, a, v4("b"), "198.51.100.0")
		ensureGets(t, a, inA(v4("a")), "192.0.2.0")
	})
	t.Run("selector sees the subject", func(t *testing.T) {
		var seen []Subject
		p := autoPool(t, "p", "192.0.2.0/30")
		p.Refuses = func(s Subject) error { seen = append(seen, s); return nil }
		a := newAllocator(p)
		req := v4("a")
		req.Subject = Subject{Namespace: "shop", NamespaceLabels: map[string]string{"team": "a"}, Labels: map[string]string{"app": "web"}}
		mustEnsure(t, a, req)
		if len(seen) == 0 {
			t.Fatal("Refuses was not called")
		}
		if diff := cmp.Diff(req.Subject, seen[0]); diff != "" {
			t.Errorf("Refuses got (-want +got):\n%s", diff)
		}
	})
}

func TestRequestPool(t *testing.T) {
	manual := Pool{Name: "manual", Ranges: mustRanges(t, "203.0.113.0/30")}
	a := newAllocator(autoPool(t, "auto", "192.0.2.0/30"), manual, autoPool(t, "v6", "2001:db8::/126"))
	named := func(owner, pool string) Request { return with(v4(owner), func(r *Request) { r.Pool = pool }) }

	ensureFails(t, a, named("a", "missing"), ErrNoPool, `pool "missing" requested by ns/a does not exist`)
	ensureFails(t, a, named("a", "v6"), ErrNoPool, `pool "v6" requested by ns/a has no IPv4 addresses`)
	ensureFails(t, a, with(v6("a"), func(r *Request) { r.Pool = "auto" }), ErrNoPool, `pool "auto" requested by ns/a has no IPv6 addresses`)
	// A pool without auto-assign serves requests that name it, and only
	// those.
	ensureGets(t, a, named("a", "manual"), "203.0.113.0")
	ensureGets(t, a, v4("b"), "192.0.2.0")
	// A named pool is the only one used, even when it is full.
	ensureGets(t, a, named("c", "auto"), "192.0.2.1")
	ensureGets(t, a, named("d", "auto"), "192.0.2.2")
	ensureGets(t, a, named("e", "auto"), "192.0.2.3")
	ensureFails(t, a, named("f", "auto"), ErrExhausted, `(pool "auto": 4 of 4 IPv4 addresses in use)`)
	ensureFails(t, a, v4("f"), ErrExhausted, `(pool "auto": 4 of 4 IPv4 addresses in use)`)

	onlyManual := newAllocator(manual)
	ensureFails(t, onlyManual, v4("a"), ErrNoPool, "no auto-assign pool with IPv4 addresses allows ns/a")
}

func TestExplicitAddresses(t *testing.T) {
	manual := Pool{Name: "manual", Ranges: mustRanges(t, "203.0.113.0/24")}
	buggy := autoPool(t, "buggy", "198.51.100.0/24")
	buggy.AvoidBuggyIPs = true
	a := newAllocator(autoPool(t, "auto", "192.0.2.0/24", "2001:db8::/64"), manual, buggy)
	explicit := func(owner string, as ...string) Request {
		return with(v4(owner), func(r *Request) { r.Addresses = addrs(as...) })
	}

	for _, tc := range []struct {
		name string
		req  Request
		want []string
	}{
		{"in an auto-assign pool", explicit("a", "192.0.2.77"), []string{"192.0.2.77"}},
		{"in a manual pool", explicit("b", "203.0.113.9"), []string{"203.0.113.9"}},
		{"pool named and right", with(explicit("c", "203.0.113.10"), func(r *Request) { r.Pool = "manual" }), []string{"203.0.113.10"}},
		{"ordinary address of an avoiding pool", explicit("d", "198.51.100.1"), []string{"198.51.100.1"}},
		{"buggy address of an ordinary pool", explicit("e", "192.0.2.255"), []string{"192.0.2.255"}},
		{"IPv6", with(v6("f"), func(r *Request) { r.Addresses = addrs("2001:db8::abc") }), []string{"2001:db8::abc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ensureGets(t, a, tc.req, tc.want...)
			wantHolder(t, a, tc.want[0], "", tc.req.Name)
			ensureGets(t, a, tc.req, tc.want...) // idempotent
		})
	}
	for _, tc := range []struct {
		name   string
		req    Request
		target error
		msg    string
	}{
		{"in no pool", explicit("x", "10.1.2.3"), ErrNoPool, "no usable IP pool: ns/x cannot use 10.1.2.3: it is in no IP pool"},
		{"other pool named", with(explicit("x", "192.0.2.9"), func(r *Request) { r.Pool = "manual" }), ErrNoPool, `ns/x cannot use 192.0.2.9: it is in pool "auto", not the requested pool "manual"`},
		{"missing pool named", with(explicit("x", "192.0.2.9"), func(r *Request) { r.Pool = "missing" }), ErrNoPool, `it is in pool "auto", not the requested pool "missing"`},
		{"buggy .0", explicit("x", "198.51.100.0"), ErrNoPool, `ns/x cannot use 198.51.100.0: pool "buggy" avoids addresses ending in .0 and .255`},
		{"buggy .255", explicit("x", "198.51.100.255"), ErrNoPool, `pool "buggy" avoids addresses ending in .0 and .255`},
		{"held by another", explicit("x", "192.0.2.77"), ErrConflict, "address conflict: ns/x cannot use 192.0.2.77: it is in use, and this Service has no sharing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ensureFails(t, a, tc.req, tc.target, tc.msg)
			wantLookup(t, a, "x")
		})
	}

	t.Run("auto requests skip explicitly held addresses", func(t *testing.T) {
		b := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		ensureGets(t, b, explicit("a", "192.0.2.0"), "192.0.2.0")
		ensureGets(t, b, explicit("b", "192.0.2.2"), "192.0.2.2")
		ensureGets(t, b, v4("c"), "192.0.2.1")
		ensureGets(t, b, v4("d"), "192.0.2.3")
		ensureFails(t, b, v4("e"), ErrExhausted)
		b.Release("b")
		ensureGets(t, b, v4("e"), "192.0.2.2")
	})
	t.Run("refused by one of overlapping pools", func(t *testing.T) {
		// Every pool that contains an address must allow the request:
		// the open pool does not open the closed pool's addresses.
		closed := autoPool(t, "closed", "192.0.2.0/24")
		closed.Priority, closed.Refuses = 10, func(s Subject) error {
			if s.Namespace != "in" {
				return errors.New("closed")
			}
			return nil
		}
		b := newAllocator(closed, Pool{Name: "open", Ranges: mustRanges(t, "192.0.2.128/25")})
		ensureFails(t, b, explicit("a", "192.0.2.5"), ErrNoPool, `pool "closed" does not allow ns/a`)
		ensureFails(t, b, explicit("a", "192.0.2.200"), ErrNoPool,
			`ns/a cannot use 192.0.2.200: pool "closed" does not allow ns/a: closed; an address must be allowed by every IPPool that contains it`)
		al := ensureGets(t, b, with(explicit("a", "192.0.2.200"), func(r *Request) { r.Subject.Namespace = "in" }), "192.0.2.200")
		// Allocation.Pools names the first pool by priority.
		if diff := cmp.Diff([]string{"closed"}, al.Pools); diff != "" {
			t.Errorf("Pools mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("buggy in one overlapping pool, fine in another", func(t *testing.T) {
		avoid := autoPool(t, "avoid", "192.0.2.0/24")
		avoid.AvoidBuggyIPs, avoid.Priority = true, 10
		b := newAllocator(avoid, autoPool(t, "plain", "192.0.2.0/24"))
		ensureGets(t, b, explicit("a", "192.0.2.255"), "192.0.2.255")
		ensureFails(t, b, with(explicit("b", "192.0.2.0"), func(r *Request) { r.Pool = "avoid" }), ErrNoPool, `pool "avoid" avoids addresses ending in .0 and .255`)
		wantStats(t, b, "avoid", counts{"254", "0", "254"}, counts{"0", "0", "0"})
		wantStats(t, b, "plain", counts{"256", "1", "255"}, counts{"0", "0", "0"})
	})
}

func TestInvalidRequests(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/24", "2001:db8::/64"))
	for _, tc := range []struct {
		name string
		req  Request
		msg  string
	}{
		{"no families", dual("x", true), "invalid request: ns/x asks for families []"},
		{"three families", dual("x", false, IPv4, IPv6, IPv4), "asks for families [IPv4 IPv6 IPv4]"},
		{"same family twice", dual("x", false, IPv6, IPv6), "asks for families [IPv6 IPv6]"},
		{"unknown family", dual("x", true, Family(5)), "asks for families [unknown family]"},
		{"address of an unwanted family", with(v4("x"), func(r *Request) { r.Addresses = addrs("2001:db8::1") }), "requested address 2001:db8::1 is IPv6, but ns/x has ipFamilies [IPv4]"},
		{"two addresses of a family", with(dual("x", false, IPv4, IPv6), func(r *Request) { r.Addresses = addrs("192.0.2.1", "192.0.2.2") }), "ns/x requests more than one IPv4 address"},
		{"RequireDualStack with one address", with(dual("x", true, IPv4, IPv6), func(r *Request) { r.Addresses = addrs("192.0.2.1") }), "ns/x requires [IPv4 IPv6] but requests addresses only for [IPv4]"},
		{"IPv4-mapped address", with(v6("x"), func(r *Request) { r.Addresses = addrs("::ffff:192.0.2.1") }), "::ffff:192.0.2.1"},
		{"IPv4-mapped first address of a range", with(v6("x"), func(r *Request) { r.Addresses = addrs("::ffff:192.0.2.0") }), "::ffff:192.0.2.0"},
		{"zoned address", with(v6("x"), func(r *Request) { r.Addresses = addrs("2001:db8::1%eth0") }), "zone"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ensureFails(t, a, tc.req, ErrInvalid, tc.msg)
		})
	}
	// None of that touched the IPv4 address with the same key.
	ensureGets(t, a, v4("y"), "192.0.2.0")
	wantHolder(t, a, "192.0.2.0", "", "ns/y")
}

func TestDualStack(t *testing.T) {
	pools := func() *Allocator {
		return newAllocator(autoPool(t, "p", "192.0.2.0/31", "2001:db8::/127"))
	}
	t.Run("SingleStack", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, v6("b"), "2001:db8::")
	})
	t.Run("PreferDualStack gets both, in the order asked", func(t *testing.T) {
		a := pools()
		al := ensureGets(t, a, dual("a", false, IPv4, IPv6), "192.0.2.0", "2001:db8::")
		if diff := cmp.Diff([]string{"p", "p"}, al.Pools); diff != "" {
			t.Errorf("Pools mismatch (-want +got):\n%s", diff)
		}
		ensureGets(t, a, dual("b", false, IPv6, IPv4), "2001:db8::1", "192.0.2.1")
		wantLookup(t, a, "b", "2001:db8::1", "192.0.2.1")
	})
	t.Run("RequireDualStack gets both", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, dual("a", true, IPv6, IPv4), "2001:db8::", "192.0.2.0")
	})
	t.Run("PreferDualStack with one family exhausted", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, v6("x"), "2001:db8::")
		ensureGets(t, a, v6("y"), "2001:db8::1")
		al := ensureGets(t, a, dual("a", false, IPv6, IPv4), "192.0.2.0")
		if len(al.Warnings) != 1 || !strings.Contains(al.Warnings[0], "no free IPv6 address for ns/a") {
			t.Errorf("Warnings = %q, want one about IPv6", al.Warnings)
		}
		// Once IPv6 frees up, the next Ensure adds it and keeps IPv4.
		a.Release("x")
		al = ensureGets(t, a, dual("a", false, IPv6, IPv4), "2001:db8::", "192.0.2.0")
		if len(al.Warnings) != 0 {
			t.Errorf("Warnings = %q, want none", al.Warnings)
		}
	})
	t.Run("PreferDualStack without pools of a family", func(t *testing.T) {
		a := newAllocator(autoPool(t, "v4", "192.0.2.0/31"))
		al := ensureGets(t, a, dual("a", false, IPv4, IPv6), "192.0.2.0")
		if diff := cmp.Diff([]string{"no usable IP pool: no auto-assign pool with IPv6 addresses allows ns/a"}, al.Warnings); diff != "" {
			t.Errorf("Warnings mismatch (-want +got):\n%s", diff)
		}
	})
	t.Run("PreferDualStack with nothing available", func(t *testing.T) {
		a := newAllocator(autoPool(t, "v4", "192.0.2.0/32"))
		ensureGets(t, a, v4("x"), "192.0.2.0")
		err := ensureFails(t, a, dual("a", false, IPv4, IPv6), ErrExhausted)
		if !errors.Is(err, ErrNoPool) {
			t.Errorf("error %q does not also wrap ErrNoPool", err)
		}
	})
	t.Run("RequireDualStack with only IPv4 pools", func(t *testing.T) {
		a := newAllocator(autoPool(t, "v4", "192.0.2.0/31"))
		ensureFails(t, a, dual("a", true, IPv4, IPv6), ErrNoPool, "IPv6")
		wantLookup(t, a, "a")
		wantHolder(t, a, "192.0.2.0", "")
		wantStats(t, a, "v4", counts{"2", "0", "2"}, counts{"0", "0", "0"})
		ensureGets(t, a, v4("b"), "192.0.2.0")
	})
	t.Run("RequireDualStack with IPv6 exhausted", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, v6("x"), "2001:db8::")
		ensureGets(t, a, v6("y"), "2001:db8::1")
		ensureFails(t, a, dual("a", true, IPv4, IPv6), ErrExhausted, "no free IPv6 address for ns/a")
		wantLookup(t, a, "a")
		wantStats(t, a, "p", counts{"2", "0", "2"}, counts{"2", "2", "0"})
	})
	t.Run("RequireDualStack failing keeps what the owner had", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, v6("x"), "2001:db8::")
		ensureGets(t, a, v6("y"), "2001:db8::1")
		ensureFails(t, a, dual("a", true, IPv4, IPv6), ErrExhausted)
		wantLookup(t, a, "a", "192.0.2.0")
	})
	t.Run("a family no longer wanted is released", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, dual("a", true, IPv4, IPv6), "192.0.2.0", "2001:db8::")
		ensureGets(t, a, v6("a"), "2001:db8::")
		wantHolder(t, a, "192.0.2.0", "")
		wantStats(t, a, "p", counts{"2", "0", "2"}, counts{"2", "1", "1"})
	})
	t.Run("explicit address of one family serves only that family", func(t *testing.T) {
		a := pools()
		ensureGets(t, a, with(dual("a", false, IPv4, IPv6), func(r *Request) { r.Addresses = addrs("192.0.2.1") }), "192.0.2.1")
		ensureGets(t, a, with(dual("b", true, IPv4, IPv6), func(r *Request) { r.Addresses = addrs("2001:db8::1", "192.0.2.0") }), "192.0.2.0", "2001:db8::1")
	})
}

func TestSharing(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
	ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp80), "192.0.2.0")
	ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
	wantHolder(t, a, "192.0.2.0", "k", "ns/a", "ns/b")
	wantStats(t, a, "p", counts{"8", "1", "7"}, counts{"0", "0", "0"})

	// Auto requests that cannot join get addresses of their own.
	ensureGets(t, a, shared(v4("local"), "k", "Local", udp53), "192.0.2.1")
	ensureGets(t, a, shared(v4("overlap"), "k", "Cluster", tcp80), "192.0.2.2")
	ensureGets(t, a, shared(v4("otherkey"), "k2", "Cluster", udp53), "192.0.2.3")
	ensureGets(t, a, v4("nokey"), "192.0.2.4")
	// A compatible auto request joins the lowest compatible address
	// before taking a free one.
	ensureGets(t, a, shared(v4("c"), "k", "Cluster", udp53), "192.0.2.0")
	ensureGets(t, a, shared(v4("d"), "k", "Cluster", udp53), "192.0.2.2")
	wantHolder(t, a, "192.0.2.0", "k", "ns/a", "ns/b", "ns/c")
	wantHolder(t, a, "192.0.2.2", "k", "ns/d", "ns/overlap")

	explicit := func(r Request, addr string) Request { r.Addresses = addrs(addr); return r }
	for _, tc := range []struct {
		name string
		req  Request
		msg  string
	}{
		{"no key", explicit(v4("x"), "192.0.2.0"), "address conflict: ns/x cannot use 192.0.2.0: it is in use, and this Service has no sharing key"},
		{"other key", explicit(shared(v4("x"), "other", "Cluster"), "192.0.2.0"), `it is in use and not shared with this Service (its sharing key "other" is not the holders'`},
		{"other policy", explicit(shared(v4("x"), "k", "Local"), "192.0.2.0"), "its sharers use externalTrafficPolicy Cluster, this Service uses Local"},
		{"port in use", explicit(shared(v4("x"), "k", "Cluster", Port{"SCTP", 9}, tcp443), "192.0.2.0"), "a sharer already uses TCP/443"},
		{"exclusive holder", explicit(shared(v4("x"), "k", "Cluster"), "192.0.2.4"), `it is in use and not shared with this Service (its sharing key "k" is not the holders'`},
		{"exclusive holder, no key", explicit(v4("x"), "192.0.2.4"), "it is in use, and this Service has no sharing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ensureFails(t, a, tc.req, ErrConflict, tc.msg)
		})
	}
	// An explicit compatible request joins.
	ensureGets(t, a, explicit(shared(v4("e"), "k", "Cluster", Port{"SCTP", 9}), "192.0.2.0"), "192.0.2.0")
	wantHolder(t, a, "192.0.2.0", "k", "ns/a", "ns/b", "ns/c", "ns/e")

	// The address stays until its last holder leaves.
	a.Release("a")
	wantHolder(t, a, "192.0.2.0", "k", "ns/b", "ns/c", "ns/e")
	a.Release("c")
	wantHolder(t, a, "192.0.2.0", "k", "ns/b", "ns/e")
	a.Release("b")
	wantHolder(t, a, "192.0.2.0", "k", "ns/e")
	a.Release("e")
	wantHolder(t, a, "192.0.2.0", "")
	ensureGets(t, a, v4("f"), "192.0.2.0")
}

func TestSharingIsPerFamily(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
	ensureGets(t, a, shared(dual("a", true, IPv4, IPv6), "k", "Cluster", tcp80), "192.0.2.0", "2001:db8::")
	ensureGets(t, a, shared(v6("b"), "k", "Cluster", tcp443), "2001:db8::")
	ensureGets(t, a, shared(dual("c", true, IPv6, IPv4), "k", "Cluster", udp53), "2001:db8::", "192.0.2.0")
	wantHolder(t, a, "2001:db8::", "k", "ns/a", "ns/b", "ns/c")
	wantHolder(t, a, "192.0.2.0", "k", "ns/a", "ns/c")
}

func TestSharingKeyChanges(t *testing.T) {
	t.Run("a member leaves the group for another key", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp80), "192.0.2.0")
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
		ensureGets(t, a, shared(v4("b"), "k2", "Cluster", tcp443), "192.0.2.1")
		wantHolder(t, a, "192.0.2.0", "k", "ns/a")
		wantHolder(t, a, "192.0.2.1", "k2", "ns/b")
		// ... or for none.
		ensureGets(t, a, shared(v4("c"), "k", "Cluster", udp53), "192.0.2.0")
		ensureGets(t, a, v4("c"), "192.0.2.2")
		wantHolder(t, a, "192.0.2.0", "k", "ns/a")
		wantStats(t, a, "p", counts{"8", "3", "5"}, counts{"0", "0", "0"})
	})
	t.Run("a sole holder keeps its address under the new key", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp80), "192.0.2.0")
		ensureGets(t, a, shared(v4("a"), "k2", "Local", tcp80), "192.0.2.0")
		wantHolder(t, a, "192.0.2.0", "k2", "ns/a")
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.1")
		ensureGets(t, a, shared(v4("c"), "k2", "Local", tcp443), "192.0.2.0")
		// Dropping the key makes it exclusive again, once alone.
		a.Release("c")
		ensureGets(t, a, v4("a"), "192.0.2.0")
		wantHolder(t, a, "192.0.2.0", "", "ns/a")
		ensureGets(t, a, shared(v4("d"), "k2", "Local", tcp443), "192.0.2.2")
		a.mu.Lock()
		groups := len(a.groups["k2"])
		a.mu.Unlock()
		if groups != 1 {
			t.Errorf("group k2 has %d addresses, want 1", groups)
		}
	})
	t.Run("a member changing policy or ports incompatibly fails", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp80), "192.0.2.0")
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
		ensureFails(t, a, shared(v4("b"), "k", "Local", tcp443), ErrConflict, "ns/b cannot keep sharing 192.0.2.0: its sharers use externalTrafficPolicy Cluster, this Service uses Local")
		ensureFails(t, a, shared(v4("b"), "k", "Cluster", tcp80), ErrConflict, "a sharer already uses TCP/80")
		// Compatible changes of ports are fine.
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", udp53, tcp443), "192.0.2.0")
		ensureFails(t, a, withAddrs(shared(v4("c"), "k", "Cluster", udp53), "192.0.2.0"), ErrConflict, "a sharer already uses UDP/53")
	})
}

func TestEnsureIdempotent(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
	for _, req := range []Request{
		v4("a"),
		dual("b", true, IPv6, IPv4),
		shared(v4("c"), "k", "Cluster", tcp80),
		withAddrs(v4("d"), "192.0.2.3"),
	} {
		first := mustEnsure(t, a, req)
		before := dump(a)
		for range 3 {
			if diff := cmp.Diff(first, mustEnsure(t, a, req), addrComparer); diff != "" {
				t.Errorf("repeated Ensure(%s) mismatch (-first +again):\n%s", req.Name, diff)
			}
		}
		if diff := cmp.Diff(before, dump(a)); diff != "" {
			t.Errorf("repeated Ensure(%s) changed the allocator (-before +after):\n%s", req.Name, diff)
		}
	}
	wantStats(t, a, "p", counts{"4", "4", "0"}, counts{"4", "1", "3"})
}

func TestKeepRules(t *testing.T) {
	setup := func(t *testing.T) *Allocator {
		t.Helper()
		pb := autoPool(t, "b", "198.51.100.0/29", "2001:db8::/126")
		pb.Priority = -1
		a := newAllocator(autoPool(t, "a", "192.0.2.0/29"), pb)
		ensureGets(t, a, v4("x"), "192.0.2.0") // x must keep or lose this
		ensureGets(t, a, v4("o"), "192.0.2.1")
		return a
	}
	for _, tc := range []struct {
		name string
		req  Request
		want []string
		// freed says whether 192.0.2.0 is free afterwards.
		freed bool
	}{
		{"same request", v4("x"), []string{"192.0.2.0"}, false},
		{"the address asked for", withAddrs(v4("x"), "192.0.2.0"), []string{"192.0.2.0"}, false},
		{"another address asked for", withAddrs(v4("x"), "192.0.2.5"), []string{"192.0.2.5"}, true},
		{"its pool named", with(v4("x"), func(r *Request) { r.Pool = "a" }), []string{"192.0.2.0"}, false},
		{"another pool named", with(v4("x"), func(r *Request) { r.Pool = "b" }), []string{"198.51.100.0"}, true},
		{"other ports", shared(v4("x"), "", "Local", tcp443), []string{"192.0.2.0"}, false},
		{"a sharing key", shared(v4("x"), "k", "Cluster", tcp443), []string{"192.0.2.0"}, false},
		{"the other family only", v6("x"), []string{"2001:db8::"}, true},
		{"another family added", dual("x", true, IPv4, IPv6), []string{"192.0.2.0", "2001:db8::"}, false},
		{"another selector-permitted subject", with(v4("x"), func(r *Request) { r.Subject.Namespace = "other" }), []string{"192.0.2.0"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := setup(t)
			ensureGets(t, a, tc.req, tc.want...)
			if _, held := a.Holder(netip.MustParseAddr("192.0.2.0")); held == tc.freed {
				t.Errorf("192.0.2.0 held = %v, want %v", held, !tc.freed)
			}
			wantHolder(t, a, "192.0.2.1", "", "ns/o")
		})
	}
	for _, tc := range []struct {
		name   string
		req    Request
		target error
		msg    string
	}{
		{"a missing pool named", with(v4("x"), func(r *Request) { r.Pool = "missing" }), ErrNoPool, `pool "missing" requested by ns/x does not exist`},
		{"the address asked for, in another pool than named", with(withAddrs(v4("x"), "192.0.2.0"), func(r *Request) { r.Pool = "b" }), ErrNoPool, `it is in pool "a", not the requested pool "b"`},
		{"another address asked for, held", withAddrs(v4("x"), "192.0.2.1"), ErrConflict, "192.0.2.1: it is in use"},
		{"another pool named, full", with(v4("x"), func(r *Request) { r.Pool = "a2" }), ErrExhausted, `pool "a2": 1 of 1 IPv4`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := setup(t)
			a.SetPool(Pool{Name: "a2", Ranges: mustRanges(t, "203.0.113.1/32")})
			ensureGets(t, a, withAddrs(v4("y"), "203.0.113.1"), "203.0.113.1")
			ensureFails(t, a, tc.req, tc.target, tc.msg)
			wantLookup(t, a, "x", "192.0.2.0")
		})
	}
}

func TestPoolChangesKeepAddresses(t *testing.T) {
	t.Run("deleted", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"), autoPool(t, "q", "198.51.100.0/30"))
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, with(v4("b"), func(r *Request) { r.Pool = "p" }), "192.0.2.1")
		a.DeletePool("p")
		a.DeletePool("p") // twice is harmless
		if _, _, ok := a.Stats("p"); ok {
			t.Error("Stats of a deleted pool found it")
		}
		al, _ := a.Lookup("a")
		if diff := cmp.Diff([]string{""}, al.Pools); diff != "" {
			t.Errorf("Pools of an address in no pool mismatch (-want +got):\n%s", diff)
		}
		ensureGets(t, a, v4("a"), "192.0.2.0")
		// Even a request naming the deleted pool keeps it.
		ensureGets(t, a, with(v4("b"), func(r *Request) { r.Pool = "p" }), "192.0.2.1")
		ensureGets(t, a, v4("c"), "198.51.100.0")
		// Back again, the pool counts both and does not hand them out.
		a.SetPool(autoPool(t, "p", "192.0.2.0/30"))
		wantStats(t, a, "p", counts{"4", "2", "2"}, counts{"0", "0", "0"})
		ensureGets(t, a, with(v4("d"), func(r *Request) { r.Pool = "p" }), "192.0.2.2")
	})
	t.Run("shrunk", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, v4("b"), "192.0.2.1")
		ensureGets(t, a, withAddrs(v4("c"), "192.0.2.4"), "192.0.2.4")
		a.SetPool(autoPool(t, "p", "192.0.2.4/30"))
		wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"0", "0", "0"})
		ensureGets(t, a, with(v4("a"), func(r *Request) { r.Pool = "p" }), "192.0.2.0")
		ensureGets(t, a, v4("b"), "192.0.2.1")
		ensureGets(t, a, v4("d"), "192.0.2.5")
		// Grown back, the kept addresses are not handed out again.
		a.SetPool(autoPool(t, "p", "192.0.2.0/29"))
		wantStats(t, a, "p", counts{"8", "4", "4"}, counts{"0", "0", "0"})
		ensureGets(t, a, v4("e"), "192.0.2.2")
	})
	t.Run("grown", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/31"))
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, v4("b"), "192.0.2.1")
		ensureFails(t, a, v4("c"), ErrExhausted)
		a.SetPool(autoPool(t, "p", "192.0.2.0/30"))
		ensureGets(t, a, v4("c"), "192.0.2.2")
	})
	t.Run("made to avoid buggy addresses", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.254-192.0.3.1"))
		ensureGets(t, a, v4("a"), "192.0.2.254")
		ensureGets(t, a, v4("b"), "192.0.2.255")
		p := autoPool(t, "p", "192.0.2.254-192.0.3.1")
		p.AvoidBuggyIPs = true
		a.SetPool(p)
		wantStats(t, a, "p", counts{"2", "1", "1"}, counts{"0", "0", "0"})
		ensureGets(t, a, v4("b"), "192.0.2.255")
		ensureGets(t, a, v4("c"), "192.0.3.1")
		a.Release("b")
		ensureFails(t, a, v4("d"), ErrExhausted)
		wantStats(t, a, "p", counts{"2", "2", "0"}, counts{"0", "0", "0"})
	})
	t.Run("pool edits do not change the selector of others", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		p := autoPool(t, "p", "192.0.2.0/30")
		p.AutoAssign = false
		a.SetPool(p)
		ensureFails(t, a, v4("a"), ErrNoPool)
		ensureGets(t, a, with(v4("a"), func(r *Request) { r.Pool = "p" }), "192.0.2.0")
	})
}

func TestSetPoolCopiesRanges(t *testing.T) {
	p := autoPool(t, "p", "192.0.2.0/30")
	a := newAllocator(p)
	p.Ranges[0] = rng("198.51.100.0", "198.51.100.3")
	ensureGets(t, a, v4("a"), "192.0.2.0")
}

func TestRestore(t *testing.T) {
	t.Run("an address in no pool is kept", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		if err := a.Restore(v4("a"), addrs("203.0.113.7")); err != nil {
			t.Fatal(err)
		}
		al, _ := a.Lookup("a")
		if diff := cmp.Diff(Allocation{Addresses: addrs("203.0.113.7"), Pools: []string{""}}, al, addrComparer); diff != "" {
			t.Errorf("Lookup mismatch (-want +got):\n%s", diff)
		}
		wantHolder(t, a, "203.0.113.7", "", "ns/a")
		ensureGets(t, a, v4("a"), "203.0.113.7")
		ensureGets(t, a, with(v4("a"), func(r *Request) { r.Pool = "p" }), "203.0.113.7")
		wantStats(t, a, "p", counts{"4", "0", "4"}, counts{"0", "0", "0"})
		// An explicit request for it fails: it is in no pool.
		ensureFails(t, a, withAddrs(v4("b"), "203.0.113.7"), ErrNoPool, "it is in no IP pool")
	})
	t.Run("an address in a pool is not handed out again", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
		if err := a.Restore(dual("a", true, IPv4, IPv6), addrs("192.0.2.0", "2001:db8::1")); err != nil {
			t.Fatal(err)
		}
		wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"4", "1", "3"})
		ensureGets(t, a, dual("b", true, IPv4, IPv6), "192.0.2.1", "2001:db8::")
		ensureGets(t, a, dual("a", true, IPv4, IPv6), "192.0.2.0", "2001:db8::1")
	})
	t.Run("restoring twice changes nothing", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		for range 2 {
			if err := a.Restore(v4("a"), addrs("192.0.2.2")); err != nil {
				t.Fatal(err)
			}
		}
		wantHolder(t, a, "192.0.2.2", "", "ns/a")
		wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"0", "0", "0"})
	})
	t.Run("nothing to restore", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		if err := a.Restore(v4("a"), nil); err != nil {
			t.Fatal(err)
		}
		wantLookup(t, a, "a")
	})
	t.Run("conflicts are reported, the rest restored", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
		ensureGets(t, a, v4("a"), "192.0.2.0")
		err := a.Restore(dual("b", true, IPv4, IPv6), addrs("192.0.2.0", "2001:db8::2"))
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "ns/b cannot keep 192.0.2.0: it is in use") {
			t.Errorf("Restore error = %v, want a conflict", err)
		}
		if te := TakenErrors(err); len(te) != 1 || !slices.Equal(te[0].Holders, []string{"ns/a"}) {
			t.Errorf("TakenErrors(%v) = %+v, want one naming ns/a for the log", err, te)
		}
		wantLookup(t, a, "b", "2001:db8::2")
		wantHolder(t, a, "192.0.2.0", "", "ns/a")
	})
	t.Run("two addresses of a family", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		err := a.Restore(v4("a"), addrs("192.0.2.1", "192.0.2.2"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "ns/a lists a second IPv4 address 192.0.2.2") {
			t.Errorf("Restore error = %v, want ErrInvalid", err)
		}
		wantLookup(t, a, "a", "192.0.2.1")
		wantHolder(t, a, "192.0.2.2", "")
	})
	t.Run("sharing", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		if err := a.Restore(shared(v4("a"), "k", "Cluster", tcp80), addrs("192.0.2.3")); err != nil {
			t.Fatal(err)
		}
		if err := a.Restore(shared(v4("b"), "k", "Cluster", tcp443), addrs("192.0.2.3")); err != nil {
			t.Fatal(err)
		}
		if got := a.SharingConflicts("b"); len(got) != 0 {
			t.Errorf("SharingConflicts(b) = %q, want none", got)
		}
		// c clashes with b on TCP/443 but shares the key: a restart never
		// re-addresses it; the clash is reported instead.
		if err := a.Restore(shared(v4("c"), "k", "Cluster", tcp443), addrs("192.0.2.3")); err != nil {
			t.Errorf("Restore of a sharer with a port clash: %v, want it kept", err)
		}
		wantHolder(t, a, "192.0.2.3", "k", "ns/a", "ns/b", "ns/c")
		wantLookup(t, a, "c", "192.0.2.3")
		if got := a.SharingConflicts("c"); len(got) != 1 || got[0].Reason != ReasonPort || !strings.Contains(got[0].Detail, "ns/c and ns/b both use TCP/443") ||
			got[0].Message != "this Service and a sharer that came before it both use TCP/443" {
			t.Errorf("SharingConflicts(c) = %+v, want the TCP/443 clash", got)
		}
		// A different traffic policy under the same key is kept too.
		if err := a.Restore(shared(v4("e"), "k", "Local", udp53), addrs("192.0.2.3")); err != nil {
			t.Errorf("Restore of a sharer with another policy: %v, want it kept", err)
		}
		if got := a.SharingConflicts("e"); len(got) != 1 || got[0].Reason != ReasonTrafficPolicy || !strings.Contains(got[0].Message, "externalTrafficPolicy Local") {
			t.Errorf("SharingConflicts(e) = %+v, want the policy clash", got)
		}
		if n := a.ConflictingAddresses(); n != 1 {
			t.Errorf("ConflictingAddresses() = %d, want 1", n)
		}
		// Ensure of the clashing latecomer fails and changes nothing: the
		// user must fix the ports. The sharers before it keep working.
		if _, err := a.Ensure(shared(v4("c"), "k", "Cluster", tcp443)); !errors.Is(err, ErrConflict) {
			t.Errorf("Ensure(c) = %v, want ErrConflict", err)
		}
		wantLookup(t, a, "c", "192.0.2.3")
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.3")
		// An earlier sharer that changes its ports into a clash is refused.
		if _, err := a.Ensure(shared(v4("a"), "k", "Cluster", tcp443)); !errors.Is(err, ErrConflict) {
			t.Errorf("Ensure(a) with b's port = %v, want ErrConflict", err)
		}
		wantLookup(t, a, "a", "192.0.2.3")
		// Without a common key an address is lost, with the reason.
		err := a.Restore(shared(v4("f"), "other", "Cluster", udp53), addrs("192.0.2.3"))
		if te := TakenErrors(err); !errors.Is(err, ErrConflict) || len(te) != 1 || !strings.Contains(te[0].Detail, `under sharing key "k", not "other"`) {
			t.Errorf("Restore error = %v, want a key conflict", err)
		}
		err = a.Restore(v4("g"), addrs("192.0.2.3"))
		if !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "this Service has no sharing key") {
			t.Errorf("Restore error = %v, want a conflict for a Service without a key", err)
		}
		wantLookup(t, a, "f")
		wantLookup(t, a, "g")
		// An alias key (annotations that disagree) keeps the address.
		req := shared(v4("h"), "", "Cluster", Port{"UDP", 80})
		req.Sharing.Aliases = []string{"x", "k"}
		if err := a.Restore(req, addrs("192.0.2.3")); err != nil {
			t.Errorf("Restore with an alias key: %v", err)
		}
		wantLookup(t, a, "h", "192.0.2.3")
		wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"0", "0", "0"})
	})
	t.Run("sharing: auto requests join a restored group", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
		if err := a.Restore(shared(v4("a"), "k", "Cluster", tcp80), addrs("192.0.2.3")); err != nil {
			t.Fatal(err)
		}
		ensureGets(t, a, shared(v4("d"), "k", "Cluster", udp53), "192.0.2.3")
		wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"0", "0", "0"})
	})
	t.Run("a buggy address of an avoiding pool", func(t *testing.T) {
		p := autoPool(t, "p", "192.0.2.0/24")
		p.AvoidBuggyIPs = true
		a := newAllocator(p)
		if err := a.Restore(v4("a"), addrs("192.0.2.0")); err != nil {
			t.Fatal(err)
		}
		wantStats(t, a, "p", counts{"254", "0", "254"}, counts{"0", "0", "0"})
		ensureGets(t, a, v4("a"), "192.0.2.0")
		a.Release("a")
		wantStats(t, a, "p", counts{"254", "0", "254"}, counts{"0", "0", "0"})
		ensureGets(t, a, v4("b"), "192.0.2.1")
	})
	t.Run("IPv4-mapped and zoned addresses are refused", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/120"))
		for _, s := range []string{"::ffff:192.0.2.0", "::ffff:192.0.2.1", "2001:db8::1%eth0"} {
			err := a.Restore(v6("m"), addrs(s))
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("Restore(%s) error = %v, want ErrInvalid", s, err)
			}
		}
		wantLookup(t, a, "m")
		ensureGets(t, a, v4("a"), "192.0.2.0")
		ensureGets(t, a, v4("b"), "192.0.2.1")
		ensureGets(t, a, v6("c"), "2001:db8::")
		ensureGets(t, a, v6("d"), "2001:db8::1")
		wantHolder(t, a, "192.0.2.1", "", "ns/b")
		wantStats(t, a, "p", counts{"4", "2", "2"}, counts{"256", "2", "254"})
	})
}

func TestOverlappingPools(t *testing.T) {
	pa := autoPool(t, "a", "192.0.2.0/30")
	pa.Priority = 10
	pb := autoPool(t, "b", "192.0.2.2-192.0.2.5")
	a := newAllocator(pa, pb)
	var got []string
	for i := range 6 {
		al := mustEnsure(t, a, v4(fmt.Sprint("o", i)))
		got = append(got, al.Addresses[0].String())
	}
	if diff := cmp.Diff([]string{"192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"}, got); diff != "" {
		t.Errorf("addresses mismatch (-want +got):\n%s", diff)
	}
	ensureFails(t, a, v4("full"), ErrExhausted, `pool "a": 4 of 4 IPv4 addresses in use; pool "b": 4 of 4 IPv4 addresses in use`)
	ensureFails(t, a, with(withAddrs(v4("x"), "192.0.2.3"), func(r *Request) { r.Pool = "b" }), ErrConflict, "192.0.2.3: it is in use")
	wantStats(t, a, "a", counts{"4", "4", "0"}, counts{"0", "0", "0"})
	wantStats(t, a, "b", counts{"4", "4", "0"}, counts{"0", "0", "0"})

	a.Release("o2")
	wantStats(t, a, "a", counts{"4", "3", "1"}, counts{"0", "0", "0"})
	wantStats(t, a, "b", counts{"4", "3", "1"}, counts{"0", "0", "0"})
	ensureGets(t, a, with(v4("n"), func(r *Request) { r.Pool = "b" }), "192.0.2.2")
	ensureFails(t, a, v4("full"), ErrExhausted)

	// A pool added over held addresses counts them and skips them.
	a.SetPool(autoPool(t, "c", "192.0.2.0/29"))
	wantStats(t, a, "c", counts{"8", "6", "2"}, counts{"0", "0", "0"})
	ensureGets(t, a, v4("c1"), "192.0.2.6")
	ensureGets(t, a, v4("c2"), "192.0.2.7")
	ensureFails(t, a, v4("c3"), ErrExhausted)
}

func TestOverlappingPoolsAvoidingDifferently(t *testing.T) {
	avoid := autoPool(t, "avoid", "192.0.2.254-192.0.3.1")
	avoid.AvoidBuggyIPs, avoid.Priority = true, 10
	a := newAllocator(avoid, autoPool(t, "plain", "192.0.2.254-192.0.3.1"))
	for i, want := range []string{"192.0.2.254", "192.0.3.1", "192.0.2.255", "192.0.3.0"} {
		ensureGets(t, a, v4(fmt.Sprint("o", i)), want)
	}
	wantStats(t, a, "avoid", counts{"2", "2", "0"}, counts{"0", "0", "0"})
	wantStats(t, a, "plain", counts{"4", "4", "0"}, counts{"0", "0", "0"})
	a.Release("o2")
	// The buggy address is only reachable through the plain pool.
	ensureFails(t, a, with(v4("x"), func(r *Request) { r.Pool = "avoid" }), ErrExhausted)
	ensureGets(t, a, v4("x"), "192.0.2.255")
}

func TestSharedAddressesRespectPools(t *testing.T) {
	t.Run("avoided buggy address", func(t *testing.T) {
		// 192.0.2.255 is held through a plain pool; a request for the
		// avoiding pool must not be given it by joining.
		avoid := Pool{Name: "avoid", Ranges: mustRanges(t, "192.0.2.254-192.0.3.1"), AvoidBuggyIPs: true}
		a := newAllocator(avoid, Pool{Name: "plain", Ranges: mustRanges(t, "192.0.2.255/32")})
		ensureGets(t, a, shared(withAddrs(v4("a"), "192.0.2.255"), "k", "Cluster", tcp80), "192.0.2.255")
		ensureGets(t, a, shared(with(v4("b"), func(r *Request) { r.Pool = "avoid" }), "k", "Cluster", tcp443), "192.0.2.254")
	})
	t.Run("a pool without auto-assign", func(t *testing.T) {
		manual := Pool{Name: "manual", Ranges: mustRanges(t, "203.0.113.0/24")}
		a := newAllocator(manual, autoPool(t, "auto", "192.0.2.0/24"))
		ensureGets(t, a, shared(withAddrs(v4("a"), "203.0.113.5"), "k", "Cluster", tcp80), "203.0.113.5")
		// An auto request draws from auto-assign pools only...
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
		// ... unless it names the pool.
		ensureGets(t, a, shared(with(v4("c"), func(r *Request) { r.Pool = "manual" }), "k", "Cluster", tcp443), "203.0.113.5")
		// An explicit request may join.
		ensureGets(t, a, shared(withAddrs(v4("d"), "203.0.113.5"), "k", "Cluster", udp53), "203.0.113.5")
	})
	t.Run("an address in no pool", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/24"))
		if err := a.Restore(shared(v4("a"), "k", "Cluster", tcp80), addrs("10.0.0.1")); err != nil {
			t.Fatal(err)
		}
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
		ensureFails(t, a, shared(withAddrs(v4("c"), "10.0.0.1"), "k", "Cluster", tcp443), ErrNoPool, "in no IP pool")
	})
	t.Run("a pool that does not allow the subject", func(t *testing.T) {
		closed := autoPool(t, "closed", "192.0.2.0/24")
		closed.Priority, closed.Refuses = 10, func(s Subject) error {
			if s.Namespace != "in" {
				return errors.New("not in")
			}
			return nil
		}
		a := newAllocator(closed, autoPool(t, "open", "198.51.100.0/24"))
		inside := func(r Request) Request { r.Subject.Namespace = "in"; return r }
		ensureGets(t, a, inside(shared(v4("a"), "k", "Cluster", tcp80)), "192.0.2.0")
		ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "198.51.100.0")
		ensureGets(t, a, inside(shared(v4("c"), "k", "Cluster", udp53)), "192.0.2.0")
	})
}

func TestStats(t *testing.T) {
	big8 := autoPool(t, "ten", "10.0.0.0/8")
	avoid8 := autoPool(t, "ten-avoid", "10.0.0.0/8")
	avoid8.AvoidBuggyIPs = true
	a := newAllocator(big8, avoid8, autoPool(t, "v6", "2001:db8::/48"), autoPool(t, "both", "192.0.2.0/24", "198.51.100.0/25", "2001:db8:1::/64"))

	wantStats(t, a, "ten", counts{"16777216", "0", "16777216"}, counts{"0", "0", "0"})
	wantStats(t, a, "ten-avoid", counts{"16646144", "0", "16646144"}, counts{"0", "0", "0"})
	p80 := pow2(80).String()
	wantStats(t, a, "v6", counts{"0", "0", "0"}, counts{p80, "0", p80})
	wantStats(t, a, "both", counts{"384", "0", "384"}, counts{pow2(64).String(), "0", pow2(64).String()})

	for i := range 3 {
		mustEnsure(t, a, with(v4(fmt.Sprint("t", i)), func(r *Request) { r.Pool = "ten" }))
		mustEnsure(t, a, with(v6(fmt.Sprint("s", i)), func(r *Request) { r.Pool = "v6" }))
	}
	// 10.0.0.0 is buggy; the avoiding pool counts the two others.
	wantStats(t, a, "ten", counts{"16777216", "3", "16777213"}, counts{"0", "0", "0"})
	wantStats(t, a, "ten-avoid", counts{"16646144", "2", "16646142"}, counts{"0", "0", "0"})
	wantStats(t, a, "v6", counts{"0", "0", "0"}, counts{p80, "3", new(big.Int).Sub(pow2(80), big.NewInt(3)).String()})

	if _, _, ok := a.Stats("missing"); ok {
		t.Error("Stats(missing) found a pool")
	}
	// The numbers returned are copies.
	s4, _, _ := a.Stats("ten")
	s4.Total.SetInt64(1)
	s4.Free.SetInt64(1)
	wantStats(t, a, "ten", counts{"16777216", "3", "16777213"}, counts{"0", "0", "0"})
}

func TestLookupAndHolder(t *testing.T) {
	pa := autoPool(t, "a", "192.0.2.0/30")
	pb := autoPool(t, "b", "192.0.2.0/29")
	pb.Priority = 1
	a := newAllocator(pa, pb)
	al := ensureGets(t, a, v4("x"), "192.0.2.0")
	if diff := cmp.Diff([]string{"b"}, al.Pools); diff != "" {
		t.Errorf("Pools mismatch (-want +got):\n%s", diff)
	}
	got, ok := a.Lookup("x")
	if !ok {
		t.Fatal("Lookup(x) found nothing")
	}
	if diff := cmp.Diff(al, got, addrComparer); diff != "" {
		t.Errorf("Lookup mismatch (-Ensure +Lookup):\n%s", diff)
	}
	got.Addresses[0] = netip.MustParseAddr("10.0.0.1")
	got.Pools[0] = "changed"
	wantLookup(t, a, "x", "192.0.2.0")
	// The pool reported follows pool changes.
	a.DeletePool("b")
	got, _ = a.Lookup("x")
	if diff := cmp.Diff([]string{"a"}, got.Pools); diff != "" {
		t.Errorf("Pools after deleting b mismatch (-want +got):\n%s", diff)
	}
	// The name shown follows the latest request.
	ensureGets(t, a, with(v4("x"), func(r *Request) { r.Name = "ns/renamed" }), "192.0.2.0")
	wantHolder(t, a, "192.0.2.0", "", "ns/renamed")
	wantHolder(t, a, "192.0.2.1", "")
	wantHolder(t, a, "2001:db8::", "")
}

func TestConcurrentUse(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "10.0.0.0/22", "2001:db8::/118"))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 0))
			for i := range 300 {
				owner := fmt.Sprintf("g%d-%d", g, r.IntN(40))
				switch r.IntN(4) {
				case 0:
					a.Release(owner)
				case 1:
					_, _ = a.Ensure(shared(dual(owner, false, IPv4, IPv6), "k", "Cluster", Port{"TCP", int32(i)}))
				default:
					_, _ = a.Ensure(v4(owner))
				}
				if al, ok := a.Lookup(owner); ok {
					a.Holder(al.Addresses[0])
				}
				a.Stats("p")
			}
		})
	}
	wg.Wait()
	checkInternalConsistency(t, a)
}

// checkInternalConsistency checks the allocator's own bookkeeping: owners
// and holdings agree, groups list exactly the shared addresses, and every
// pool's free set and counts match the held addresses.
func checkInternalConsistency(t testing.TB, a *Allocator) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	members := map[key][]string{}
	for o, st := range a.owners {
		if len(st.addrs) == 0 {
			t.Errorf("owner %s holds nothing but is recorded", o)
		}
		for _, addr := range st.addrs {
			members[keyOf(addr)] = append(members[keyOf(addr)], o)
		}
	}
	for k, h := range a.holdings {
		var got []string
		for _, m := range h.members {
			if m.owner == staleOwner {
				if len(h.members) != 1 || len(a.claims[k]) == 0 {
					t.Errorf("%s: a stand-in among %d members, %d claims", k.addr(h.family), len(h.members), len(a.claims[k]))
				}
				continue
			}
			got = append(got, m.owner)
		}
		want := members[k]
		slices.Sort(got)
		slices.Sort(want)
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("members of %s mismatch (-owners +holding):\n%s", k.addr(h.family), diff)
		}
		if len(h.members) > 1 && h.key == "" {
			t.Errorf("%s is shared without a key", k.addr(h.family))
		}
		if _, in := a.groups[h.key][k]; (h.key != "") != in {
			t.Errorf("%s under key %q: in group = %v", k.addr(h.family), h.key, in)
		}
		delete(members, k)
	}
	for k, os := range members {
		t.Errorf("%v held by %v has no holding", k, os)
	}
	for g, ks := range a.groups {
		for k := range ks {
			if h := a.holdings[k]; h == nil || h.key != g {
				t.Errorf("group %q lists %v, not held under it", g, k)
			}
		}
	}
	for name, ps := range a.pools {
		for fi, f := range []Family{IPv4, IPv6} {
			fs := ps.fam[fi]
			var used uint64
			for k, h := range a.holdings {
				if h.family == f && ps.allocatable(k, f) {
					used++
					var inFree bool
					fs.free.DescendLessOrEqual(interval{first: k}, func(iv interval) bool {
						inFree = !iv.last.less(k)
						return false
					})
					if inFree {
						t.Errorf("pool %s: held %s is in the free set", name, k.addr(f))
					}
				}
			}
			if used != fs.inUse {
				t.Errorf("pool %s %s: inUse %d, %d held", name, f, fs.inUse, used)
			}
			var prev *interval
			fs.free.Ascend(func(iv interval) bool {
				if iv.last.less(iv.first) {
					t.Errorf("pool %s: empty free interval %v", name, iv)
				}
				if !ps.allocatable(iv.first, f) || !ps.allocatable(iv.last, f) {
					t.Errorf("pool %s: free interval %v does not start and end on allocatable addresses", name, iv)
				}
				if prev != nil && !prev.last.less(iv.first) {
					t.Errorf("pool %s: free intervals %v and %v overlap", name, *prev, iv)
				}
				prev = &iv
				return true
			})
		}
	}
}

func TestFreeSpaceCoalesces(t *testing.T) {
	for _, avoid := range []bool{false, true} {
		t.Run(fmt.Sprint("avoidBuggyIPs=", avoid), func(t *testing.T) {
			p := autoPool(t, "p", "10.0.0.0/22", "2001:db8::/118")
			p.AvoidBuggyIPs = avoid
			a := newAllocator(p)
			var owners []string
			for i := range 3000 {
				o := fmt.Sprint("o", i)
				if _, err := a.Ensure(dual(o, false, IPv4, IPv6)); err != nil {
					break
				}
				owners = append(owners, o)
			}
			r := rand.New(rand.NewPCG(7, 7))
			r.Shuffle(len(owners), func(i, j int) { owners[i], owners[j] = owners[j], owners[i] })
			for _, o := range owners {
				a.Release(o)
			}
			checkInternalConsistency(t, a)
			// With everything free again, each range is one free interval:
			// memory does not grow with what was once allocated.
			for fi, f := range []Family{IPv4, IPv6} {
				if n := a.pools["p"].fam[fi].free.Len(); n != 1 {
					t.Errorf("%s: %d free intervals after releasing everything, want 1", f, n)
				}
			}
		})
	}
}

// TestReserve: a Node's InternalIP inside a pool is never handed out, is
// refused when a Service asks for it, and is free again once released.
func TestReserve(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
	if refused := a.Reserve("node/node-a", "Node node-a", addrs("192.0.2.0", "192.0.2.2")); len(refused) != 0 {
		t.Fatalf("Reserve refused %v", refused)
	}
	ensureGets(t, a, v4("a"), "192.0.2.1")
	ensureGets(t, a, v4("b"), "192.0.2.3")
	if _, err := a.Ensure(v4("c")); !errors.Is(err, ErrExhausted) {
		t.Errorf("Ensure(c) = %v, want ErrExhausted: the node addresses are not free", err)
	}
	req := v4("c")
	req.Addresses = addrs("192.0.2.2")
	_, err := a.Ensure(req)
	if te := TakenErrors(err); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "it is reserved: a Node of the cluster has this address") ||
		len(te) != 1 || te[0].Reason != ReasonReserved || !slices.Equal(te[0].Holders, []string{"Node node-a"}) {
		t.Errorf("Ensure(c, 192.0.2.2) = %v (%+v), want a conflict for a reserved address, naming the node in the log's details", err, te)
	}
	// A Service holding an address before it became a node's keeps it.
	if refused := a.Reserve("node/node-b", "Node node-b", addrs("192.0.2.1")); !slices.Equal(refused, addrs("192.0.2.1")) {
		t.Errorf("Reserve of a Service's address refused %v, want [192.0.2.1]", refused)
	}
	wantLookup(t, a, "a", "192.0.2.1")
	// The node changes its address: the old one is free again.
	a.Reserve("node/node-a", "Node node-a", addrs("192.0.2.0"))
	ensureGets(t, a, v4("c"), "192.0.2.2")
	a.Release("node/node-a")
	ensureGets(t, a, v4("d"), "192.0.2.0")
}

// TestRestoreAll: owners that shared an address under one key, one of which
// changed its key while no CCM ran, keep it; the one that changed loses it,
// whatever their ages.
func TestRestoreAll(t *testing.T) {
	for _, tc := range []struct {
		name       string
		owners     []Request // oldest first, all claiming 192.0.2.1
		keep, lose []string
	}{
		{"oldest dropped its key", []Request{shared(v4("a"), "", "Cluster", udp53), shared(v4("b"), "k", "Cluster", tcp80), shared(v4("c"), "k", "Cluster", tcp443)}, []string{"b", "c"}, []string{"a"}},
		{"pair, oldest dropped its key", []Request{shared(v4("a"), "", "Cluster", udp53), shared(v4("b"), "k", "Cluster", tcp80)}, []string{"b"}, []string{"a"}},
		{"oldest changed its key", []Request{shared(v4("a"), "x", "Cluster", udp53), shared(v4("b"), "k", "Cluster", tcp80), shared(v4("c"), "k", "Cluster", tcp443)}, []string{"b", "c"}, []string{"a"}},
		{"newest changed its key", []Request{shared(v4("a"), "k", "Cluster", udp53), shared(v4("b"), "k", "Cluster", tcp80), shared(v4("c"), "x", "Cluster", tcp443)}, []string{"a", "b"}, []string{"c"}},
		{"two keys, one each: the oldest", []Request{shared(v4("a"), "x", "Cluster", udp53), shared(v4("b"), "k", "Cluster", tcp80)}, []string{"a"}, []string{"b"}},
		{"no keys: the oldest", []Request{v4("a"), v4("b")}, []string{"a"}, []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
			var rs []Restoration
			for _, r := range tc.owners {
				rs = append(rs, Restoration{Req: r, Addrs: addrs("192.0.2.1")})
			}
			errs := a.RestoreAll(rs)
			for i, r := range tc.owners {
				if slices.Contains(tc.keep, r.Owner) {
					if errs[i] != nil {
						t.Errorf("%s: %v, want it kept", r.Owner, errs[i])
					}
					wantLookup(t, a, r.Owner, "192.0.2.1")
				} else {
					if !errors.Is(errs[i], ErrConflict) {
						t.Errorf("%s: %v, want ErrConflict", r.Owner, errs[i])
					}
					wantLookup(t, a, r.Owner)
				}
			}
		})
	}
}

// TestRestoreAllFollowsTheRecord: when the record says under which key an
// address was shared, its sharers with that key keep it, whatever their
// ages and numbers; the one that changed its key loses it.
func TestRestoreAllFollowsTheRecord(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
	addr := netip.MustParseAddr("192.0.2.1")
	rec := map[netip.Addr]string{addr: "k0"}
	errs := a.RestoreAll([]Restoration{
		{Req: shared(v4("old"), "k2", "Cluster", tcp80), Addrs: addrs("192.0.2.1"), SharedAs: rec},  // changed k0 → k2
		{Req: shared(v4("new"), "k0", "Cluster", tcp443), Addrs: addrs("192.0.2.1"), SharedAs: rec}, // joined under k0
	})
	if !errors.Is(errs[0], ErrConflict) || errs[1] != nil {
		t.Errorf("errors %v, want old to lose the address and new to keep it", errs)
	}
	wantLookup(t, a, "new", "192.0.2.1")
	wantLookup(t, a, "old")
	wantHolder(t, a, "192.0.2.1", "k0", "ns/new")
}

// TestStaleClaims: an owner that loses an address at a restore still lists
// it in its status; nobody else gets it until that status changes, even
// after its holders release it.
func TestStaleClaims(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/31"))
	if err := a.Restore(v4("winner"), addrs("192.0.2.0")); err != nil {
		t.Fatal(err)
	}
	if err := a.Restore(v4("loser"), addrs("192.0.2.0")); !errors.Is(err, ErrConflict) {
		t.Fatalf("Restore(loser) = %v, want ErrConflict", err)
	}
	if !a.HasClaims("loser") {
		t.Fatal("the loser has no stale claim")
	}
	// The loser's own Ensure gives it another address.
	ensureGets(t, a, v4("loser"), "192.0.2.1")
	// The winner is deleted: the address stays out of reach while the
	// loser's status still lists it.
	a.Release("winner")
	if _, err := a.Ensure(v4("late")); !errors.Is(err, ErrExhausted) {
		t.Errorf("Ensure(late) = %v, want ErrExhausted: 192.0.2.0 is still claimed", err)
	}
	req := v4("late")
	req.Addresses = addrs("192.0.2.0")
	_, err := a.Ensure(req)
	if te := TakenErrors(err); !errors.Is(err, ErrConflict) || len(te) != 1 || te[0].Reason != ReasonStatusClaim || !strings.Contains(te[0].Detail, "the status of ns/loser") {
		t.Errorf("Ensure(late, 192.0.2.0) = %v (%+v), want a conflict for the loser's status", err, te)
	}
	wantStats(t, a, "p", counts{"2", "2", "0"}, counts{"0", "0", "0"})
	// The loser's status now lists only its new address: the claim ends.
	a.Unclaim("loser", addrs("192.0.2.1"))
	if a.HasClaims("loser") {
		t.Error("the claim is still there")
	}
	ensureGets(t, a, v4("late"), "192.0.2.0")
	checkInternalConsistency(t, a)
}

// TestHolders: an address's owners with their IDs, sorted by name; none
// for an address only a stale status claims.
func TestHolders(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/31"))
	ensureGets(t, a, shared(v4("b"), "k", "Cluster", tcp443), "192.0.2.0")
	ensureGets(t, a, shared(v4("a"), "k", "Cluster", tcp80), "192.0.2.0")
	want := []OwnerRef{{Owner: "a", Name: "ns/a"}, {Owner: "b", Name: "ns/b"}}
	if diff := cmp.Diff(want, a.Holders(netip.MustParseAddr("192.0.2.0"))); diff != "" {
		t.Errorf("Holders(192.0.2.0) mismatch (-want +got):\n%s", diff)
	}
	if got := a.Holders(netip.MustParseAddr("192.0.2.1")); len(got) != 0 {
		t.Errorf("Holders(192.0.2.1) = %+v, want none: it is free", got)
	}
	// A restore loser's status keeps listing the address after its holders
	// let go: a stand-in holds it, which is no owner.
	if err := a.Restore(v4("loser"), addrs("192.0.2.0")); !errors.Is(err, ErrConflict) {
		t.Fatalf("Restore(loser) = %v, want ErrConflict", err)
	}
	a.Release("a")
	a.Release("b")
	if _, ok := a.Holder(netip.MustParseAddr("192.0.2.0")); !ok {
		t.Fatal("Holder(192.0.2.0): free, want the stale claim's stand-in")
	}
	if got := a.Holders(netip.MustParseAddr("192.0.2.0")); len(got) != 0 {
		t.Errorf("Holders(192.0.2.0) = %+v, want none: only a stale status claims it", got)
	}
}
