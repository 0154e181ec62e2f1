package speakers

import (
	"context"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/test/slowclient"
)

// plannerGrace is the planner's DefaultGrace (the planner imports this
// package): how long a new leader waits for every speaker's first report
// before it takes those that did not report as lost and moves their VIPs.
const plannerGrace = 2 * time.Second

// countingSpeaker is a real speaker.Agent that counts its streams and the
// Attest instructions it gets; deaf, it answers no Attest with its token
// (the token still goes out in the first report of every stream).
type countingSpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent            *speaker.Agent
	deaf             bool
	streams, attests atomic.Int64
}

func (c *countingSpeaker) Sync(s speakerv1.Speaker_SyncServer) error {
	c.streams.Add(1)
	return c.agent.Sync(&countingStream{Speaker_SyncServer: s, c: c})
}

type countingStream struct {
	speakerv1.Speaker_SyncServer
	c    *countingSpeaker
	sent int
}

func (s *countingStream) Send(r *speakerv1.Report) error {
	s.sent++
	if s.c.deaf && s.sent > 1 && r.GetEnrollment() != nil {
		r = proto.CloneOf(r)
		r.Enrollment = nil
	}
	return s.Speaker_SyncServer.Send(r)
}

func (s *countingStream) Recv() (*speakerv1.Instruction, error) {
	in, err := s.Speaker_SyncServer.Recv()
	if in.GetAttest() != nil {
		s.c.attests.Add(1)
	}
	return in, err
}

// startCounted starts node's speaker with creds behind a countingSpeaker.
func (e *env) startCounted(node string, creds *pki.NodeCredentials, deaf bool) *countingSpeaker {
	e.t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.t.Fatal(err)
	}
	agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	c := &countingSpeaker{agent: agent, deaf: deaf}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	e.t.Cleanup(srv.Stop)
	e.mu.Lock()
	e.speakers[node] = &testSpeaker{agent: agent, srv: srv, proxy: newProxy(e.t, lis.Addr().String())}
	e.mu.Unlock()
	return c
}

// attested reports whether creds present a certificate that names their
// pod and Node.
func attested(creds *pki.NodeCredentials) bool {
	c := presented(creds)
	if c == nil {
		return false
	}
	_, ok := pki.AttestationOf(c)
	return ok
}

// TestLeaderHandoverKeepsSpeakers is issue 20, finding 4 (review, point
// 1): a new leader whose watches of the speaker pods and Nodes have not
// listed them yet (here: never, during the test) reaches every speaker
// holding a valid certificate within the planner's grace period, on one
// stream each: no speaker is lost (which would move its VIPs) and none
// enrolls again.
func TestLeaderHandoverKeepsSpeakers(t *testing.T) {
	e := newEnv(t)
	nodes := []string{"node-a", "node-b"}
	counted := map[string]*countingSpeaker{}
	creds := map[string]*pki.NodeCredentials{}
	oldCtx, oldLeader := context.WithCancel(context.Background())
	defer oldLeader()
	m := e.manager(oldCtx, 50*time.Millisecond, 5)
	for _, n := range nodes {
		creds[n] = e.credentials(n, n)
		counted[n] = e.startCounted(n, creds[n], false)
		m.SetNode(n, nodeAddr(n))
	}
	for _, n := range nodes {
		waitFor(t, n+" connected to the first leader", 10*time.Second, func() bool { st, _ := m.State(n); return st.Connected && attested(creds[n]) })
	}
	oldLeader()

	release := make(chan struct{})
	defer close(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, err := pki.Bootstrap(ctx, slowclient.Pods(e.cs, release), "kube-system")
	if err != nil {
		t.Fatal(err)
	}
	e.bundle = next
	before := map[string]int64{}
	for _, n := range nodes {
		before[n] = counted[n].streams.Load()
	}
	start := time.Now()
	m2 := e.manager(ctx, 50*time.Millisecond, 5)
	for _, n := range nodes {
		m2.SetNode(n, nodeAddr(n))
	}
	for _, n := range nodes {
		var st State
		waitFor(t, n+" reported to the new leader", 15*time.Second, func() bool { st, _ = m2.State(n); return st.Connected })
		if took := time.Since(start); took > plannerGrace {
			t.Errorf("%s reported %s after the new leader started, after its grace period (%s): it counts as lost and its VIPs move", n, took.Round(time.Millisecond), plannerGrace)
		}
	}
	for _, n := range nodes {
		if got := counted[n].streams.Load() - before[n]; got != 1 {
			t.Errorf("%s: %d streams to the new leader, want 1", n, got)
		}
	}
}

// TestUpgradeKeepsStreams is issue 20, finding 4 (review, point 1): after
// the upgrade that brought attestations, speakers hold certificates from
// the trusted CA that name no pod. Each keeps its first stream (no
// reconnect: it is never taken as lost) and gets an attested certificate
// on it, renewed with the token of its first report.
func TestUpgradeKeepsStreams(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	creds := e.credentials("node-a", "node-a")
	self := presented(creds)
	certPEM, err := e.bundle.CA().IssueFor(pki.NodeIdentity("node-a"), self.PublicKey, pki.NodeCertLifetime, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := creds.Install(certPEM, e.bundle.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	if ok, _ := creds.Enrolled(); !ok || attested(creds) {
		t.Fatal("the speaker does not hold an old certificate")
	}
	c := e.startCounted("node-a", creds, false)
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "node-a connected with an attested certificate", 10*time.Second, func() bool {
		st, _ := m.State("node-a")
		return st.Connected && attested(creds)
	})
	if n := c.streams.Load(); n != 1 {
		t.Errorf("%d streams, want 1: the upgraded speaker reconnected", n)
	}
	if st, _ := m.State("node-a"); !st.Connected {
		t.Errorf("node-a not connected: %s", st.Problem)
	}
}

// TestUnansweredAttestRetriedAndExpiryReconnects is issue 20, finding 4
// (review, point 2): a speaker that does not answer the CCM's Attest is
// asked again every renewRetry while its certificate is valid (not after
// 12 h, past its expiry); once the certificate expires its stream is
// closed and the speaker enrolls again with its first report's token,
// without ever being taken as lost.
func TestUnansweredAttestRetriedAndExpiryReconnects(t *testing.T) {
	was := renewRetry
	renewRetry = 100 * time.Millisecond
	t.Cleanup(func() { renewRetry = was })
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := pki.Bootstrap(ctx, e.cs, "kube-system", pki.WithNodeLifetime(4*time.Second)) // due at once, expires in 4 s
	if err != nil {
		t.Fatal(err)
	}
	e.bundle = b
	creds := e.credentials("node-a", "node-a")
	c := e.startCounted("node-a", creds, true)
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "node-a connected", 10*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })
	first := presented(creds)
	waitFor(t, "three Attests on the stream", 3*time.Second, func() bool { return c.attests.Load() >= 3 })

	// Connected all along, through the expiry and the enrollment after.
	deadline := time.Now().Add(8 * time.Second)
	for !attested(creds) || !presented(creds).NotAfter.After(first.NotAfter) {
		st, _ := m.State("node-a")
		if !st.Connected {
			t.Fatalf("the speaker was taken as lost when its certificate expired: %s", st.Problem)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the speaker did not enroll again after its certificate expired at %s", first.NotAfter)
		}
		time.Sleep(5 * time.Millisecond)
	}
	// The session stays Connected through the reconnect after the
	// enrollment, so wait for the third stream itself: the first, the
	// enrollment's and the one with the new certificate.
	waitFor(t, "node-a's stream with its new certificate", 5*time.Second, func() bool { return c.streams.Load() >= 3 })
	waitFor(t, "node-a connected with its new certificate", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })
}
