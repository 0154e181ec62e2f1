package ipam

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTakenErrorsNameNoHolder: a tenant that asks for an address another
// tenant holds learns that it is taken and why in terms of its own
// request, never who holds it: the error becomes an Event in its own
// namespace. The holder, its key and the reason in full are in the
// TakenError for the administrator's log.
func TestTakenErrorsNameNoHolder(t *testing.T) {
	// What tenant B must not learn about tenant A.
	secrets := []string{"team-a", "web", "api", "secret-key"}
	inNS := func(r Request, ns, name string) Request {
		r.Subject.Namespace, r.Name = ns, ns+"/"+name
		return r
	}
	setup := func(t *testing.T) *Allocator {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		// team-a shares 192.0.2.0 between two Services under its key, and
		// with team-b's namespace, which it consents to.
		web := inNS(shared(v4("web"), "secret-key", "Cluster", tcp80), "team-a", "web")
		web.Sharing.Namespaces = []string{"team-b"}
		ensureGets(t, a, web, "192.0.2.0")
		api := inNS(shared(v4("api"), "secret-key", "Cluster", tcp443), "team-a", "api")
		api.Sharing.Namespaces = []string{"team-b"}
		ensureGets(t, a, api, "192.0.2.0")
		// ... and holds 192.0.2.1 alone.
		ensureGets(t, a, withAddrs(inNS(v4("solo"), "team-a", "web-solo"), "192.0.2.1"), "192.0.2.1")
		return a
	}
	b := func(r Request) Request { return inNS(r, "team-b", "thief") }
	consents := func(r Request) Request { r.Sharing.Namespaces = []string{"team-a"}; return r }
	for _, tc := range []struct {
		name   string
		req    Request
		reason TakenReason
		msg    string
		// detail is what the administrator's log gets.
		detail string
	}{
		{
			name: "explicit, no key", req: b(withAddrs(v4("x"), "192.0.2.1")), reason: ReasonInUse,
			msg: "it is in use, and this Service has no sharing key", detail: "it is held by team-a/web-solo and team-b/thief has no sharing key",
		},
		{
			name: "explicit, shared address, no key", req: b(withAddrs(v4("x"), "192.0.2.0")), reason: ReasonInUse,
			msg: "it is in use, and this Service has no sharing key", detail: "it is held by team-a/web, team-a/api",
		},
		{
			name: "explicit, another key", req: b(withAddrs(shared(v4("x"), "guess", "Cluster", udp53), "192.0.2.0")), reason: ReasonInUse,
			msg: `its sharing key "guess" is not the holders'`, detail: `under sharing key "secret-key", not "guess"`,
		},
		{
			name: "explicit, the key but no consent from B's side", req: b(withAddrs(shared(v4("x"), "secret-key", "Cluster", udp53), "192.0.2.0")), reason: ReasonInUse,
			msg: "sharing across namespaces needs both to allow the other's", detail: "team-a/web is in namespace team-a and team-b/thief in namespace team-b",
		},
		{
			name: "explicit, the key, consent on both sides, a port clash", req: consents(b(withAddrs(shared(v4("x"), "secret-key", "Cluster", tcp443), "192.0.2.0"))), reason: ReasonPort,
			msg: "a sharer already uses TCP/443", detail: "team-a/api already uses TCP/443",
		},
		{
			name: "explicit, the key, consent on both sides, another policy", req: consents(b(withAddrs(shared(v4("x"), "secret-key", "Local", udp53), "192.0.2.0"))), reason: ReasonTrafficPolicy,
			msg: "its sharers use externalTrafficPolicy Cluster, this Service uses Local", detail: "team-a/web uses externalTrafficPolicy Cluster",
		},
		{
			name: "explicit, held alone, with a key", req: b(withAddrs(shared(v4("x"), "k", "Cluster"), "192.0.2.1")), reason: ReasonInUse,
			msg: "it is in use and not shared with this Service", detail: `it is held by team-a/web-solo under sharing key "", not "k"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := setup(t)
			err := ensureFails(t, a, tc.req, ErrConflict, tc.msg)
			for _, s := range secrets {
				if s != tc.req.Sharing.Key && strings.Contains(err.Error(), s) { // its own key it may see
					t.Errorf("the error for team-b names %q of team-a: %q", s, err)
				}
			}
			te := TakenErrors(err)
			if len(te) != 1 {
				t.Fatalf("TakenErrors(%q) = %+v, want one", err, te)
			}
			if te[0].Reason != tc.reason || !strings.Contains(te[0].Detail, tc.detail) {
				t.Errorf("TakenError = %+v, want reason %s and a detail containing %q", te[0], tc.reason, tc.detail)
			}
		})
	}

	t.Run("restore", func(t *testing.T) {
		a := setup(t)
		err := a.Restore(b(shared(v4("x"), "guess", "Cluster")), addrs("192.0.2.0"))
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("Restore = %v, want ErrConflict", err)
		}
		for _, s := range secrets {
			if strings.Contains(err.Error(), s) {
				t.Errorf("the restore error for team-b names %q of team-a: %q", s, err)
			}
		}
		want := []string{"team-a/api", "team-a/web"}
		if te := TakenErrors(err); len(te) != 1 || !slices.Equal(te[0].Holders, want) || te[0].SharingKey != "secret-key" {
			t.Errorf("TakenErrors = %+v, want holders %v under secret-key for the log", te, want)
		}
		// The loser's status still lists it: a later request by team-c
		// learns only that a status lists it.
		a.Release("web")
		a.Release("api")
		err = ensureFails(t, a, withAddrs(inNS(v4("c"), "team-c", "c"), "192.0.2.0"), ErrConflict, "another Service's status still lists it")
		if strings.Contains(err.Error(), "team-b") || strings.Contains(err.Error(), "thief") {
			t.Errorf("the error names the claimant: %q", err)
		}
	})

	t.Run("a PreferDualStack warning", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29", "2001:db8::/126"))
		ensureGets(t, a, withAddrs(inNS(v4("web"), "team-a", "web"), "192.0.2.1"), "192.0.2.1")
		req := b(withAddrs(dual("x", false, IPv4, IPv6), "192.0.2.1", "2001:db8::1"))
		al := ensureGets(t, a, req, "2001:db8::1")
		if len(al.Warnings) != 1 || strings.Contains(al.Warnings[0], "team-a") || !strings.Contains(al.Warnings[0], "it is in use") {
			t.Errorf("Warnings = %q, want one saying 192.0.2.1 is in use, naming nobody", al.Warnings)
		}
		if len(al.Taken) != 1 || !slices.Equal(al.Taken[0].Holders, []string{"team-a/web"}) {
			t.Errorf("Taken = %+v, want the holder team-a/web for the log", al.Taken)
		}
	})

	t.Run("sharing conflicts kept at a restore", func(t *testing.T) {
		a := newAllocator(autoPool(t, "p", "192.0.2.0/29"))
		first := inNS(shared(v4("a"), "k", "Cluster", tcp80), "team-a", "web")
		first.Sharing.Namespaces = []string{"team-b"}
		if err := a.Restore(first, addrs("192.0.2.0")); err != nil {
			t.Fatal(err)
		}
		late := b(consents(shared(v4("b"), "k", "Cluster", tcp80)))
		if err := a.Restore(late, addrs("192.0.2.0")); err != nil {
			t.Fatal(err)
		}
		got := a.SharingConflicts("b")
		want := []SharingConflict{{
			Addr: addrs("192.0.2.0")[0], Reason: ReasonPort,
			Message: "this Service and a sharer that came before it both use TCP/80",
			Detail:  "team-b/thief and team-a/web both use TCP/80",
		}}
		if diff := cmp.Diff(want, got, addrComparer); diff != "" {
			t.Errorf("SharingConflicts (-want +got):\n%s", diff)
		}
	})
}

// TestOverlappingPoolsKeepRestrictions: an open pool overlapping a pool
// restricted to team-a does not hand the restricted addresses to anyone
// else, whether asked for by address, drawn by candidate search (from
// either pool), or joined under a sharing key. team-a still gets them,
// and a holder of an address that a newly overlapping pool refuses keeps
// it and is reported by Refusals.
func TestOverlappingPoolsKeepRestrictions(t *testing.T) {
	onlyTeamA := func(s Subject) error {
		if s.Namespace != "team-a" {
			return fmt.Errorf("namespace %s is not among spec.serviceAllocation.namespaces", s.Namespace)
		}
		return nil
	}
	setup := func(t *testing.T, restrictedPriority int32) *Allocator {
		restricted := Pool{Name: "team-a", Ranges: mustRanges(t, "192.0.2.0/30"), Priority: restrictedPriority, Refuses: onlyTeamA}
		// The open pool covers the restricted one and a little more.
		return newAllocator(restricted, autoPool(t, "open", "192.0.2.0/29"))
	}
	inNS := func(r Request, ns string) Request { r.Subject.Namespace = ns; r.Name = ns + "/" + r.Owner; return r }
	teamB := func(r Request) Request { return inNS(r, "team-b") }
	teamA := func(r Request) Request { return inNS(r, "team-a") }

	t.Run("explicit request for an address in the overlap", func(t *testing.T) {
		a := setup(t, 0)
		ensureFails(t, a, teamB(withAddrs(v4("x"), "192.0.2.1")), ErrNoPool,
			`team-b/x cannot use 192.0.2.1: pool "team-a" does not allow team-b/x`)
		ensureFails(t, a, teamB(with(withAddrs(v4("x"), "192.0.2.1"), func(r *Request) { r.Pool = "open" })), ErrNoPool,
			`pool "team-a" does not allow team-b/x`)
		ensureGets(t, a, teamB(withAddrs(v4("x"), "192.0.2.5")), "192.0.2.5")
		ensureGets(t, a, teamA(withAddrs(v4("y"), "192.0.2.1")), "192.0.2.1")
	})
	for _, prio := range []int32{0, 10} {
		t.Run(fmt.Sprintf("candidate search, restricted pool priority %d", prio), func(t *testing.T) {
			a := setup(t, prio)
			// team-b draws from the open pool, past the overlap.
			ensureGets(t, a, teamB(v4("b1")), "192.0.2.4")
			ensureGets(t, a, teamB(with(v4("b2"), func(r *Request) { r.Pool = "open" })), "192.0.2.5")
			ensureGets(t, a, teamB(v4("b3")), "192.0.2.6")
			ensureGets(t, a, teamB(v4("b4")), "192.0.2.7")
			ensureFails(t, a, teamB(v4("b5")), ErrExhausted,
				`addresses also in IPPools that do not allow team-b/b5 (team-a) are not handed out to it`)
			// team-a gets the overlap.
			ensureGets(t, a, teamA(v4("a1")), "192.0.2.0")
			wantStats(t, a, "open", counts{"8", "5", "3"}, counts{"0", "0", "0"})
		})
	}
	t.Run("joining a shared address in the overlap", func(t *testing.T) {
		a := setup(t, 0)
		share := func(r Request, p Port) Request {
			r = shared(r, "k", "Cluster", p)
			r.Sharing.Namespaces = []string{"*"}
			return r
		}
		ensureGets(t, a, teamA(share(v4("a1"), tcp80)), "192.0.2.0")
		// team-a consents to share with anyone, but the pool does not.
		ensureGets(t, a, teamB(share(v4("b1"), tcp443)), "192.0.2.4")
		ensureFails(t, a, teamB(withAddrs(share(v4("b2"), udp53), "192.0.2.0")), ErrNoPool, `pool "team-a" does not allow team-b/b2`)
	})
	t.Run("a pool added over held addresses", func(t *testing.T) {
		a := newAllocator(autoPool(t, "open", "192.0.2.0/29"))
		ensureGets(t, a, teamB(v4("b1")), "192.0.2.0")
		a.SetPool(Pool{Name: "team-a", Ranges: mustRanges(t, "192.0.2.0/30"), Refuses: onlyTeamA})
		// Kept (invariant 3), and reported.
		ensureGets(t, a, teamB(v4("b1")), "192.0.2.0")
		got := a.Refusals("b1", Subject{Namespace: "team-b"})
		if len(got) != 1 || got[0].Pool != "team-a" || got[0].Addr != addrs("192.0.2.0")[0] {
			t.Errorf("Refusals = %+v, want 192.0.2.0 refused by pool team-a", got)
		}
		// New requests of team-b skip the overlap.
		ensureGets(t, a, teamB(v4("b2")), "192.0.2.4")
	})
}
