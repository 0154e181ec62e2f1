package speakers

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/speaker"
)

// legacySpeaker is a speaker of the version before "reattest" and
// "trust-bundle": the agent's reports lose those capabilities, and the
// instructions it gets are counted.
type legacySpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent                      *speaker.Agent
	certs, bundleOnly, attests atomic.Int64
}

func (l *legacySpeaker) Sync(s speakerv1.Speaker_SyncServer) error {
	return l.agent.Sync(&legacyStream{Speaker_SyncServer: s, l: l})
}

type legacyStream struct {
	speakerv1.Speaker_SyncServer
	l *legacySpeaker
}

func (s *legacyStream) Send(r *speakerv1.Report) error {
	r = proto.CloneOf(r)
	r.Capabilities = slices.DeleteFunc(r.Capabilities, func(c string) bool {
		return c == speakerv1.CapabilityReattest || c == speakerv1.CapabilityTrustBundle
	})
	return s.Speaker_SyncServer.Send(r)
}

func (s *legacyStream) Recv() (*speakerv1.Instruction, error) {
	in, err := s.Speaker_SyncServer.Recv()
	switch {
	case in.GetCertificate() != nil && len(in.GetCertificate().GetCertificatePem()) == 0:
		s.l.bundleOnly.Add(1)
	case in.GetCertificate() != nil:
		s.l.certs.Add(1)
	case in.GetAttest() != nil:
		s.l.attests.Add(1)
	}
	return in, err
}

// TestLegacySpeakerRenewal: a speaker without the "reattest" and
// "trust-bundle" capabilities is sent neither Attest nor a bundle alone;
// its certificate is renewed with the token of its stream's first report
// (fresh: the stream just opened), on the open stream, at enrollment's
// two-thirds mark and when the CA rotates.
func TestLegacySpeakerRenewal(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	b, err := pki.Bootstrap(ctx, e.cs, "kube-system", pki.WithNodeLifetime(2*time.Minute)) // due at once
	if err != nil {
		t.Fatal(err)
	}
	e.bundle = b
	creds := e.credentials("node-a", "node-a")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agent := speaker.NewAgent("node-a", "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	legacy := &legacySpeaker{agent: agent}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, legacy)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	e.speakers["node-a"] = &testSpeaker{agent: agent, srv: srv, proxy: newProxy(t, lis.Addr().String())}

	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	// The enrollment's certificate, then the renewal on the next stream.
	waitFor(t, "enrolled and renewed", 10*time.Second, func() bool { return legacy.certs.Load() >= 2 })

	secrets := e.cs.CoreV1().Secrets("kube-system")
	cur, err := secrets.Get(ctx, pki.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	prev := cur.DeepCopy()
	prev.Name, prev.ResourceVersion, prev.UID = pki.PreviousCASecretName, "", ""
	if _, err := secrets.Create(ctx, prev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, pki.CASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "renewed from the new CA", 10*time.Second, func() bool { return presentedBy(creds, b.CA()) })
	if n := legacy.attests.Load(); n != 0 {
		t.Errorf("a legacy speaker was sent %d Attest instructions", n)
	}
	if n := legacy.bundleOnly.Load(); n != 0 {
		t.Errorf("a legacy speaker was sent %d bundles without a certificate", n)
	}
	if st, _ := m.State("node-a"); !st.Connected {
		t.Errorf("the legacy speaker is not connected: %s", st.Problem)
	}
}

// chattySpeaker offers its token in every report, asked or not.
type chattySpeaker struct {
	speakerv1.UnimplementedSpeakerServer
	agent *speaker.Agent
	token string
	sent  atomic.Int64
}

func (c *chattySpeaker) Sync(s speakerv1.Speaker_SyncServer) error {
	return c.agent.Sync(&chattyStream{Speaker_SyncServer: s, c: c})
}

type chattyStream struct {
	speakerv1.Speaker_SyncServer
	c *chattySpeaker
}

func (s *chattyStream) Send(r *speakerv1.Report) error {
	r = proto.CloneOf(r)
	r.Enrollment = &speakerv1.Enrollment{Token: s.c.token}
	s.c.sent.Add(1)
	return s.Speaker_SyncServer.Send(r)
}

// TestUnaskedTokensIgnored: a speaker that sends its token in every
// report does not make the CCM call the API server: only the enrollment
// (and a renewal, when due, in answer to the CCM's Attest) is reviewed.
func TestUnaskedTokensIgnored(t *testing.T) {
	e := newEnv(t)
	var reviews atomic.Int64
	e.cs.PrependReactor("create", "tokenreviews", func(k8stesting.Action) (bool, runtime.Object, error) {
		reviews.Add(1)
		return false, nil, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	creds := e.credentials("node-a", "node-a")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	agent := speaker.NewAgent("node-a", "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	chatty := &chattySpeaker{agent: agent, token: fakeTokenPrefix + "node-a"}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, chatty)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	e.speakers["node-a"] = &testSpeaker{agent: agent, srv: srv, proxy: newProxy(t, lis.Addr().String())}

	m := e.manager(ctx, 10*time.Millisecond, 50)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "node-a connected", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })
	start := chatty.sent.Load()
	waitFor(t, "200 reports with a token", 10*time.Second, func() bool { return chatty.sent.Load()-start >= 200 })
	if n := reviews.Load(); n != 1 {
		t.Errorf("%d TokenReviews, want 1 (the enrollment)", n)
	}
}
