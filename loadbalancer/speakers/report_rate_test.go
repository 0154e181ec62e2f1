package speakers

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// fastReports is how many small reports the fast speaker sends at once.
const fastReports = 3000

// TestFastReportsMerged: a speaker sends small reports as fast as the CCM
// reads them, far faster than reportRate. The CCM takes in at most
// reportBurst + reportRate a second of them and merges the others into
// the next one, counting each; what the reports say still arrives: the
// last report's VIPs, and a version confirmed only in a report that was
// merged.
func TestFastReportsMerged(t *testing.T) {
	const node = "node-fast"
	e := newEnv(t)
	held := heldVIPs{}
	for i := range 8 {
		held[netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)})] = true
	}
	vip := "192.0.2.201"

	// Each report says why the speaker cannot announce vip, and lists an
	// invented VIP: the CCM counts one ignored VIP per report it takes in.
	// Only the middle one confirms the snapshot (version 1).
	var n atomic.Int64
	fast := &scriptedSpeaker{node: node}
	fast = e.startScripted(node, func() *speakerv1.Report { return fast.report(true) }, func() *speakerv1.Report {
		i := n.Add(1)
		if i > fastReports {
			return nil
		}
		r := fast.report(true)
		text := fmt.Sprintf("report %d", i)
		if i == fastReports {
			text = "last"
		}
		if i == fastReports/2 {
			r.AppliedVersion = 1
		}
		r.Vips = []*speakerv1.VIPStatus{
			{Address: vip, State: speakerv1.VIPStatus_FAILED, Error: text},
			{Address: addrOf(i), State: speakerv1.VIPStatus_ANNOUNCING},
		}
		return r
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	m.SetReady()
	takenBefore, mergedBefore := ignoredItems(node, ignoredUnknownVIP), ignoredItems(node, ignoredRateLimited)
	start := time.Now()
	m.SetNode(node, nodeAddr(node))
	m.Assign(node, ann(vip)) // a report counts only the node's VIPs
	waitFor(t, "the CCM took in the fast speaker's last report", 10*time.Second, func() bool {
		st, _ := m.State(node)
		return st.Failed[vip] == "last"
	})
	taken := ignoredItems(node, ignoredUnknownVIP) - takenBefore
	merged := ignoredItems(node, ignoredRateLimited) - mergedBefore
	took := time.Since(start)
	st, _ := m.State(node)

	t.Logf("in %s the speaker sent %d reports on %d streams: the CCM took in %d (%.0f/s), merged %d",
		took.Round(time.Millisecond), fast.sent.Load(), fast.streams.Load(), taken, float64(taken)/took.Seconds(), merged)
	if merged == 0 {
		t.Error("no report was merged: the reports never went faster than the CCM takes them in")
	}
	// The token bucket allows no more than this over took, which spans
	// every report taken in; 5 for the margin.
	if most := reportBurst + int64(reportRate*took.Seconds()) + 5; taken > most {
		t.Errorf("the CCM took in %d reports in %s, want at most %d (%d a second, %d at once)", taken, took.Round(time.Millisecond), most, reportRate, reportBurst)
	}
	if taken+merged < fastReports {
		t.Errorf("of %d reports the CCM took in %d and merged %d: some were neither", fastReports, taken, merged)
	}
	if diff := cmp.Diff(map[string]string{vip: "last"}, st.Failed); diff != "" {
		t.Errorf("failed VIPs after the last report (-want +got):\n%s", diff)
	}
	if st.Applied != st.Sent {
		t.Errorf("the speaker confirmed version %d of %d: a confirmation in a merged report was lost", st.Applied, st.Sent)
	}
	if st.Announcing.Len() != 0 {
		t.Errorf("the CCM keeps invented VIPs as announced: %v", st.Announcing.Slice())
	}
}

// TestMergedChangesBounded: a speaker that sends reports of VIP changes
// faster than the CCM takes them in, each naming addresses gone that its
// node never held, cannot make the merged report grow without bound: once
// the merged changes name more VIPs than its node holds (plus the
// headroom), the stream ends and is opened again, and the CCM keeps none
// of the invented VIPs.
func TestMergedChangesBounded(t *testing.T) {
	const node = "node-merge"
	e := newEnv(t)
	vip := "192.0.2.201"
	held := heldVIPs{netip.MustParseAddr(vip): true}
	var n atomic.Int64
	fast := &scriptedSpeaker{node: node}
	fast = e.startScripted(node, func() *speakerv1.Report {
		r := fast.report(true)
		r.Vips = []*speakerv1.VIPStatus{{Address: vip, State: speakerv1.VIPStatus_ANNOUNCING}}
		return r
	}, func() *speakerv1.Report {
		i := n.Add(1)
		if i > fastReports {
			return nil
		}
		r := fast.report(true)
		r.VipsDelta = true
		for j := range int64(8) {
			r.VipsGone = append(r.VipsGone, addrOf(8*i+j))
		}
		return r
	})

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	m.SetReady()
	m.SetNode(node, nodeAddr(node))
	m.Assign(node, ann(vip))
	waitFor(t, "the CCM ended the stream of merged changes and the speaker opened another", 20*time.Second, func() bool {
		return fast.streams.Load() >= 2
	})
	st, _ := m.State(node)
	for a := range st.Announcing.All() {
		if a.String() != vip {
			t.Errorf("the CCM keeps an invented VIP as announced: %s", a)
		}
	}
	if len(st.Failed)+len(st.Conflicts)+len(st.Yielded) != 0 {
		t.Errorf("the CCM keeps invented VIPs: failed %v, conflicts %v, yielded %v", st.Failed, st.Conflicts, st.Yielded)
	}
}
