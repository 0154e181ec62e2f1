package bgp

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// stateRouter keeps what a router holds, checks the order of the calls
// that change it (a path is added once exported, withdrawn before it is
// unexported when no longer wanted), and fails one chosen call.
type stateRouter struct {
	t       *testing.T
	exports map[Export]string
	paths   map[netip.Prefix]bool
	refresh map[netip.Addr]int
	calls   int
	failAt  int // the call that fails; 0: none
	failed  bool
	// wanted are the prefixes the Desired being applied exports.
	wanted map[netip.Prefix]bool
}

func newStateRouter(t *testing.T) *stateRouter {
	return &stateRouter{t: t, exports: map[Export]string{}, paths: map[netip.Prefix]bool{}, refresh: map[netip.Addr]int{}}
}

func (r *stateRouter) call(what string) error {
	r.calls++
	if r.calls == r.failAt {
		r.failed = true
		return fmt.Errorf("%s failed", what)
	}
	return nil
}

func (r *stateRouter) exported(p netip.Prefix) bool {
	for e := range r.exports {
		if e.Prefix == p {
			return true
		}
	}
	return false
}

func (r *stateRouter) Start(context.Context, uint32, netip.Addr) error     { return nil }
func (r *stateRouter) Stop(context.Context, bool) error                    { return nil }
func (r *stateRouter) AddPeer(context.Context, Peer) error                 { return nil }
func (r *stateRouter) UpdatePeer(context.Context, Peer) error              { return nil }
func (r *stateRouter) DeletePeer(context.Context, netip.Addr) error        { return nil }
func (r *stateRouter) ResetPeer(context.Context, netip.Addr, string) error { return nil }
func (r *stateRouter) Sessions(context.Context) ([]Session, error)         { return nil, nil }

func (r *stateRouter) Export(_ context.Context, e Export, a Attributes) error {
	if err := r.call("export"); err != nil {
		return err
	}
	r.exports[e] = a.key()
	return nil
}

func (r *stateRouter) Unexport(_ context.Context, e Export) error {
	if err := r.call("unexport"); err != nil {
		return err
	}
	delete(r.exports, e)
	if r.paths[e.Prefix] && !r.wanted[e.Prefix] && !r.failed {
		r.t.Errorf("%s was unexported before its path was withdrawn", e.Prefix)
	}
	return nil
}

func (r *stateRouter) Refresh(_ context.Context, p netip.Addr) error {
	if err := r.call("refresh"); err != nil {
		return err
	}
	r.refresh[p]++
	return nil
}

func (r *stateRouter) AddPath(_ context.Context, p netip.Prefix, _ netip.Addr) error {
	if err := r.call("add path"); err != nil {
		return err
	}
	if !r.exported(p) {
		r.t.Errorf("path %s added before any export of it", p)
	}
	r.paths[p] = true
	return nil
}

func (r *stateRouter) DeletePath(_ context.Context, p netip.Prefix) error {
	if err := r.call("delete path"); err != nil {
		return err
	}
	delete(r.paths, p)
	return nil
}

// TestReconcilerChangedHint: a Reconciler told which prefixes changed
// (Desired.Changed) brings the router to the same exports and paths as one
// that compares everything, after every apply that succeeds, in the same
// safe order, also when an apply fails part-way (the next one then compares
// everything); and with nothing changed it calls the router not at all.
// That holds whether the Desired with Changed carries the full exports
// (those of other prefixes are ignored) or only those of the changed
// prefixes (a patch of the table the Reconciler keeps, also across
// applies that fail).
func TestReconcilerChangedHint(t *testing.T) {
	prefixes := []netip.Prefix{vip1, vip2, vip6, netip.MustParsePrefix("198.51.100.0/24")}
	attrs := []Attributes{{}, {Communities: []string{"no-export"}}, {LocalPref: &lp200}}
	ctx := context.Background()
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			hinted, full, patched := newStateRouter(t), newStateRouter(t), newStateRouter(t)
			rcH, rcF, rcP := NewReconciler(hinted), NewReconciler(full), NewReconciler(patched)
			prev := map[Export]Attributes{}
			peers := []netip.Addr{peerA, peerB}
			for step := range 60 {
				next := maps.Clone(prev)
				for range 1 + rnd.IntN(3) {
					e := Export{Peer: peers[rnd.IntN(2)], Prefix: prefixes[rnd.IntN(len(prefixes))]}
					if rnd.IntN(3) == 0 {
						delete(next, e)
					} else {
						next[e] = attrs[rnd.IntN(len(attrs))]
					}
				}
				changed := []netip.Prefix{}
				for _, p := range prefixes {
					for _, peer := range peers {
						e := Export{Peer: peer, Prefix: p}
						a, okA := prev[e]
						b, okB := next[e]
						if okA != okB || okA && !a.Equal(b) {
							changed = append(changed, p)
							break
						}
					}
				}
				hinted.failed, patched.failed = false, false
				if rnd.IntN(10) == 0 {
					hinted.failAt = hinted.calls + 1 + rnd.IntN(3)
				}
				if rnd.IntN(10) == 0 {
					patched.failAt = patched.calls + 1 + rnd.IntN(3)
				}
				wanted := map[netip.Prefix]bool{}
				for e := range next {
					wanted[e.Prefix] = true
				}
				hinted.wanted, full.wanted, patched.wanted = wanted, wanted, wanted
				dH := desired(maps.Clone(next), peers...)
				dH.Changed = changed
				errH := rcH.Apply(ctx, dH)
				// The patch: only the entries of the changed prefixes.
				isChanged := map[netip.Prefix]bool{}
				for _, p := range changed {
					isChanged[p] = true
				}
				dP := desired(maps.Clone(next), peers...)
				maps.DeleteFunc(dP.Exports, func(e Export, _ Attributes) bool { return !isChanged[e.Prefix] })
				dP.Changed = slices.Clone(changed)
				errP := rcP.Apply(ctx, dP)
				if err := rcF.Apply(ctx, desired(maps.Clone(next), peers...)); err != nil {
					t.Fatal(err)
				}
				hinted.failAt, patched.failAt = 0, 0
				prev = next
				if diff := cmp.Diff(next, rcP.Desired().Exports, cmp.Comparer(Attributes.Equal)); diff != "" {
					t.Fatalf("step %d: the patched Reconciler's table (-want +got):\n%s", step, diff)
				}
				if errP == nil {
					if diff := cmp.Diff(full.exports, patched.exports); diff != "" {
						t.Fatalf("step %d: exports with patches (-compared everything +patched):\n%s", step, diff)
					}
					if diff := cmp.Diff(full.paths, patched.paths); diff != "" {
						t.Fatalf("step %d: paths with patches (-compared everything +patched):\n%s", step, diff)
					}
				}
				if errH != nil {
					continue
				}
				if diff := cmp.Diff(full.exports, hinted.exports); diff != "" {
					t.Fatalf("step %d: exports with the hint (-compared everything +hinted):\n%s", step, diff)
				}
				if diff := cmp.Diff(full.paths, hinted.paths); diff != "" {
					t.Fatalf("step %d: paths with the hint (-compared everything +hinted):\n%s", step, diff)
				}
			}
			calls := hinted.calls
			d := desired(maps.Clone(prev), peers...)
			d.Changed = []netip.Prefix{}
			if err := rcH.Apply(ctx, d); err != nil {
				t.Fatal(err)
			}
			if err := rcH.Apply(ctx, d); err != nil {
				t.Fatal(err)
			}
			if hinted.calls != calls && rcH.clean {
				// The first may still retry refreshes of a failed apply;
				// the second has nothing to do.
				calls = hinted.calls
				if err := rcH.Apply(ctx, d); err != nil || hinted.calls != calls {
					t.Errorf("nothing changed, yet %d router calls", hinted.calls-calls)
				}
			}
		})
	}
}

// TestReconcilerPatchFullApply: a patch (Desired.Changed, with the entries
// of the changed prefixes only) that the Reconciler cannot apply by
// comparing those prefixes alone, because the last Apply failed or the
// peers changed, is applied by comparing the full table it keeps: what
// failed is retried, the new peer gets the whole table, and the prefixes
// the patch does not name are neither withdrawn nor unexported.
func TestReconcilerPatchFullApply(t *testing.T) {
	ctx := context.Background()
	f := &fakeRouter{}
	rc := NewReconciler(f)
	noExport := Attributes{Communities: []string{"no-export"}}
	patch := func(exports map[Export]Attributes, changed []netip.Prefix, peers ...netip.Addr) Desired {
		d := desired(exports, peers...)
		d.Changed = changed
		return d
	}
	steps := []struct {
		name    string
		d       Desired
		fail    string
		wantErr bool
		want    []string
	}{
		{"full", desired(map[Export]Attributes{{peerA, vip1}: {}, {peerA, vip2}: {}}, peerA), "", false, []string{
			"start 64513 192.0.2.11",
			"export 198.51.100.1/32 to 192.0.2.1 c;l", "export 198.51.100.2/32 to 192.0.2.1 c;l",
			"add path 198.51.100.1/32 nh 2001:db8::11", "add path 198.51.100.2/32 nh 2001:db8::11",
			"add peer 192.0.2.1",
		}},
		{"patch of vip2 that fails", patch(map[Export]Attributes{{peerA, vip2}: noExport}, []netip.Prefix{vip2}, peerA),
			"export 198.51.100.2/32 to 192.0.2.1 c,no-export;l", true, nil},
		{"patch of vip1 after the failure: vip2 retried from the table", patch(map[Export]Attributes{{peerA, vip1}: {LocalPref: &lp200}}, []netip.Prefix{vip1}, peerA), "", false, []string{
			"export 198.51.100.1/32 to 192.0.2.1 c;l;p200", "export 198.51.100.2/32 to 192.0.2.1 c,no-export;l",
			"refresh 192.0.2.1",
		}},
		{"patch of vip6 with a new peer: vip1 and vip2 kept", patch(map[Export]Attributes{{peerB, vip6}: {}, {peerB, vip1}: {}}, []netip.Prefix{vip6}, peerA, peerB), "", false, []string{
			"export 2001:db8:5::1/128 to 192.0.2.2 c;l",
			"add path 2001:db8:5::1/128 nh 2001:db8::11",
			"add peer 192.0.2.2",
		}},
		{"patch of vip1 when clean and the same peers: vip1 alone", patch(nil, []netip.Prefix{vip1}, peerA, peerB), "", false, []string{
			"delete path 198.51.100.1/32", "unexport 198.51.100.1/32 from 192.0.2.1",
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			f.fail = st.fail
			err := rc.Apply(ctx, st.d)
			if (err != nil) != st.wantErr {
				t.Fatalf("Apply: %v, want error: %v", err, st.wantErr)
			}
			if diff := cmp.Diff(st.want, f.take()); diff != "" {
				t.Errorf("calls (-want +got):\n%s", diff)
			}
		})
	}
	want := map[Export]Attributes{{peerA, vip2}: noExport, {peerB, vip6}: {}}
	d := rc.Desired()
	if diff := cmp.Diff(want, d.Exports); diff != "" || d.Changed != nil {
		t.Errorf("Desired(): Changed %v, exports (-want +got):\n%s", d.Changed, diff)
	}
}
