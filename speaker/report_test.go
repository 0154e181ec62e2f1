package speaker

import (
	"maps"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestVIPDeltas: on a stream whose snapshot asks for VIP changes
// (vip_deltas), the snapshot's answer lists every VIP and each later report
// names only the VIPs whose status changed and the addresses gone; applied
// in order, they give the complete list that a new stream's first report
// shows. A stream that did not ask gets complete lists.
func TestVIPDeltas(t *testing.T) {
	t.Run("changes", func(t *testing.T) {
		_, fa, c := newTestAgent(t)
		s, _ := open(t, c)
		snap := snapshot(1, "192.0.2.1", "192.0.2.2")
		snap.GetSnapshot().VipDeltas = true
		r := send(t, s, snap)
		if r.GetVipsDelta() {
			t.Fatalf("the snapshot's answer is a list of changes: %v", r)
		}
		known := map[string]string{}
		patch := func(r *speakerv1.Report) {
			if !r.GetVipsDelta() {
				clear(known)
			}
			for _, g := range r.GetVipsGone() {
				delete(known, g)
			}
			for _, v := range r.GetVips() {
				known[v.GetAddress()] = v.GetState().String() + " " + v.GetClaimedBy()
			}
		}
		patch(r)
		// nextFull is the next full report.
		nextFull := func() *speakerv1.Report {
			for {
				r, err := s.Recv()
				if err != nil {
					t.Fatal(err)
				}
				if r.GetFull() {
					return r
				}
			}
		}
		// answer sends in and takes in every full report up to the one that
		// applied its version (a report of the speaker's own change may come
		// first); it returns what they named, in order.
		answer := func(in *speakerv1.Instruction) (named, gone []string, delta bool) {
			if err := s.Send(in); err != nil {
				t.Fatal(err)
			}
			delta = true
			for {
				r := nextFull()
				patch(r)
				delta = delta && r.GetVipsDelta()
				for _, v := range vips(r) {
					if !slices.Contains(named, v) {
						named = append(named, v)
					}
				}
				gone = append(gone, r.GetVipsGone()...)
				if r.GetAppliedVersion() >= in.GetUpdate().GetVersion() {
					return named, gone, delta
				}
			}
		}
		for _, step := range []struct {
			name     string
			in       *speakerv1.Instruction
			wantVIPs []string
			wantGone []string
		}{
			{"announce one", update(2, []string{"192.0.2.3"}), []string{"192.0.2.3=ANNOUNCING"}, nil},
			{"withdraw one", update(3, nil, "192.0.2.1"), nil, []string{"192.0.2.1"}},
			{"announce and withdraw", update(4, []string{"192.0.2.4", "192.0.2.5"}, "192.0.2.3"), []string{"192.0.2.4=ANNOUNCING", "192.0.2.5=ANNOUNCING"}, []string{"192.0.2.3"}},
			{"nothing changes", update(5, []string{"192.0.2.4"}), nil, nil},
		} {
			named, gone, delta := answer(step.in)
			if !delta {
				t.Fatalf("%s: a complete list after the snapshot's answer", step.name)
			}
			if diff := cmp.Diff(step.wantVIPs, named); diff != "" {
				t.Errorf("%s: VIPs named (-want +got):\n%s", step.name, diff)
			}
			if diff := cmp.Diff(step.wantGone, gone); diff != "" {
				t.Errorf("%s: VIPs gone (-want +got):\n%s", step.name, diff)
			}
		}

		// A change of the speaker's own: only that VIP.
		fa.claim("192.0.2.2", otherMAC)
		r = nextFull()
		if diff := cmp.Diff([]string{"192.0.2.2=ANNOUNCING"}, vips(r)); diff != "" || !r.GetVipsDelta() || len(r.GetVipsGone()) != 0 {
			t.Fatalf("report of a claim: delta %v, gone %v, VIPs (-want +got):\n%s", r.GetVipsDelta(), r.GetVipsGone(), diff)
		}
		if r.GetVips()[0].GetClaimedBy() != otherMAC.String() {
			t.Fatalf("report of a claim: %v, want claimed by %s", r.GetVips()[0], otherMAC)
		}
		patch(r)

		_, first := open(t, c)
		whole := map[string]string{}
		for _, v := range first.GetVips() {
			whole[v.GetAddress()] = v.GetState().String() + " " + v.GetClaimedBy()
		}
		if diff := cmp.Diff(whole, known); diff != "" {
			t.Errorf("the changes applied in order against a new stream's first report (-want +got):\n%s", diff)
		}
		if got := slices.Sorted(maps.Keys(known)); !slices.Equal(got, []string{"192.0.2.2", "192.0.2.4", "192.0.2.5"}) {
			t.Errorf("VIPs known from the changes: %v", got)
		}
	})
	t.Run("older CCM: complete lists", func(t *testing.T) {
		_, _, c := newTestAgent(t)
		s, _ := open(t, c)
		send(t, s, snapshot(1, "192.0.2.1", "192.0.2.2"))
		r := send(t, s, update(2, []string{"192.0.2.3"}, "192.0.2.1"))
		if r.GetVipsDelta() || len(r.GetVipsGone()) != 0 {
			t.Errorf("answer to an older CCM: %v, want a complete list", r)
		}
		if diff := cmp.Diff([]string{"192.0.2.2=ANNOUNCING", "192.0.2.3=ANNOUNCING"}, vips(r)); diff != "" {
			t.Errorf("VIPs (-want +got):\n%s", diff)
		}
	})
}
