package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// cpOwner and cpName reserve the control-plane VIP in these tests.
const (
	cpOwner = "control-plane"
	cpName  = "control-plane VIP"
)

// TestReserveControlPlane: the control-plane VIP is never handed out from
// a pool that covers it, a Service that asks for it is refused with a
// typed reason, and a Service that held it (restored from its status)
// loses it: the control-plane VIP wins.
func TestReserveControlPlane(t *testing.T) {
	for _, tc := range []struct {
		name string
		// setup runs before the reservation of 192.0.2.2.
		setup       func(t *testing.T, a *Allocator)
		wantEvicted []Eviction
		// wantHolders of 192.0.2.2 after the reservation.
		wantHolders []string
		// wantGiven are the addresses Services get from the /30 pool
		// after the reservation, until it is exhausted (those setup gave
		// out excluded).
		wantGiven []string
		wantStats counts
	}{{
		name:        "pool covers the VIP: everything but the VIP is given out",
		setup:       func(*testing.T, *Allocator) {},
		wantHolders: []string{cpName},
		wantGiven:   []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"},
		wantStats:   counts{"4", "4", "0"},
	}, {
		name: "a Service restored with the VIP loses it",
		setup: func(t *testing.T, a *Allocator) {
			if err := a.Restore(v4("svc"), addrs("192.0.2.2")); err != nil {
				t.Fatal(err)
			}
		},
		wantEvicted: []Eviction{{Addr: netip.MustParseAddr("192.0.2.2"), Owners: []string{"svc"}, Names: []string{"ns/svc"}}},
		wantHolders: []string{cpName},
		// svc itself gets a new address first.
		wantGiven: []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"},
		wantStats: counts{"4", "4", "0"},
	}, {
		name: "Services sharing the VIP all lose it, and keep their other family",
		setup: func(t *testing.T, a *Allocator) {
			if err := a.Restore(shared(dual("a", false, IPv4, IPv6), "k", "Cluster", tcp80), addrs("192.0.2.2", "2001:db8::1")); err != nil {
				t.Fatal(err)
			}
			if err := a.Restore(shared(v4("b"), "k", "Cluster", tcp443), addrs("192.0.2.2")); err != nil {
				t.Fatal(err)
			}
		},
		wantEvicted: []Eviction{{Addr: netip.MustParseAddr("192.0.2.2"), Owners: []string{"a", "b"}, Names: []string{"ns/a", "ns/b"}}},
		wantHolders: []string{cpName},
		wantGiven:   []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"},
		wantStats:   counts{"4", "4", "0"},
	}, {
		name: "only a stale claim held the VIP: the reservation takes its place",
		setup: func(t *testing.T, a *Allocator) {
			if err := a.Restore(v4("winner"), addrs("192.0.2.2")); err != nil {
				t.Fatal(err)
			}
			if err := a.Restore(v4("loser"), addrs("192.0.2.2")); !errors.Is(err, ErrConflict) {
				t.Fatalf("Restore(loser) = %v, want ErrConflict", err)
			}
			a.Release("winner")
		},
		wantHolders: []string{cpName},
		wantGiven:   []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"},
		wantStats:   counts{"4", "4", "0"},
	}, {
		name: "a Node reserved the VIP: it keeps it, nothing is evicted",
		setup: func(t *testing.T, a *Allocator) {
			if refused := a.Reserve("node/a", "Node a", addrs("192.0.2.2")); len(refused) > 0 {
				t.Fatal(refused)
			}
		},
		wantHolders: []string{"Node a"},
		wantGiven:   []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"},
		wantStats:   counts{"4", "4", "0"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
			tc.setup(t, a)
			got := a.ReserveControlPlane(cpOwner, cpName, addrs("192.0.2.2"))
			if diff := cmp.Diff(tc.wantEvicted, got, addrComparer); diff != "" {
				t.Errorf("evicted (-want +got):\n%s", diff)
			}
			wantHolder(t, a, "192.0.2.2", "", tc.wantHolders...)
			for _, ev := range got {
				for _, o := range ev.Owners {
					if al, ok := a.Lookup(o); ok && strings.Contains(strings.Join(strs(al.Addresses), " "), "192.0.2.2") {
						t.Errorf("%s still holds the VIP: %v", o, strs(al.Addresses))
					}
				}
			}
			var given []string
			for i := 0; ; i++ {
				al, err := a.Ensure(v4("new-" + string(rune('a'+i))))
				if err != nil {
					if !errors.Is(err, ErrExhausted) {
						t.Fatalf("Ensure: %v, want ErrExhausted at the end", err)
					}
					break
				}
				given = append(given, strs(al.Addresses)...)
			}
			// What setup's Services hold was not handed out again.
			want := tc.wantGiven
			for _, o := range []string{"svc", "a", "b", "loser"} {
				if al, ok := a.Lookup(o); ok {
					for _, s := range strs(al.Addresses) {
						want = remove(want, s)
					}
				}
			}
			if diff := cmp.Diff(want, given); diff != "" {
				t.Errorf("addresses given out after the reservation (-want +got):\n%s", diff)
			}
			s4, _, _ := a.Stats("p")
			if diff := cmp.Diff(tc.wantStats, countsOf(s4)); diff != "" {
				t.Errorf("IPv4 stats (-want +got): the VIP is never free\n%s", diff)
			}
			checkInternalConsistency(t, a)
		})
	}
}

func remove(ss []string, s string) []string {
	var out []string
	for _, x := range ss {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

// TestReserveControlPlaneRequested: a Service that asks for the VIP is
// refused with ReasonControlPlaneVIP and nothing changes; when the VIP
// moves, the old one is free again and the new one reserved.
func TestReserveControlPlaneRequested(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
	a.ReserveControlPlane(cpOwner, cpName, addrs("192.0.2.2"))
	err := ensureFails(t, a, withAddrs(v4("svc"), "192.0.2.2"), ErrConflict, "control-plane VIP")
	if te := TakenErrors(err); len(te) != 1 || te[0].Reason != ReasonControlPlaneVIP {
		t.Errorf("Ensure(svc, VIP) taken errors %+v, want one of reason %s", te, ReasonControlPlaneVIP)
	}
	// Reserving again changes nothing.
	before := dump(a)
	if ev := a.ReserveControlPlane(cpOwner, cpName, addrs("192.0.2.2")); len(ev) > 0 {
		t.Errorf("second reservation evicted %+v", ev)
	}
	if diff := cmp.Diff(before, dump(a)); diff != "" {
		t.Errorf("second reservation changed the allocator (-before +after):\n%s", diff)
	}
	// The VIP moves to 192.0.2.3: .2 is free, .3 reserved.
	a.ReserveControlPlane(cpOwner, cpName, addrs("192.0.2.3"))
	ensureGets(t, a, withAddrs(v4("svc"), "192.0.2.2"), "192.0.2.2")
	wantHolder(t, a, "192.0.2.3", "", cpName)
	// No VIP any more: .3 is free.
	a.ReserveControlPlane(cpOwner, cpName, nil)
	wantHolder(t, a, "192.0.2.3", "")
	wantStats(t, a, "p", counts{"4", "1", "3"}, counts{"0", "0", "0"})
	checkInternalConsistency(t, a)
}

// TestReserveForeign: an address another load balancer's Service lists is
// never handed out while it is reserved, a Service asking for it is refused
// with the typed reason OtherLoadBalancer, a Service of IronLB's that held
// it first keeps it (it is refused to the reservation), and releasing the
// reservation frees it.
func TestReserveForeign(t *testing.T) {
	for _, tc := range []struct {
		name        string
		setup       func(t *testing.T, a *Allocator)
		wantRefused []string
		wantHolders []string
	}{{
		name:        "free address: reserved",
		setup:       func(*testing.T, *Allocator) {},
		wantHolders: []string{"Service x/other"},
	}, {
		name: "an IronLB Service holds it: it keeps it",
		setup: func(t *testing.T, a *Allocator) {
			if err := a.Restore(v4("svc"), addrs("192.0.2.2")); err != nil {
				t.Fatal(err)
			}
		},
		wantRefused: []string{"192.0.2.2"},
		wantHolders: []string{"ns/svc"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(autoPool(t, "p", "192.0.2.0/30", "2001:db8::/126"))
			tc.setup(t, a)
			refused := a.ReserveForeign("foreign:1", "Service x/other", addrs("192.0.2.2"))
			if diff := cmp.Diff(tc.wantRefused, strs(refused), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("refused (-want +got):\n%s", diff)
			}
			wantHolder(t, a, "192.0.2.2", "", tc.wantHolders...)
			req := v4("asks")
			req.Addresses = addrs("192.0.2.2")
			_, err := a.Ensure(req)
			var te *TakenError
			if !errors.As(err, &te) {
				t.Fatalf("Ensure of the reserved address: %v, want a TakenError", err)
			}
			if len(tc.wantRefused) == 0 && te.Reason != ReasonOtherLoadBalancer {
				t.Errorf("reason %s, want %s", te.Reason, ReasonOtherLoadBalancer)
			}
			if refused := a.ReserveForeign("foreign:1", "Service x/other", nil); len(refused) > 0 {
				t.Fatalf("releasing refused %v", refused)
			}
			if len(tc.wantRefused) == 0 {
				if al, err := a.Ensure(req); err != nil || !slices.Equal(strs(al.Addresses), []string{"192.0.2.2"}) {
					t.Errorf("after the release: %v %v, want 192.0.2.2", strs(al.Addresses), err)
				}
			}
			checkInternalConsistency(t, a)
		})
	}
}
