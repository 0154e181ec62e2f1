package speakers

import (
	"context"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/component-base/metrics/legacyregistry"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/pki/pkitest"
	"github.com/ironlb/ironlb/speaker"
)

// fakeAnnouncer records what a real responder would answer for.
type fakeAnnouncer struct {
	mu    sync.Mutex
	addrs map[netip.Addr]bool
}

func (f *fakeAnnouncer) Announce(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[a] = true
	return nil
}
func (f *fakeAnnouncer) Withdraw(a netip.Addr) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, a)
	return nil
}
func (f *fakeAnnouncer) Err() error   { return nil }
func (f *fakeAnnouncer) Close() error { return nil }

// Probe finds every address free.
func (f *fakeAnnouncer) Probe(context.Context, []netip.Addr) (map[netip.Addr]speaker.Claim, error) {
	return nil, nil
}

// testSpeaker is a real speaker.Agent behind a real mTLS gRPC server on
// loopback, reached through a proxy that can go silent.
type testSpeaker struct {
	agent *speaker.Agent
	srv   *grpc.Server
	proxy *proxy
}

type env struct {
	t        *testing.T
	cs       *fake.Clientset
	bundle   *pki.Bundle
	caFile   string
	mu       sync.Mutex
	speakers map[string]*testSpeaker
	changes  atomic.Int64
}

// fakeTokenPrefix starts the tokens the fake API server's TokenReview
// accepts: fakeTokenPrefix+node is a speaker's token bound to node.
const fakeTokenPrefix = "speaker-on:"

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	cs := fake.NewClientset()
	cs.PrependReactor("create", "tokenreviews", pkitest.TokenReview(fakeTokenPrefix))
	bundle, err := pki.Bootstrap(ctx, cs, "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	// The fake clientset drops what is created between an informer's list
	// and its watch: a speaker's Node made then is never seen, and its
	// certificate is revoked as soon as anything asks (NodeGone). Let the
	// bundle's watches list before the tests create Nodes and pods.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if !bundle.WaitForLiveness(wctx) {
		t.Fatal("the bundle's watches of speaker pods and Nodes did not list")
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := pki.WriteBundle(caFile, bundle.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, cs: cs, bundle: bundle, caFile: caFile, speakers: map[string]*testSpeaker{}}
}

// speakerPod makes the Node and the speaker pod on it that the fake
// TokenReview binds node's tokens to, once.
func (e *env) speakerPod(node string) {
	e.t.Helper()
	ctx := context.Background()
	if _, err := e.cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{}); err == nil {
		return
	}
	if _, err := e.cs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, UID: uuid.NewUUID()}}, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ironlb-speaker-" + node, Namespace: "kube-system", UID: uuid.NewUUID()},
		Spec:       corev1.PodSpec{NodeName: node, ServiceAccountName: pki.DefaultSpeakerServiceAccount},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	if _, err := e.cs.CoreV1().Pods("kube-system").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// credentials are a speaker's for node, holding a token bound to
// tokenNode.
func (e *env) credentials(node, tokenNode string) *pki.NodeCredentials {
	e.t.Helper()
	e.speakerPod(tokenNode)
	tokenFile := filepath.Join(e.t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(fakeTokenPrefix+tokenNode), 0o600); err != nil {
		e.t.Fatal(err)
	}
	c, err := pki.NewNodeCredentials(node, e.caFile, tokenFile)
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

// startSpeaker starts (or restarts, with empty state) node's speaker.
func (e *env) startSpeaker(node string) *testSpeaker {
	e.t.Helper()
	return e.startSpeakerWith(node, e.credentials(node, node))
}

// startSpeakerWith starts node's speaker with creds.
func (e *env) startSpeakerWith(node string, creds *pki.NodeCredentials) *testSpeaker {
	e.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	ann := &fakeAnnouncer{addrs: map[netip.Addr]bool{}}
	agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) { return ann, nil }, logr.Discard(),
		speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, agent)
	go func() { _ = srv.Serve(lis) }()
	ts := &testSpeaker{agent: agent, srv: srv}
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.speakers[node]; old != nil {
		old.proxy.setTarget(lis.Addr().String())
		ts.proxy = old.proxy
	} else {
		ts.proxy = newProxy(e.t, lis.Addr().String())
	}
	e.speakers[node] = ts
	e.t.Cleanup(srv.Stop)
	return ts
}

func (e *env) manager(ctx context.Context, hb time.Duration, misses int) *Manager {
	m := e.managerNotReady(ctx, hb, misses)
	m.SetReady()
	return m
}

func (e *env) managerNotReady(ctx context.Context, hb time.Duration, misses int) *Manager {
	return e.managerWith(ctx, Options{Heartbeat: hb, Misses: misses, Leader: "test"})
}

func (e *env) managerWith(ctx context.Context, opts Options) *Manager {
	m := New(ctx, Options{
		Heartbeat: opts.Heartbeat, Misses: opts.Misses, Identity: e.bundle, Leader: opts.Leader, Term: opts.Term, Allocated: opts.Allocated,
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			host, _, _ := net.SplitHostPort(addr)
			e.mu.Lock()
			defer e.mu.Unlock()
			for name, s := range e.speakers {
				if nodeAddr(name).String() == host {
					var d net.Dialer
					return d.DialContext(ctx, "tcp", s.proxy.addr())
				}
			}
			return nil, &net.OpError{Op: "dial", Err: io.ErrClosedPipe}
		},
	})
	m.OnChange(func(string) { e.changes.Add(1) })
	return m
}

// nodeAddr gives each node a distinct documentation address; the Dial hook
// maps it to the node's proxy.
func nodeAddr(node string) netip.Addr {
	return netip.AddrFrom4([4]byte{192, 0, 2, byte(len(node)*7 + int(node[len(node)-1]))})
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !cond() {
		if time.Since(start) > timeout {
			t.Fatalf("after %s: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(start)
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func ann(a string) *speakerv1.Announcement {
	return &speakerv1.Announcement{Address: a, Service: "default/svc"}
}

func TestSnapshotUpdatesAndReconnect(t *testing.T) {
	e := newEnv(t)
	sp := e.startSpeaker("node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 5)

	// Assigned before the stream exists: goes out in the snapshot.
	m.SetNode("node-a", nodeAddr("node-a"))
	m.Assign("node-a", ann("192.0.2.200"))
	waitFor(t, "snapshot applied", 5*time.Second, func() bool {
		return slices.Equal(sp.agent.Addresses(), addrs("192.0.2.200"))
	})
	waitFor(t, "connected", time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected && st.Healthy })

	// Updates.
	m.Assign("node-a", ann("2001:db8::200"))
	m.Assign("node-a", ann("192.0.2.201"))
	waitFor(t, "updates applied", 5*time.Second, func() bool {
		return slices.Equal(sp.agent.Addresses(), addrs("192.0.2.200", "192.0.2.201", "2001:db8::200"))
	})
	m.Unassign("node-a", "192.0.2.200")
	waitFor(t, "withdrawal confirmed", 5*time.Second, func() bool {
		st, _ := m.State("node-a")
		return st.Applied == st.Sent && !slices.Contains(sp.agent.Addresses(), netip.MustParseAddr("192.0.2.200"))
	})
	if diff := cmp.Diff(addrs("192.0.2.201", "2001:db8::200"), sp.agent.Addresses(), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("after Unassign (-want +got):\n%s", diff)
	}
	st, _ := m.State("node-a")
	if st.Applied != st.Sent || st.Applied < 3 {
		t.Errorf("applied %d, sent %d; want equal and ≥ 3 (snapshot + updates)", st.Applied, st.Sent)
	}

	// A crashed speaker: the stream breaks, the manager notices at once.
	sp.srv.Stop()
	took := waitFor(t, "disconnect noticed", 2*time.Second, func() bool { st, _ := m.State("node-a"); return !st.Connected })
	t.Logf("crash noticed after %s", took)

	// The restarted speaker has nothing; the snapshot restores its VIPs.
	sp2 := e.startSpeaker("node-a")
	waitFor(t, "snapshot after reconnect", 5*time.Second, func() bool {
		return slices.Equal(sp2.agent.Addresses(), addrs("192.0.2.201", "2001:db8::200"))
	})

	// The CCM goes away: the speaker keeps announcing.
	cancel()
	m.Wait()
	waitFor(t, "the speaker's stream ended", 5*time.Second, func() bool { return sp2.agent.Streams() == 0 })
	if got := sp2.agent.Addresses(); len(got) != 2 {
		t.Errorf("speaker announces %v after the CCM left, want its 2 VIPs kept", got)
	}
}

func TestSilentSpeakerDetectedByHeartbeat(t *testing.T) {
	e := newEnv(t)
	sp := e.startSpeaker("node-b")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hb, misses := 40*time.Millisecond, 5
	m := e.manager(ctx, hb, misses)
	m.SetNode("node-b", nodeAddr("node-b"))
	waitFor(t, "connected", 5*time.Second, func() bool { st, _ := m.State("node-b"); return st.Connected })
	before := e.changes.Load()

	sp.proxy.freeze(true)
	frozen := time.Now()
	waitFor(t, "silence detected", 5*time.Second, func() bool { st, _ := m.State("node-b"); return !st.Connected })
	took := time.Since(frozen)
	limit := hb * time.Duration(misses)
	if took < limit-hb {
		t.Errorf("declared lost after %s, before the %s allowed", took, limit)
	}
	t.Logf("silent speaker detected after %s (limit %s)", took, limit)
	if e.changes.Load() == before {
		t.Error("OnChange not called")
	}
	st, _ := m.State("node-b")
	if st.Problem == "" {
		t.Error("no problem recorded")
	}

	// Back: the manager reconnects by itself.
	sp.proxy.freeze(false)
	waitFor(t, "reconnected", 10*time.Second, func() bool { st, _ := m.State("node-b"); return st.Connected })
	_ = sp
}

func TestUnknownNodeAndRemoval(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := e.manager(ctx, 50*time.Millisecond, 3)
	m.Assign("ghost", ann("192.0.2.9")) // no session: ignored
	m.Unassign("ghost", "192.0.2.9")    // no session: ignored, does not block
	sp := e.startSpeaker("node-c")
	m.SetNode("node-c", nodeAddr("node-c"))
	m.Assign("node-c", ann("192.0.2.10"))
	waitFor(t, "announced", 5*time.Second, func() bool { return len(sp.agent.Addresses()) == 1 })
	m.RemoveNode("node-c")
	if _, ok := m.State("node-c"); ok {
		t.Error("state still known after RemoveNode")
	}
	if got := m.Nodes(); len(got) != 0 {
		t.Errorf("Nodes() = %v after removal", got)
	}
	// The speaker of the deleted node was told to withdraw before its
	// stream closed: a speaker whose stream just ends keeps announcing.
	waitFor(t, "stream closed", 5*time.Second, func() bool { return sp.agent.Streams() == 0 })
	if got := sp.agent.Addresses(); len(got) != 0 {
		t.Errorf("the deleted node's speaker still announces %v after its stream closed", got)
	}
}

// TestTermsFenceTheOldLeader: two leaders reach one speaker; it follows
// the one with the higher term, and the other learns it was refused.
func TestTermsFenceTheOldLeader(t *testing.T) {
	e := newEnv(t)
	sp := e.startSpeaker("node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := e.managerWith(ctx, Options{Heartbeat: 50 * time.Millisecond, Misses: 5, Leader: "ccm-old", Term: 100})
	old.SetReady()
	old.SetNode("node-a", nodeAddr("node-a"))
	old.Assign("node-a", ann("192.0.2.21"))
	waitFor(t, "old leader's VIP announced", 5*time.Second, func() bool { return slices.Equal(sp.agent.Addresses(), addrs("192.0.2.21")) })
	st, _ := old.State("node-a")
	if !st.Has(speakerv1.CapabilityFencing) || !st.Has(speakerv1.CapabilityLayer2) || st.Version == "" {
		t.Errorf("speaker state = version %q capabilities %v; want its version and both capabilities", st.Version, st.Capabilities)
	}

	cur := e.managerWith(ctx, Options{Heartbeat: 50 * time.Millisecond, Misses: 5, Leader: "ccm-new", Term: 200})
	cur.SetReady()
	cur.SetNode("node-a", nodeAddr("node-a"))
	cur.Assign("node-a", ann("192.0.2.22"))
	waitFor(t, "new leader's VIP announced", 5*time.Second, func() bool { return slices.Equal(sp.agent.Addresses(), addrs("192.0.2.22")) })
	waitFor(t, "old leader fenced", 5*time.Second, func() bool { st, _ := old.State("node-a"); return st.Fenced && !st.Connected })
	st, _ = old.State("node-a")
	if !strings.Contains(st.Problem, "refused this CCM") {
		t.Errorf("old leader's problem = %q, want it to say the speaker refused it", st.Problem)
	}
	// The old leader keeps trying (it has not noticed it lost the lease);
	// its changes never reach the speaker.
	old.Assign("node-a", ann("192.0.2.23"))
	before := instructionsCount(t, sp, "fenced")
	waitFor(t, "old leader refused again", 5*time.Second, func() bool { return instructionsCount(t, sp, "fenced") > before })
	if got := sp.agent.Addresses(); !slices.Equal(got, addrs("192.0.2.22")) {
		t.Errorf("speaker announces %v, want only the new leader's 192.0.2.22", got)
	}
}

// proxy forwards TCP to a target and can freeze: stop moving bytes both
// ways, like a node whose link went down.
type proxy struct {
	t      *testing.T
	lis    net.Listener
	mu     sync.Mutex
	target string
	frozen bool
	conns  []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, lis: lis, target: target}
	t.Cleanup(func() { lis.Close(); p.closeAll() })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.lis.Addr().String() }

func (p *proxy) setTarget(t string) {
	p.mu.Lock()
	p.target = t
	p.mu.Unlock()
}

func (p *proxy) freeze(on bool) {
	p.mu.Lock()
	p.frozen = on
	p.mu.Unlock()
	if !on {
		p.closeAll() // connections that went silent are dead for good
	}
}

func (p *proxy) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

func (p *proxy) isFrozen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.frozen
}

func (p *proxy) serve() {
	for {
		c, err := p.lis.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		target, frozen := p.target, p.frozen
		p.mu.Unlock()
		if frozen {
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, up)
		p.mu.Unlock()
		go p.pipe(c, up)
		go p.pipe(up, c)
	}
}

func (p *proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			dst.Close()
			return
		}
		for p.isFrozen() {
			time.Sleep(5 * time.Millisecond) // bytes held back, like a dead link
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			src.Close()
			return
		}
	}
}

// TestNothingSentBeforeReady: a new leader learns what each speaker
// announces and withdraws nothing before it has planned.
func TestNothingSentBeforeReady(t *testing.T) {
	e := newEnv(t)
	sp := e.startSpeaker("node-a")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	old := e.manager(ctx, 50*time.Millisecond, 5)
	old.SetNode("node-a", nodeAddr("node-a"))
	old.Assign("node-a", ann("192.0.2.7"))
	waitFor(t, "announced", 5*time.Second, func() bool { return len(sp.agent.Addresses()) == 1 })
	cancel()
	old.Wait()

	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	m := e.managerNotReady(ctx2, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "first report", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Reported })
	// The signal: the watchdog made passes spanning more than heartbeat ×
	// misses (250 ms; before ready, one pass per 250 ms); it must not
	// have declared the silent speaker lost.
	passes := watchdogPasses.Load()
	waitFor(t, "watchdog passes", 5*time.Second, func() bool { return watchdogPasses.Load() >= passes+3 })
	st, _ := m.State("node-a")
	if !st.Connected || !slices.Equal(st.Initial, addrs("192.0.2.7")) {
		t.Fatalf("state before ready = %+v, want connected with Initial [192.0.2.7]", st)
	}
	if got := sp.agent.Addresses(); len(got) != 1 {
		t.Fatalf("speaker announces %v before the new leader is ready; want its VIP kept", got)
	}
	m.Assign("node-a", ann("192.0.2.8"))
	m.SetReady()
	waitFor(t, "snapshot", 5*time.Second, func() bool { return slices.Equal(sp.agent.Addresses(), addrs("192.0.2.8")) })
}

// instructionsCount reads the speaker's counter of snapshots with the given
// result from the metrics registry.
func instructionsCount(t *testing.T, sp *testSpeaker, result string) float64 {
	t.Helper()
	speaker.RegisterMetrics(sp.agent)
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "ironlb_speaker_instructions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["kind"] == "snapshot" && labels["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}
