package ipam

import (
	"fmt"
	"runtime"
	"testing"
)

// preloaded returns an allocator with one auto-assign pool of cidr and n
// owners ("o0", "o1", ...) holding its lowest n addresses of family f.
func preloaded(tb testing.TB, cidr string, f Family, n int) *Allocator {
	tb.Helper()
	a := New()
	a.SetPool(autoPool(tb, "p", cidr))
	req := Request{Families: []Family{f}, RequireAll: true}
	for i := range n {
		req.Owner = fmt.Sprint("o", i)
		req.Name = "ns/" + req.Owner
		if _, err := a.Ensure(req); err != nil {
			tb.Fatalf("preloading %s: %v", req.Owner, err)
		}
	}
	return a
}

func BenchmarkAllocateRelease(b *testing.B) {
	for _, bc := range []struct {
		name    string
		cidr    string
		family  Family
		preload int
	}{
		{"v4_slash16_50k_allocated", "10.0.0.0/16", IPv4, 50_000},
		{"v6_slash64_1M_allocated", "2001:db8::/64", IPv6, 1_000_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			a := preloaded(b, bc.cidr, bc.family, bc.preload)
			req := Request{Owner: "new", Name: "ns/new", Families: []Family{bc.family}, RequireAll: true}
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := a.Ensure(req); err != nil {
					b.Fatal(err)
				}
				a.Release(req.Owner)
			}
		})
	}
}

func BenchmarkEnsureIdempotent(b *testing.B) {
	a := preloaded(b, "10.0.0.0/16", IPv4, 50_000)
	req := Request{Owner: "o12345", Name: "ns/o12345", Families: []Family{IPv4}, RequireAll: true}
	want, _ := a.Lookup(req.Owner)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		al, err := a.Ensure(req)
		if err != nil || al.Addresses[0] != want.Addresses[0] {
			b.Fatalf("Ensure = %v, %v; want %v", al.Addresses, err, want.Addresses)
		}
	}
}

func BenchmarkHolder(b *testing.B) {
	a := preloaded(b, "10.0.0.0/16", IPv4, 50_000)
	held, _ := a.Lookup("o12345")
	addr := held.Addresses[0]
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, ok := a.Holder(addr); !ok {
			b.Fatalf("Holder(%s) found nobody", addr)
		}
	}
}

// TestLargePoolsCostNothingUpFront checks that a pool costs memory for its
// ranges, not for its addresses: a /8 and a /48 cost a few KB.
func TestLargePoolsCostNothingUpFront(t *testing.T) {
	ten := autoPool(t, "ten", "10.0.0.0/8")
	ten.AvoidBuggyIPs = true
	six := autoPool(t, "six", "2001:db8::/48")
	setUp := func() *Allocator {
		a := New()
		a.SetPool(ten)
		a.SetPool(six)
		return a
	}

	if allocs := testing.AllocsPerRun(10, func() { setUp() }); allocs > 100 {
		t.Errorf("setting up a /8 and a /48 pool takes %.0f allocations, want at most 100", allocs)
	}

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	a := setUp()
	runtime.ReadMemStats(&after)
	if bytes := after.TotalAlloc - before.TotalAlloc; bytes > 16<<10 {
		t.Errorf("setting up a /8 and a /48 pool allocates %d bytes, want at most 16 KiB", bytes)
	} else {
		t.Logf("setting up a /8 and a /48 pool allocates %d bytes", bytes)
	}

	// And they work: the lowest addresses come first, the counts are right.
	ensureGets(t, a, with(v4("x"), func(r *Request) { r.Pool = "ten" }), "10.0.0.1")
	ensureGets(t, a, with(v6("y"), func(r *Request) { r.Pool = "six" }), "2001:db8::")
	wantStats(t, a, "ten", counts{"16646144", "1", "16646143"}, counts{"0", "0", "0"})
	if _, s6, _ := a.Stats("six"); s6.Total.Cmp(pow2(80)) != 0 {
		t.Errorf("the /48 counts %s addresses, want 2^80", s6.Total)
	}
	runtime.KeepAlive(a)
}
