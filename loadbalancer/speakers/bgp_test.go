package speakers

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// fakeBGP stands for a speaker's gobgp side.
type fakeBGP struct {
	mu   sync.Mutex
	last bgp.Desired
}

func (f *fakeBGP) Apply(_ context.Context, d bgp.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.last = d
	return nil
}

func (f *fakeBGP) Sessions(context.Context) ([]bgp.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []bgp.Session
	for _, p := range f.last.Peers {
		out = append(out, bgp.Session{Peer: p.Address, State: "Established"})
	}
	return out, nil
}

func (f *fakeBGP) Stop(context.Context, bool) error { return nil }

func (f *fakeBGP) peers() []netip.Addr {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []netip.Addr
	for _, p := range f.last.Peers {
		out = append(out, p.Address)
	}
	return out
}

// TestBGPSetup: a node's BGP set-up goes out in the snapshot and, when it
// changes, in an update to that speaker only; the speaker's sessions come
// back in State.
func TestBGPSetup(t *testing.T) {
	e := newEnv(t)
	fb := &fakeBGP{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	creds := e.credentials("node-a", "node-a")
	agent := speaker.NewAgent("node-a", "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) {
		return &fakeAnnouncer{addrs: map[netip.Addr]bool{}}, nil
	}, logr.Discard(), speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithBGP(fb), speaker.WithCredentials(creds))
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(creds.ServerTLSConfig())))
	speakerv1.RegisterSpeakerServer(srv, agent)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go agent.Run(ctx)
	e.speakers["node-a"] = &testSpeaker{agent: agent, srv: srv, proxy: newProxy(t, lis.Addr().String())}
	m := e.manager(ctx, 50*time.Millisecond, 5)

	cfg := &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{
		{Name: "tor-a", Address: "192.0.2.1", PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9},
	}}
	m.SetNode("node-a", nodeAddr("node-a"))
	m.SetBGP("node-a", cfg)
	waitFor(t, "the snapshot's set-up applied", 5*time.Second, func() bool {
		p := fb.peers()
		return len(p) == 1 && p[0] == netip.MustParseAddr("192.0.2.1")
	})
	waitFor(t, "the session reported", 5*time.Second, func() bool {
		st, _ := m.State("node-a")
		return len(st.BGPSessions) == 1 && st.BGPSessions[0].GetState() == "Established" && st.Has(speakerv1.CapabilityBGP)
	})
	st, _ := m.State("node-a")
	sent := st.Sent

	// The same set-up again sends nothing.
	m.SetBGP("node-a", &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{
		{Name: "tor-a", Address: "192.0.2.1", PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9},
	}})
	// A second peer: an update.
	cfg2 := &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: append(cfg.Peers, &speakerv1.BGPPeer{
		Name: "tor-b", Address: "192.0.2.2", PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9,
	})}
	m.SetBGP("node-a", cfg2)
	waitFor(t, "the update applied", 5*time.Second, func() bool { return len(fb.peers()) == 2 })
	st, _ = m.State("node-a")
	if st.Sent != sent+1 {
		t.Errorf("sent %d instructions after version %d, want exactly one update", st.Sent, sent)
	}
	// No set-up: every session closes.
	m.SetBGP("node-a", nil)
	waitFor(t, "sessions closed", 5*time.Second, func() bool { return len(fb.peers()) == 0 })
}
