package speakers

import (
	"context"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// countingAllocator stands for the allocator and counts how often its
// lock would be taken.
type countingAllocator struct {
	heldVIPs
	locks atomic.Int64
}

func (c *countingAllocator) Holds(a netip.Addr) bool {
	c.locks.Add(1)
	return c.heldVIPs[a]
}

func (c *countingAllocator) HoldsEach(as []netip.Addr) []bool {
	c.locks.Add(1)
	return c.heldVIPs.HoldsEach(as)
}

var equateAddrs = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

// allocatedVIPs are n allocated addresses in 10.0.0.0/8 (see addrOf).
func allocatedVIPs(n int) ([]netip.Addr, heldVIPs) {
	held := heldVIPs{}
	var vips []netip.Addr
	for i := range n {
		a := netip.MustParseAddr(addrOf(int64(i + 1)))
		held[a], vips = true, append(vips, a)
	}
	return vips, held
}

// TestReportCheckedInOneLock: a speaker's report lists thousands of VIPs,
// allocated and invented. The CCM checks them against the allocator
// taking its lock once per report, not once per VIP (which would compete
// with every Ensure), and only for a stream's first report: later ones
// are checked against the node's own VIPs.
func TestReportCheckedInOneLock(t *testing.T) {
	const (
		node    = "node-lock"
		entries = 5000
		reports = 20
	)
	e := newEnv(t)
	vips, held := allocatedVIPs(entries / 2)
	alloc := &countingAllocator{heldVIPs: held}
	// Every report lists the allocated VIPs as announced, and as many
	// invented ones.
	var sp *scriptedSpeaker
	many := func() *speakerv1.Report {
		r := sp.report(true)
		for i := range entries {
			r.Vips = append(r.Vips, &speakerv1.VIPStatus{Address: addrOf(int64(i + 1)), State: speakerv1.VIPStatus_ANNOUNCING})
		}
		return r
	}
	var n atomic.Int64
	sp = e.startScripted(node, many, func() *speakerv1.Report {
		if n.Add(1) > reports {
			return nil
		}
		return many()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: alloc})
	m.SetReady()
	ignoredBefore, mergedBefore := ignoredItems(node, ignoredUnknownVIP), ignoredItems(node, ignoredRateLimited)
	m.SetNode(node, nodeAddr(node))
	// Each report taken in counts its entries/2 invented VIPs as
	// ignored; each merged into the next one counts once.
	waitFor(t, "the CCM took in the speaker's reports", 20*time.Second, func() bool {
		taken := (ignoredItems(node, ignoredUnknownVIP) - ignoredBefore) / (entries / 2)
		return taken+ignoredItems(node, ignoredRateLimited)-mergedBefore >= reports+1
	})
	st, _ := m.State(node)
	t.Logf("%d reports of %d VIPs on %d streams: the allocator's lock taken %d times", sp.sent.Load()+sp.streams.Load(), entries, sp.streams.Load(), alloc.locks.Load())
	if got, most := alloc.locks.Load(), sp.streams.Load(); got > most {
		t.Errorf("the allocator's lock was taken %d times for %d streams' reports of %d VIPs, want at most once per stream", got, sp.streams.Load(), entries)
	}
	if diff := cmp.Diff(vips, st.Announcing.Slice(), equateAddrs); diff != "" {
		t.Errorf("announced VIPs (-want +got):\n%s", diff)
	}
}

// TestReportVIPsOfItsNode: a speaker whose node key was stolen lists, in
// every report, every VIP the CCM allocated, placed on other nodes, as
// failed, with an error that changes each time. After the stream's first
// report, the CCM takes in only the VIPs placed on the speaker's node and
// those its first report announced (placed by a previous leader): the
// others are counted as ignored, State.Failed never holds them, and the
// reports cause no change (OnChange) but for the node's own VIPs.
func TestReportVIPsOfItsNode(t *testing.T) {
	const (
		node    = "node-flip"
		reports = 200
	)
	e := newEnv(t)
	vips, held := allocatedVIPs(8)
	placed, previous := vips[0], vips[1] // placed by this CCM; by a previous leader
	var (
		sp *scriptedSpeaker
		n  atomic.Int64
	)
	sp = e.startScripted(node, func() *speakerv1.Report {
		r := sp.report(true)
		r.Vips = []*speakerv1.VIPStatus{{Address: previous.String(), State: speakerv1.VIPStatus_ANNOUNCING}}
		return r
	}, func() *speakerv1.Report {
		i := n.Add(1)
		if i > reports {
			return nil
		}
		r := sp.report(true)
		r.AppliedVersion = 1
		for _, a := range vips {
			v := &speakerv1.VIPStatus{Address: a.String(), State: speakerv1.VIPStatus_FAILED, Error: strings.Repeat("x", int(i%2)+1)}
			switch a {
			case previous:
				v.State, v.Error = speakerv1.VIPStatus_ANNOUNCING, ""
			case placed:
				v.Error = "cannot"
				if i == reports {
					v.Error = "last"
				}
			}
			r.Vips = append(r.Vips, v)
		}
		return r
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	var changes atomic.Int64
	m.OnChange(func(n string) {
		if n == node {
			changes.Add(1)
		}
	})
	m.SetReady()
	before := ignoredItems(node, ignoredUnknownVIP)
	m.SetNode(node, nodeAddr(node))
	m.Assign(node, ann(placed.String()))
	waitFor(t, "the CCM took in the speaker's last report", 20*time.Second, func() bool {
		st, _ := m.State(node)
		return st.Failed[placed.String()] == "last"
	})
	st, _ := m.State(node)
	ignored := ignoredItems(node, ignoredUnknownVIP) - before
	t.Logf("%d reports on %d streams: %d changes, %d VIPs ignored, failed %v", sp.sent.Load(), sp.streams.Load(), changes.Load(), ignored, st.Failed)
	if diff := cmp.Diff(map[string]string{placed.String(): "last"}, st.Failed); diff != "" {
		t.Errorf("failed VIPs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{previous}, st.Announcing.Slice(), equateAddrs); diff != "" {
		t.Errorf("announced VIPs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]netip.Addr{previous}, st.Initial, equateAddrs); diff != "" {
		t.Errorf("Initial (-want +got):\n%s", diff)
	}
	if ignored == 0 {
		t.Error("no VIP of another node was counted as ignored")
	}
	// Connected, the snapshot's report, the placed VIP's failure and its
	// last error; a reconnection for each further stream.
	if most := 4 + 2*(sp.streams.Load()-1); changes.Load() > most {
		t.Errorf("the speaker's reports caused %d changes, want at most %d: flipping other nodes' VIPs drives the planner", changes.Load(), most)
	}
}

// TestReportLimitFollowsNode: in a cluster of 4,000 allocated VIPs, a
// speaker whose node key was stolen, with one VIP placed on its node,
// sends a report of invented VIPs larger than its node explains (but
// under what a first report may take). The CCM refuses it before
// decoding it (the stream is opened again): what a report may cost grows
// with the node's VIPs, not the cluster's. A legitimate report as large
// as the VIPs placed on the node explain is taken in, on the same
// stream, even when they were placed all at once after it opened.
func TestReportLimitFollowsNode(t *testing.T) {
	const node = "node-big"
	e := newEnv(t)
	vips, held := allocatedVIPs(4000)
	placed := vips[:3000]
	var (
		sp       *scriptedSpeaker
		step     atomic.Int64
		invented int
		bigSize  int
	)
	// errText makes each VIP's entry about as large as the limit allows
	// (reportVIPBytes).
	errText := strings.Repeat("e", reportVIPBytes-64)
	big := func() *speakerv1.Report {
		r := sp.report(true)
		for proto.Size(r) < 2*nodeReportLimit(1, 0) {
			r.Vips = append(r.Vips, &speakerv1.VIPStatus{Address: addrOf(int64(100_000 + len(r.Vips))), State: speakerv1.VIPStatus_FAILED, Error: errText})
		}
		invented, bigSize = len(r.Vips), proto.Size(r)
		return r
	}
	legit := func() *speakerv1.Report {
		r := sp.report(true)
		r.AppliedVersion = 2
		for _, a := range placed {
			r.Vips = append(r.Vips, &speakerv1.VIPStatus{Address: a.String(), State: speakerv1.VIPStatus_FAILED, Error: errText})
		}
		return r
	}
	ready := make(chan struct{}) // the placed VIPs were sent
	sp = e.startScripted(node, func() *speakerv1.Report { return sp.report(true) }, func() *speakerv1.Report {
		switch step.Load() {
		case 0:
			step.Add(1)
			r := sp.report(true)
			r.Vips = []*speakerv1.VIPStatus{{Address: vips[3999].String(), State: speakerv1.VIPStatus_ANNOUNCING}}
			r.AppliedVersion = 1
			return r
		case 1:
			step.Add(1)
			return big()
		case 2:
			select {
			case <-ready:
				step.Add(1)
				return legit()
			default:
			}
		}
		return nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	m.SetReady()
	before := ignoredItems(node, ignoredUnknownVIP)
	m.SetNode(node, nodeAddr(node))
	m.Assign(node, ann(vips[3999].String()))
	waitFor(t, "the speaker sent its large report", 20*time.Second, func() bool { return step.Load() >= 2 })
	// Refused, the stream is opened again; decoded, its VIPs are
	// counted as ignored.
	waitFor(t, "the CCM refused or decoded the large report", 20*time.Second, func() bool {
		return sp.streams.Load() >= 2 || ignoredItems(node, ignoredUnknownVIP) > before
	})
	waitFor(t, "the speaker is connected after its large report", 20*time.Second, func() bool {
		st, _ := m.State(node)
		return st.Connected
	})
	decoded := ignoredItems(node, ignoredUnknownVIP) - before
	streams := sp.streams.Load()
	for _, a := range placed {
		m.Assign(node, ann(a.String()))
	}
	waitFor(t, "the placed VIPs went out", 20*time.Second, func() bool {
		st, _ := m.State(node)
		return st.Sent >= 2
	})
	close(ready)
	waitFor(t, "the CCM took in the legitimate report of the placed VIPs", 20*time.Second, func() bool {
		st, _ := m.State(node)
		return len(st.Failed) == len(placed)
	})
	t.Logf("a report of %d KiB (%d invented VIPs; node limit %d KiB, stream limit %d KiB): %d invented VIPs decoded, %d streams; the legitimate report of %d VIPs taken in on stream %d",
		bigSize>>10, invented, nodeReportLimit(1, 0)>>10, reportLimit(4000, 0)>>10, decoded, streams, len(placed), sp.streams.Load())
	if decoded > 0 {
		t.Errorf("the CCM decoded the report of %d KiB, over what the node's VIPs explain (%d KiB): %d invented VIPs counted as ignored", bigSize>>10, nodeReportLimit(1, 0)>>10, decoded)
	}
	if streams < 2 {
		t.Errorf("the speaker's stream survived a report of %d KiB, over its node's limit of %d KiB", bigSize>>10, nodeReportLimit(1, 0)>>10)
	}
	if sp.streams.Load() != streams {
		t.Errorf("the legitimate report of the %d placed VIPs broke the stream (%d streams, were %d)", len(placed), sp.streams.Load(), streams)
	}
}
