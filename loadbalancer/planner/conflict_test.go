package planner

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

const foreignMAC = "02:00:5e:00:00:99" // a host on the LAN that is no speaker

// probeUp is a connected speaker that can probe, with one interface whose
// hardware address ends in the node's letter.
func probeUp(node string) speakers.State {
	st := up()
	st.Capabilities = append(st.Capabilities, speakerv1.CapabilityProbe, speakerv1.CapabilityYield)
	st.MACs = []string{speakerMAC(node)}
	return st
}

func speakerMAC(node string) string { return fmt.Sprintf("02:00:00:00:00:%02x", node[len(node)-1]) }

// probeEnv is a planner over n nodes whose speakers can probe.
func probeEnv(t *testing.T, n int) *plannerEnv {
	return newPlannerEnv(t, envOptions{before: func(e *plannerEnv) {
		for _, node := range nodes(n) {
			e.sp.states[node.Name] = probeUp(node.Name)
		}
	}}, nodes(n)...)
}

// report is node's speaker reporting that it answers for vips, with
// what change does to the state.
func (e *plannerEnv) report(node string, change func(st *speakers.State), vips ...netip.Addr) {
	st := probeUp(node)
	st.Announcing = speakers.NewAddrSet(slices.SortedFunc(slices.Values(vips), netip.Addr.Compare))
	if change != nil {
		change(&st)
	}
	e.sp.set(node, st)
}

// probed checks, once the planner is idle, whether node's announcement of
// vip asks for a probe.
func (e *plannerEnv) probed(node string, vip netip.Addr, want bool) {
	e.t.Helper()
	e.idle()
	a := e.sp.announcement(node, vip.String())
	if a == nil {
		e.t.Fatalf("node %s was told nothing about %s", node, vip)
	}
	if a.GetProbe() != want {
		e.t.Fatalf("node %s's announcement of %s has probe %v, want %v", node, vip, a.GetProbe(), want)
	}
}

// TestProbeOnFirstPlacement: a VIP no node announced before is probed on
// its first placement, until its announcer answers for it; a move does
// not probe (the old node may still answer), and neither does a speaker
// without the capability or a placement on a node that announces it.
func TestProbeOnFirstPlacement(t *testing.T) {
	t.Run("first placement, then a move", func(t *testing.T) {
		e := probeEnv(t, 3)
		vip := e.service("web", false)
		first := e.owner(vip, "node-a", "node-b", "node-c")
		e.probed(first, vip, true)
		e.report(first, nil) // not answering yet: still asks
		e.probed(first, vip, true)
		e.report(first, nil, vip)
		e.probed(first, vip, false)

		e.sp.set(first, lost())
		second := e.owner(vip, others(first, "node-d")...)
		e.probed(second, vip, false)
	})
	t.Run("moved before it was ever announced", func(t *testing.T) {
		e := probeEnv(t, 3)
		vip := e.service("web", false)
		first := e.owner(vip, "node-a", "node-b", "node-c")
		e.probed(first, vip, true)
		e.sp.set(first, lost())
		second := e.owner(vip, others(first, "node-d")...)
		e.probed(second, vip, false)
	})
	t.Run("speaker without the capability", func(t *testing.T) {
		e := newPlannerEnv(t, envOptions{}, nodes(2)...)
		vip := e.service("web", false)
		e.probed(e.owner(vip, "node-a", "node-b"), vip, false)
	})
	t.Run("a speaker announces it already", func(t *testing.T) {
		e := probeEnv(t, 3)
		// The allocator's first address, which a speaker still answers
		// for (say, from before this cluster's CCMs recorded it).
		first := netip.MustParseAddr("192.0.2.200")
		e.report("node-c", nil, first)
		vip := e.service("web", false)
		if vip != first {
			t.Fatalf("allocated %s, want %s", vip, first)
		}
		e.probed(e.owner(vip, "node-c"), vip, false)
	})
}

// TestAddressInUse: a VIP whose announcer found another host answering
// for it stays on its node and keeps its address; its Service gets one
// Warning per episode and a Normal Event when the address is free again.
func TestAddressInUse(t *testing.T) {
	tests := []struct {
		name   string
		failed bool // the speaker also lists the VIP as failed
	}{
		{"conflict", false},
		{"conflict also reported failed", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := probeEnv(t, 3)
			vip := e.service("web", false)
			owner := e.owner(vip, "node-a", "node-b", "node-c")
			e.events()
			before, _ := testutil.GetCounterMetricValue(addressConflictsTotal)
			conflict := func(st *speakers.State) {
				st.Conflicts = map[string]string{vip.String(): strings.ToUpper(foreignMAC)}
				if tc.failed {
					st.Failed = map[string]string{vip.String(): "address in use"}
				}
			}
			e.report(owner, conflict)
			e.owner(vip, owner)
			e.probed(owner, vip, true)
			e.report(owner, conflict) // the next report: same episode
			e.owner(vip, owner)

			want := fmt.Sprintf("Warning AddressInUse %s is in use by another host on the LAN (MAC %s, seen by node %s); IronLB does not announce it while that host answers for it. The Service keeps the address; free it or change the IPPool", vip, foreignMAC, owner)
			evs := e.events()
			if got := slices.DeleteFunc(slices.Clone(evs), func(s string) bool { return !strings.Contains(s, "AddressInUse") }); !slices.Equal(got, []string{want}) {
				t.Errorf("AddressInUse Events %q, want one: %q", got, want)
			}
			if slices.ContainsFunc(evs, func(s string) bool { return strings.Contains(s, ReasonMoved) }) {
				t.Errorf("the VIP moved: %q", evs)
			}
			if after, _ := testutil.GetCounterMetricValue(addressConflictsTotal); after-before != 1 {
				t.Errorf("ironlb_address_conflicts_total went up by %v, want 1", after-before)
			}
			gauge := func(want float64) {
				t.Helper()
				if got := inUseGauge(t); got != want {
					t.Errorf("ironlb_vips_address_in_use = %v, want %v", got, want)
				}
			}
			gauge(1)

			// The host went away: the speaker's probe finds it free.
			e.report(owner, nil, vip)
			e.owner(vip, owner)
			e.probed(owner, vip, false)
			wantResolved := fmt.Sprintf("Normal AddressInUseResolved %s is no longer in use by another host on the LAN (MAC %s); node %s announces it", vip, foreignMAC, owner)
			if evs := e.events(); !slices.Contains(evs, wantResolved) {
				t.Errorf("Events %q, want %q", evs, wantResolved)
			}
			gauge(0)
		})
	}
}

// TestAddressInUseNodeLost: a VIP in use elsewhere moves when its node
// goes, and its new node probes before it answers (the old node did not
// answer for it: nothing of IronLB's is there to mistake for the host).
func TestAddressInUseNodeLost(t *testing.T) {
	e := probeEnv(t, 3)
	vip := e.service("web", false)
	owner := e.owner(vip, "node-a", "node-b", "node-c")
	e.report(owner, func(st *speakers.State) { st.Conflicts = map[string]string{vip.String(): foreignMAC} })
	e.owner(vip, owner)
	e.updateNode(owner, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	next := e.owner(vip, others(owner, "node-d")...)
	e.probed(next, vip, true)
}

// TestForeignClaimProbesAgain: a claim of an announced VIP from a host
// that is no speaker makes its announcer probe again (it is not moved);
// a claim from a speaker's interface is a move in progress and ignored.
func TestForeignClaimProbesAgain(t *testing.T) {
	e := probeEnv(t, 3)
	vip := e.service("web", false)
	owner := e.owner(vip, "node-a", "node-b", "node-c")
	other := others(owner, "node-d")[0]
	e.report(owner, nil, vip)
	e.probed(owner, vip, false)

	claimedBy := func(mac string) func(st *speakers.State) {
		return func(st *speakers.State) { st.Claimed = map[string]string{vip.String(): mac} }
	}
	e.report(owner, claimedBy(speakerMAC(other)), vip)
	e.owner(vip, owner)
	e.probed(owner, vip, false)

	e.report(owner, claimedBy(foreignMAC), vip)
	e.owner(vip, owner)
	e.probed(owner, vip, true)

	// Probed and free: the speaker answers again, with no claim.
	e.report(owner, nil, vip)
	e.probed(owner, vip, false)
}

// TestForeignClaimResends: a claim from a host that is no speaker
// reported in the same report as the first announcement (the first
// placement's probe still asked for, so the announcement does not change)
// sends the announcer its announcement again, once per claim: a speaker
// probes only on receiving an instruction.
func TestForeignClaimResends(t *testing.T) {
	e := probeEnv(t, 3)
	vip := e.service("web", false)
	owner := e.owner(vip, "node-a", "node-b", "node-c")
	e.probed(owner, vip, true)
	resends := func(want int) {
		t.Helper()
		e.idle()
		if got := e.sp.resends(owner, vip.String()); got != want {
			t.Errorf("node %s was sent its announcement of %s again %d times, want %d", owner, vip, got, want)
		}
	}
	claimed := func(st *speakers.State) { st.Claimed = map[string]string{vip.String(): foreignMAC} }
	e.report(owner, claimed, vip)
	e.probed(owner, vip, true)
	resends(1)
	// The same claim reported again is no new instruction.
	e.report(owner, claimed, vip)
	resends(1)
	// Free, then claimed again: once more.
	e.report(owner, nil, vip)
	e.probed(owner, vip, false)
	e.report(owner, claimed, vip)
	e.probed(owner, vip, true)
	resends(2)
}

// inUseGauge reads ironlb_vips_address_in_use as /metrics serves it (of
// the planner started last).
func inUseGauge(t *testing.T) float64 {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() == "ironlb_vips_address_in_use" && len(f.GetMetric()) == 1 {
			return f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	t.Fatal("ironlb_vips_address_in_use not served")
	return 0
}
