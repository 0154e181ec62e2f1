package speakers

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/component-base/metrics/legacyregistry"
	"k8s.io/component-base/metrics/testutil"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
)

// Sizes of the malicious speaker's reports: most list mediumFlood
// invented BGP peers (under the limit of a node with one peer), every
// bigEvery-th bigFlood invented VIPs (over it).
const (
	mediumFlood = 2_000
	bigFlood    = 100_000
	bigEvery    = 8
)

// floodSpeaker is a speaker whose node key was stolen: it enrolls as a
// real speaker does, then answers every stream with reports as large and
// as fast as it can: peers and VIPs nobody configured, sessions that flap
// so that each is counted, VIPs that fail so that each is logged.
type floodSpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent *speaker.Agent // enrolls
	creds *pki.NodeCredentials

	stop    chan struct{}
	once    sync.Once
	sent    atomic.Int64 // flood reports sent
	big     atomic.Int64 // of them bigFlood ones
	streams atomic.Int64 // flood streams opened
	next    atomic.Int64 // the next invented name
}

func (f *floodSpeaker) halt() { f.once.Do(func() { close(f.stop) }) }

func (f *floodSpeaker) Sync(stream speakerv1.Speaker_SyncServer) error {
	if ok, _ := f.creds.Enrolled(); !ok {
		return f.agent.Sync(stream)
	}
	f.streams.Add(1)
	go func() { // read the instructions, so that the CCM's sends never block
		for {
			if _, err := stream.Recv(); err != nil {
				return
			}
		}
	}()
	first := &speakerv1.Report{Node: "node-evil", Full: true, Version: "v0.0.0", Capabilities: []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing, speakerv1.CapabilityBGP},
		Interfaces: []*speakerv1.InterfaceStatus{{Name: "eth0", Up: true, Default: true}}}
	if err := stream.Send(first); err != nil {
		return err
	}
	for round := 0; ; round++ {
		select {
		case <-f.stop:
			<-stream.Context().Done()
			return nil
		default:
		}
		r := &speakerv1.Report{Node: "node-evil", Full: true, AppliedVersion: 1, Version: "v0.0.0", Capabilities: first.Capabilities, Interfaces: first.Interfaces}
		if round%bigEvery == bigEvery-1 {
			for range bigFlood {
				r.Vips = append(r.Vips, &speakerv1.VIPStatus{Address: f.inventAddr(), State: speakerv1.VIPStatus_FAILED, Error: "x"})
			}
			f.big.Add(1)
		} else {
			// Even rounds bring new peers up, odd ones take them down:
			// each counts a flap.
			base := f.next.Load()
			if round%2 == 1 {
				base -= mediumFlood
			} else {
				f.next.Add(mediumFlood)
			}
			state := []string{"Established", "Idle"}[round%2]
			for i := range int64(mediumFlood) {
				r.BgpSessions = append(r.BgpSessions, &speakerv1.BGPSessionStatus{Peer: addrOf(base + i), State: state})
			}
		}
		if err := stream.Send(r); err != nil {
			return err
		}
		f.sent.Add(1)
	}
}

func (f *floodSpeaker) inventAddr() string { return addrOf(f.next.Add(1)) }

// addrOf is an invented address in 10.0.0.0/8, n-th of them.
func addrOf(n int64) string {
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

// heldVIPs stands for the allocator.
type heldVIPs map[netip.Addr]bool

func (h heldVIPs) Holds(a netip.Addr) bool { return h[a] }

func (h heldVIPs) HoldsEach(as []netip.Addr) []bool {
	ok := make([]bool, len(as))
	for i, a := range as {
		ok[i] = h[a]
	}
	return ok
}
func (h heldVIPs) Held() int { return len(h) }

// startStolen serves node's speaker, whose node key was stolen, with
// impl behind a real speaker's mTLS gRPC server and a proxy; impl enrolls
// through the returned agent (a real speaker) and credentials.
func (e *env) startStolen(node string, impl speakerv1.SpeakerServer) (*speaker.Agent, *pki.NodeCredentials) {
	e.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	creds := e.credentials(node, node)
	agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, impl)
	go func() { _ = srv.Serve(lis) }()
	e.t.Cleanup(srv.Stop)
	e.mu.Lock()
	e.speakers[node] = &testSpeaker{agent: agent, srv: srv, proxy: newProxy(e.t, lis.Addr().String())}
	e.mu.Unlock()
	return agent, creds
}

// lineCounter counts the log lines that name one of nodes.
type lineCounter struct {
	nodes []string
	mu    sync.Mutex
	lines map[string]int
}

func (c *lineCounter) logger() logr.Logger {
	return funcr.New(func(_, args string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range c.nodes {
			if strings.Contains(args, `"node"="`+n+`"`) {
				c.lines[n]++
			}
		}
	}, funcr.Options{Verbosity: 1})
}

func (c *lineCounter) count(node string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lines[node]
}

// seriesOf counts the CCM's metric series (at /metrics) labelled with
// node.
func seriesOf(t *testing.T, node string) int {
	t.Helper()
	families, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gathering /metrics: %v", err)
	}
	n := 0
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool {
				return l.GetName() == "node" && l.GetValue() == node
			}) {
				n++
			}
		}
	}
	return n
}

func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// TestMaliciousSpeakerFlood: a speaker whose node key was stolen sends, as
// fast as it can, reports of 2,000 invented BGP peers whose sessions flap
// and reports of 100,000 invented VIPs that fail. The CCM takes in only
// the peers it configured, refuses the reports of 100,000 VIPs (larger
// than its configured state can explain: each breaks the stream; see
// TestMaliciousSpeakerInventsVIPs for reports of invented VIPs under the
// limit), paces the rest and its log lines: its metric series, log lines
// and heap stay within a small bound, and another speaker's stream stays
// up and keeps taking updates.
func TestMaliciousSpeakerFlood(t *testing.T) {
	e := newEnv(t)
	honest := e.startSpeaker("node-a")

	// The malicious speaker: a real speaker's credentials and server.
	evil := &floodSpeaker{stop: make(chan struct{})}
	evil.agent, evil.creds = e.startStolen("node-evil", evil)
	t.Cleanup(evil.halt)

	lines := &lineCounter{nodes: []string{"node-a", "node-evil"}, lines: map[string]int{}}
	ctx, cancel := context.WithCancel(klog.NewContext(context.Background(), lines.logger()))
	defer cancel()
	held := heldVIPs{}
	for i := range 8 {
		held[netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i)})] = true
	}
	m := e.managerWith(ctx, Options{Heartbeat: 100 * time.Millisecond, Misses: 10, Leader: "test", Allocated: held})
	m.SetReady()
	m.SetBGP("node-evil", &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{{Name: "tor", Address: "192.0.2.1", PeerAsn: 64512}}})
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	waitFor(t, "the honest speaker took its VIP", 10*time.Second, func() bool {
		st, _ := m.State("node-a")
		return st.Connected && st.Applied == st.Sent && slices.Contains(honest.agent.Addresses(), netip.MustParseAddr("192.0.2.200"))
	})
	honestSince := func() time.Time { st, _ := m.State("node-a"); return st.Since }()
	heapBefore := heap()
	seriesBefore := seriesOf(t, "node-evil")
	linesBefore := lines.count("node-evil")
	start := time.Now()

	// The flood starts once the malicious speaker has its node
	// certificate; meanwhile the honest speaker is given VIPs, one at a
	// time, and must take each.
	m.SetNode("node-evil", nodeAddr("node-evil"))
	for i := 1; i < 8 || evil.sent.Load() < 4*bigEvery || evil.big.Load() < 2; i++ {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(200 + i%8)}).String()
		if i%8 == 0 {
			continue
		}
		if i > 8 {
			m.Unassign("node-a", a)
			waitFor(t, "the honest speaker withdrew "+a+" during the flood", 20*time.Second, func() bool {
				st, _ := m.State("node-a")
				return st.Applied == st.Sent && !slices.Contains(honest.agent.Addresses(), netip.MustParseAddr(a))
			})
		}
		m.Assign("node-a", ann(a))
		waitFor(t, "the honest speaker took "+a+" during the flood", 20*time.Second, func() bool {
			st, _ := m.State("node-a")
			return st.Applied == st.Sent && slices.Contains(honest.agent.Addresses(), netip.MustParseAddr(a))
		})
		if time.Since(start) > time.Minute {
			t.Fatalf("after a minute the malicious speaker sent %d reports (%d of %d VIPs), want %d (%d)", evil.sent.Load(), evil.big.Load(), bigFlood, 4*bigEvery, 2)
		}
	}
	evil.halt()
	took := time.Since(start)
	if st, _ := m.State("node-a"); !st.Connected || !st.Since.Equal(honestSince) {
		t.Errorf("the honest speaker's stream broke during the flood: connected %v, since %s (was %s): %s", st.Connected, st.Since, honestSince, st.Problem)
	}

	series := seriesOf(t, "node-evil") - seriesBefore
	logged := lines.count("node-evil") - linesBefore
	grown := int64(heap()) - int64(heapBefore)
	ignored := func(why ignoreReason) float64 {
		v, _ := testutil.GetCounterMetricValue(reportItemsIgnored.WithLabelValues("node-evil", string(why)))
		return v
	}
	t.Logf("in %s the malicious speaker sent %d reports on %d streams (%d of %d invented VIPs, the others %d invented peers): %d new series, %d log lines, heap grew %d KiB; ignored: %v peers, %v VIPs, %v reports merged",
		took.Round(time.Millisecond), evil.sent.Load(), evil.streams.Load(), evil.big.Load(), bigFlood, mediumFlood, series, logged, grown>>10,
		ignored(ignoredUnknownPeer), ignored(ignoredUnknownVIP), ignored(ignoredRateLimited))
	// Per node: connected, healthy, info, lag; per configured peer: up,
	// routes, BFD up, two flap counters; three ignore reasons.
	if maxSeries := 4 + 5 + len(ignoreReasons); series > maxSeries {
		t.Errorf("the malicious speaker made %d metric series, want at most %d", series, maxSeries)
	}
	// Its reports of bigFlood VIPs are over its limit: each breaks its
	// stream, which the CCM opens again after a backoff of at least
	// minBackoff. The bound is the CCM's, not the attacker's: connected,
	// lost and enrolled at most once per minBackoff, and the paced lines.
	maxStreams := 1 + int(took/minBackoff)
	if n := int(evil.streams.Load()); n > maxStreams {
		t.Errorf("the malicious speaker had %d streams in %s, want at most %d (one per %s)", n, took.Round(time.Millisecond), maxStreams, minBackoff)
	}
	if maxLines := 3*maxStreams + logBurst + int(took.Seconds()*float64(logRate)) + 1; logged > maxLines {
		t.Errorf("the malicious speaker caused %d log lines, want at most %d", logged, maxLines)
	}
	// What the CCM keeps of the speaker: its configured peer at most,
	// no VIP (none is placed on its node).
	if st, _ := m.State("node-evil"); len(st.Failed)+st.Announcing.Len()+len(st.Initial) > 0 || len(st.BGPSessions) > 1 {
		t.Errorf("the CCM keeps %d failed, %d announced, %d initial VIPs and %d BGP sessions of the malicious speaker, want none and at most its one peer", len(st.Failed), st.Announcing.Len(), len(st.Initial), len(st.BGPSessions))
	}
	// heap collects twice before it reads; the bound is generous.
	if grown > 8<<20 {
		t.Errorf("the CCM's heap grew %d KiB under the flood, want under 8 MiB", grown>>10)
	}
	if ignored(ignoredUnknownPeer) == 0 {
		t.Error("no invented peer was counted as ignored: the flood never reached the CCM's checks")
	}
}
