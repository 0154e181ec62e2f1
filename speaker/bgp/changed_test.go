package bgp

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
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
func TestReconcilerChangedHint(t *testing.T) {
	prefixes := []netip.Prefix{vip1, vip2, vip6, netip.MustParsePrefix("198.51.100.0/24")}
	attrs := []Attributes{{}, {Communities: []string{"no-export"}}, {LocalPref: &lp200}}
	ctx := context.Background()
	for seed := range uint64(40) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			hinted, full := newStateRouter(t), newStateRouter(t)
			rcH, rcF := NewReconciler(hinted), NewReconciler(full)
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
				hinted.failed = false
				if rnd.IntN(10) == 0 {
					hinted.failAt = hinted.calls + 1 + rnd.IntN(3)
				}
				wanted := map[netip.Prefix]bool{}
				for e := range next {
					wanted[e.Prefix] = true
				}
				hinted.wanted, full.wanted = wanted, wanted
				dH := desired(maps.Clone(next), peers...)
				dH.Changed = changed
				errH := rcH.Apply(ctx, dH)
				if err := rcF.Apply(ctx, desired(maps.Clone(next), peers...)); err != nil {
					t.Fatal(err)
				}
				hinted.failAt = 0
				prev = next
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
