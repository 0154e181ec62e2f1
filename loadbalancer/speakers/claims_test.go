package speakers

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/testing/protocmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// claimsReport is a full report of a speaker with the "probe" and
// "data-plane" capabilities: 10.0.0.1 announced, claimed by another host;
// 10.0.0.2 in conflict; 10.0.0.3 yielded; 10.0.0.4 failed; 10.0.0.9 (not
// the node's) in conflict; interfaces with good, repeated and bad
// hardware addresses.
func claimsReport() *speakerv1.Report {
	return &speakerv1.Report{
		Node: "node-claims", Full: true, Version: "v0.0.0",
		Capabilities: []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing, speakerv1.CapabilityProbe, speakerv1.CapabilityDataPlane},
		Vips: []*speakerv1.VIPStatus{
			{Address: "10.0.0.1", State: speakerv1.VIPStatus_ANNOUNCING, ClaimedBy: "02:00:5E:00:00:AA", ClaimedUnixMs: 1},
			{Address: "10.0.0.2", State: speakerv1.VIPStatus_CONFLICT, ClaimedBy: "02-00-5e-00-00-bb"},
			{Address: "10.0.0.3", State: speakerv1.VIPStatus_YIELDED, ClaimedBy: "02:00:5e:00:00:cc"},
			{Address: "10.0.0.4", State: speakerv1.VIPStatus_FAILED, Error: "no such interface", ClaimedBy: "not a MAC"},
			{Address: "10.0.0.5", State: speakerv1.VIPStatus_ANNOUNCING, ClaimedBy: "zz:00:5e:00:00:dd"},
			{Address: "10.0.0.9", State: speakerv1.VIPStatus_CONFLICT, ClaimedBy: "02:00:5e:00:00:ee"},
		},
		Interfaces: []*speakerv1.InterfaceStatus{
			{Name: "eth0", Up: true, Default: true, HardwareAddress: "02:00:5E:00:01:01"},
			{Name: "eth1", Up: true, HardwareAddress: "02:00:5e:00:01:01"},
			{Name: "eth2", Up: true, HardwareAddress: "garbage"},
			{Name: "eth3", Up: true, HardwareAddress: "02:00:5e:00:01:02"},
		},
		DataPlane: &speakerv1.DataPlane{Ready: false, Reason: strings.Repeat("x", 1000), SinceUnixMs: 7},
	}
}

// TestSummarizeClaims: what the CCM keeps of conflicts, claims, yielded
// VIPs, hardware addresses and the data plane, from hostile input.
func TestSummarizeClaims(t *testing.T) {
	node := heldVIPs{}
	for i := 1; i <= 5; i++ {
		node[netip.MustParseAddr(addrOf(int64(i)))] = true
	}
	many := claimsReport()
	many.Interfaces = nil
	for i := range 1000 {
		many.Interfaces = append(many.Interfaces, &speakerv1.InterfaceStatus{Name: "eth", HardwareAddress: fmt.Sprintf("02:00:00:00:%02x:%02x", i>>8, i&0xff)})
	}
	noPlane := claimsReport()
	noPlane.DataPlane = nil
	for _, tc := range []struct {
		name          string
		report        *speakerv1.Report
		wantConflicts map[string]string
		wantClaimed   map[string]string
		wantYielded   []netip.Addr
		wantFailed    map[string]string
		wantMACs      int // only counted when > 0
		wantPlane     *speakerv1.DataPlane
	}{
		{
			name:          "canonical MACs, only the node's VIPs, failed holds only FAILED",
			report:        claimsReport(),
			wantConflicts: map[string]string{"10.0.0.2": "02:00:5e:00:00:bb"},
			wantClaimed:   map[string]string{"10.0.0.1": "02:00:5e:00:00:aa", "10.0.0.3": "02:00:5e:00:00:cc"},
			wantYielded:   addrs("10.0.0.3"),
			wantFailed:    map[string]string{"10.0.0.4": "no such interface"},
			wantPlane:     &speakerv1.DataPlane{Ready: false, Reason: clip(strings.Repeat("x", 1000), maxTextLen), SinceUnixMs: 7},
		},
		{
			name:          "no data plane reported: unknown",
			report:        noPlane,
			wantConflicts: map[string]string{"10.0.0.2": "02:00:5e:00:00:bb"},
			wantClaimed:   map[string]string{"10.0.0.1": "02:00:5e:00:00:aa", "10.0.0.3": "02:00:5e:00:00:cc"},
			wantYielded:   addrs("10.0.0.3"),
			wantFailed:    map[string]string{"10.0.0.4": "no such interface"},
		},
		{
			name:          "a thousand interfaces: at most maxMACs kept",
			report:        many,
			wantConflicts: map[string]string{"10.0.0.2": "02:00:5e:00:00:bb"},
			wantClaimed:   map[string]string{"10.0.0.1": "02:00:5e:00:00:aa", "10.0.0.3": "02:00:5e:00:00:cc"},
			wantYielded:   addrs("10.0.0.3"),
			wantFailed:    map[string]string{"10.0.0.4": "no such interface"},
			wantMACs:      maxMACs,
			wantPlane:     &speakerv1.DataPlane{Ready: false, Reason: clip(strings.Repeat("x", 1000), maxTextLen), SinceUnixMs: 7},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := summarize(tc.report, acceptor{vips: node.HoldsEach})
			if diff := cmp.Diff(tc.wantConflicts, sum.conflicts); diff != "" {
				t.Errorf("conflicts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantClaimed, sum.claimed); diff != "" {
				t.Errorf("claimed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantYielded, sum.yielded, equateAddrs); diff != "" {
				t.Errorf("yielded (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantFailed, sum.failed); diff != "" {
				t.Errorf("failed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantPlane, sum.dataPlane, protocmp.Transform()); diff != "" {
				t.Errorf("data plane (-want +got):\n%s", diff)
			}
			if tc.wantMACs > 0 {
				if len(sum.macs) != tc.wantMACs {
					t.Errorf("kept %d MACs, want %d", len(sum.macs), tc.wantMACs)
				}
			} else if diff := cmp.Diff([]string{"02:00:5e:00:01:01", "02:00:5e:00:01:02"}, sum.macs); diff != "" {
				t.Errorf("MACs (-want +got):\n%s", diff)
			}
			if got := sum.dropped[ignoredUnknownVIP]; got != 1 {
				t.Errorf("dropped %d VIP entries, want 1 (10.0.0.9, not the node's)", got)
			}
		})
	}
}

// TestClaimsReachState: a speaker reports a conflict, a claim, a yielded
// VIP, its interfaces' MACs and its data plane; the CCM's State shows
// them, and each change of them is an OnChange, like a failed VIP.
func TestClaimsReachState(t *testing.T) {
	const node = "node-claims"
	e := newEnv(t)
	_, held := allocatedVIPs(5)
	next := make(chan *speakerv1.Report, 4)
	e.startScripted(node, claimsReport, func() *speakerv1.Report {
		select {
		case r := <-next:
			return r
		default:
			return nil
		}
	}, claimsReport().GetCapabilities()...)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 50 * time.Millisecond, Misses: 5, Leader: "test", Allocated: held})
	m.SetReady()
	changes := make(chan string, 64)
	m.OnChange(func(n string) {
		select {
		case changes <- n:
		default:
		}
	})
	m.SetNode(node, nodeAddr(node))
	waitFor(t, "connected", 10*time.Second, func() bool { st, _ := m.State(node); return st.Connected })
	st, _ := m.State(node)
	want := State{
		Conflicts: map[string]string{"10.0.0.2": "02:00:5e:00:00:bb"},
		Claimed:   map[string]string{"10.0.0.1": "02:00:5e:00:00:aa", "10.0.0.3": "02:00:5e:00:00:cc"},
		Yielded:   addrs("10.0.0.3"),
		Failed:    map[string]string{"10.0.0.4": "no such interface"},
		MACs:      []string{"02:00:5e:00:01:01", "02:00:5e:00:01:02"},
		DataPlane: &speakerv1.DataPlane{Ready: false, Reason: clip(strings.Repeat("x", 1000), maxTextLen), SinceUnixMs: 7},
	}
	only := cmpopts.IgnoreFields(State{}, "Connected", "Since", "LastReport", "Healthy", "Problem", "Announcing", "Initial", "Applied", "Sent", "Reported", "Version", "Capabilities")
	if diff := cmp.Diff(want, st, only, equateAddrs, protocmp.Transform()); diff != "" {
		t.Errorf("state (-want +got):\n%s", diff)
	}

	// Each change is an OnChange; a heartbeat answer (not full) changes
	// nothing.
	for _, step := range []struct {
		name   string
		change func(r *speakerv1.Report)
		check  func(st State) bool
	}{
		{"data plane ready", func(r *speakerv1.Report) { r.DataPlane = &speakerv1.DataPlane{Ready: true, SinceUnixMs: 8} },
			func(st State) bool { return st.DataPlane.GetReady() }},
		{"conflict resolved", func(r *speakerv1.Report) {
			r.DataPlane = &speakerv1.DataPlane{Ready: true, SinceUnixMs: 8}
			r.Vips[1] = &speakerv1.VIPStatus{Address: "10.0.0.2", State: speakerv1.VIPStatus_ANNOUNCING}
		}, func(st State) bool { return len(st.Conflicts) == 0 }},
		{"a new interface", func(r *speakerv1.Report) {
			r.DataPlane = &speakerv1.DataPlane{Ready: true, SinceUnixMs: 8}
			r.Vips[1] = &speakerv1.VIPStatus{Address: "10.0.0.2", State: speakerv1.VIPStatus_ANNOUNCING}
			r.Interfaces = append(r.Interfaces, &speakerv1.InterfaceStatus{Name: "eth4", HardwareAddress: "02:00:5e:00:01:03"})
		}, func(st State) bool { return len(st.MACs) == 3 }},
	} {
		for len(changes) > 0 {
			<-changes
		}
		r := claimsReport()
		step.change(r)
		next <- r
		// An OnChange of the step before may still be on its way (the
		// manager calls OnChange after it updates State): the state is
		// checked at each OnChange until one shows the change.
		deadline := time.After(10 * time.Second)
		for done := false; !done; {
			select {
			case <-changes:
				st, _ := m.State(node)
				done = step.check(st)
			case <-deadline:
				st, _ := m.State(node)
				t.Fatalf("%s: no OnChange shows the change; state %+v", step.name, st)
			}
		}
	}
}
