package speakers

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// vipFloodRounds is how many reports of invented VIPs the malicious
// speaker sends, the last one marked.
const vipFloodRounds = 8

// TestMaliciousSpeakerInventsVIPs: a speaker whose node key was stolen,
// with one VIP placed on its node, sends reports just under the size the
// CCM accepts from it (what its node's VIPs explain), each listing as
// many invented VIPs as fit, half announced, half failed, and every VIP
// the CCM allocated (the others placed on other nodes) as failed. The CCM
// keeps only the node's VIP and counts the others as ignored: the
// malicious node's state, metric series, log lines and the CCM's heap stay
// within a small fixed bound, and another speaker's stream stays up and
// keeps taking updates.
func TestMaliciousSpeakerInventsVIPs(t *testing.T) {
	const node = "node-vips"
	e := newEnv(t)
	honest := e.startSpeaker("node-a")

	held := heldVIPs{}
	var allocated []netip.Addr
	for i := range 8 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)})
		held[a] = true
		allocated = append(allocated, a)
	}
	// One VIP is placed on the malicious node and it has no BGP peers:
	// once its stream's first report is taken in, its reports may be as
	// large as its VIP and the failed one explain.
	own := allocated[len(allocated)-1]
	limit := nodeReportLimit(1, 0)
	var (
		name     atomic.Int64 // the next invented address
		invented atomic.Int64 // invented VIPs sent in all, and other nodes' VIPs
		perRound atomic.Int64 // invented VIPs of the last report
		tooBig   atomic.Int64 // reports over limit (none should be)
		round    atomic.Int64
	)
	evil := &scriptedSpeaker{node: node}
	// flood lists every allocated VIP as failed with text, then as many
	// invented VIPs as fit under limit.
	flood := func(text string) *speakerv1.Report {
		r := evil.report(true)
		r.AppliedVersion = 1
		for _, a := range allocated {
			r.Vips = append(r.Vips, &speakerv1.VIPStatus{Address: a.String(), State: speakerv1.VIPStatus_FAILED, Error: text})
		}
		size, n := proto.Size(r), int64(0)
		for {
			v := &speakerv1.VIPStatus{Address: addrOf(name.Add(1)), State: speakerv1.VIPStatus_FAILED, Error: "x"}
			if n%2 == 0 {
				v.State, v.Error = speakerv1.VIPStatus_ANNOUNCING, ""
			}
			s := proto.Size(v) + 4 // and its tag and length
			if size+s > limit-1024 {
				break
			}
			r.Vips, size, n = append(r.Vips, v), size+s, n+1
		}
		if proto.Size(r) > limit {
			tooBig.Add(1)
		}
		invented.Add(n + int64(len(allocated)-1))
		perRound.Store(n)
		return r
	}
	evil = e.startScripted(node, func() *speakerv1.Report {
		if round.Load() >= vipFloodRounds { // a new stream: the last report again
			return flood("last")
		}
		return evil.report(true)
	}, func() *speakerv1.Report {
		switch r := round.Add(1); {
		case r < vipFloodRounds:
			return flood("placed on another node")
		case r == vipFloodRounds:
			return flood("last")
		}
		return nil
	})

	lines := &lineCounter{nodes: []string{node}, lines: map[string]int{}}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), lines.logger()))
	defer cancel()
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	m.SetReady()
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann(allocated[0].String()))
	waitFor(t, "the honest speaker took its VIP", 10*time.Second, func() bool {
		st, _ := m.State("node-a")
		return st.Connected && st.Applied == st.Sent && slices.Contains(honest.agent.Addresses(), allocated[0])
	})
	honestSince := func() time.Time { st, _ := m.State("node-a"); return st.Since }()
	heapBefore := heap()
	seriesBefore := seriesOf(t, node)
	linesBefore := lines.count(node)
	ignoredBefore, mergedBefore := ignoredItems(node, ignoredUnknownVIP), ignoredItems(node, ignoredRateLimited)
	start := time.Now()

	// The flood starts once the malicious speaker has its node
	// certificate; meanwhile the honest speaker's VIP moves, and it must
	// follow each move.
	m.SetNode(node, nodeAddr(node))
	m.Assign(node, ann(own.String()))
	lastTaken := func() bool {
		st, _ := m.State(node)
		return st.Failed[own.String()] == "last"
	}
	for i := 1; i < len(allocated)-1 || !lastTaken(); i++ {
		moveHonest(t, m, honest, allocated[:len(allocated)-1], i)
		if time.Since(start) > time.Minute {
			t.Fatalf("after a minute the CCM has not taken in the malicious speaker's last report (%d of %d sent)", evil.sent.Load(), vipFloodRounds)
		}
	}
	took := time.Since(start)
	grown := int64(heap()) - int64(heapBefore) // while the CCM holds the last report's state
	st, _ := m.State(node)
	evil.halt()
	if st, _ := m.State("node-a"); !st.Connected || !st.Since.Equal(honestSince) {
		t.Errorf("the honest speaker's stream broke during the flood: connected %v, since %s (was %s): %s", st.Connected, st.Since, honestSince, st.Problem)
	}

	series := seriesOf(t, node) - seriesBefore
	logged := lines.count(node) - linesBefore
	ignored := ignoredItems(node, ignoredUnknownVIP) - ignoredBefore
	merged := ignoredItems(node, ignoredRateLimited) - mergedBefore
	t.Logf("in %s the malicious speaker sent %d reports (limit %d KiB) on %d streams, %d invented VIPs (%d in each): the CCM keeps %d failed and %d announcing VIPs of it; %d new series, %d log lines, heap grew %d KiB; ignored: %d VIPs, %d reports merged",
		took.Round(time.Millisecond), evil.sent.Load(), limit>>10, evil.streams.Load(), invented.Load(), perRound.Load(), len(st.Failed), st.Announcing.Len(), series, logged, grown>>10, ignored, merged)
	if n := tooBig.Load(); n > 0 {
		t.Fatalf("%d of the malicious speaker's reports were over the CCM's size limit: the test must stay under it", n)
	}
	if perRound.Load() < 2_000 {
		t.Fatalf("the malicious speaker's reports list %d invented VIPs, want at least 2,000", perRound.Load())
	}
	if diff := cmp.Diff(map[string]string{own.String(): "last"}, st.Failed); diff != "" {
		t.Errorf("failed VIPs on %s: only the one placed there counts (-want +got):\n%s", node, diff)
	}
	if n := slices.IndexFunc(st.Announcing.Slice(), func(a netip.Addr) bool { return !held[a] }); n >= 0 {
		t.Errorf("the CCM keeps the invented VIP %s as announced by %s (of %d announced)", st.Announcing.Slice()[n], node, st.Announcing.Len())
	}
	// Each report taken in counts its invented VIPs and the other nodes';
	// a report merged into the next counts none.
	if lo, hi := perRound.Load(), invented.Load(); ignored < lo || ignored > hi || merged == 0 && evil.streams.Load() == 1 && ignored != hi {
		t.Errorf("%d invented VIPs counted as ignored, want all %d sent (at least the last report's %d; %d reports merged)", ignored, hi, lo, merged)
	}
	// Per node: connected, healthy, info, lag; three ignore reasons.
	if maxSeries := 4 + len(ignoreReasons); series > maxSeries {
		t.Errorf("the malicious speaker made %d metric series, want at most %d", series, maxSeries)
	}
	// Connected and lost once (the stream must not break), the node's
	// VIP's failure once, and the paced lines.
	if n := evil.streams.Load(); n != 1 {
		t.Errorf("the malicious speaker's reports, under its limit, broke its stream: %d streams", n)
	}
	if maxLines := 3 + 1 + logBurst + int(took.Seconds()*float64(logRate)) + 1; logged > maxLines {
		t.Errorf("the malicious speaker caused %d log lines, want at most %d", logged, maxLines)
	}
	if grown > 2<<20 {
		t.Errorf("the CCM's heap grew %d KiB under the flood, want under 2 MiB", grown>>10)
	}
}
