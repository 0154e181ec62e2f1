package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/speaker/bfd"
)

// fakeBFD records what a Speaker asks of its BFD side, in its own list
// and (when log is set) in the router's calls, to check the order.
type fakeBFD struct {
	configured [][]bfd.Config
	closed     bool
	sessions   []bfd.Status
	log        *fakeRouter
}

func (f *fakeBFD) Configure(_ context.Context, c []bfd.Config) error {
	f.configured = append(f.configured, c)
	if f.log != nil {
		f.log.calls = append(f.log.calls, fmt.Sprintf("bfd %v", f.peersOf(c)))
	}
	return nil
}
func (f *fakeBFD) Sessions() []bfd.Status { return f.sessions }
func (f *fakeBFD) Close() error           { f.closed = true; return nil }
func (f *fakeBFD) last() []bfd.Config     { return f.configured[len(f.configured)-1] }
func (f *fakeBFD) peersOf(c []bfd.Config) []netip.Addr {
	var out []netip.Addr
	for _, x := range c {
		out = append(out, x.Peer)
	}
	return out
}

var addrCmp = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })

var fastBFD = BFDTimers{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 50 * time.Millisecond, Multiplier: 3}

// TestSpeakerBFDConfigs: a BFD session for each peer with BFD timers:
// single hop from the session's source address, or multihop with as many
// hops as the BGP TTL.
func TestSpeakerBFDConfigs(t *testing.T) {
	r, b := &fakeRouter{}, &fakeBFD{}
	s := NewSpeakerWith(logr.Discard(), r, b)
	d := desired(nil, peerA, peerB)
	d.Peers[0].BFD = fastBFD
	d.Peers[0].SourceAddress = rid
	d.Peers = append(d.Peers, Peer{Address: netip.MustParseAddr("203.0.113.1"), PeerASN: 64512, MyASN: 64513, EBGPMultihop: 3, BFD: fastBFD})
	if err := s.Apply(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	want := []bfd.Config{
		{Peer: peerA, Local: rid, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMultiplier: 3},
		{Peer: netip.MustParseAddr("203.0.113.1"), Multihop: true, MaxHops: 3, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMultiplier: 3},
	}
	if diff := cmp.Diff(want, b.last(), addrCmp); diff != "" {
		t.Errorf("BFD sessions (-want +got):\n%s", diff)
	}
}

// TestSpeakerResetsOnBFDDown: the BGP session is reset when BFD goes from
// Up to Down because the peer was lost, and only then: not when it never
// came up (a router without BFD), and not when the router turned BFD off
// (AdminDown, RFC 5882 §3.2).
func TestSpeakerResetsOnBFDDown(t *testing.T) {
	r, b := &fakeRouter{}, &fakeBFD{}
	s := NewSpeakerWith(logr.Discard(), r, b)
	st := func(state, remote bfd.State) bfd.Status {
		return bfd.Status{Config: bfd.Config{Peer: peerA}, State: state, RemoteState: remote, Reason: "detection time expired"}
	}
	steps := []struct {
		name string
		st   bfd.Status
		want []string
	}{
		{"never up, stays down: no reset", st(bfd.Down, bfd.Down), nil},
		{"init", st(bfd.Init, bfd.Down), nil},
		{"up", st(bfd.Up, bfd.Up), nil},
		{"router turns BFD off", st(bfd.Down, bfd.AdminDown), nil},
		{"up again", st(bfd.Up, bfd.Up), nil},
		{"lost", st(bfd.Down, bfd.Up), []string{"reset peer 192.0.2.1: BFD session down: detection time expired"}},
		{"still down", st(bfd.Down, bfd.Down), nil},
	}
	for _, step := range steps {
		s.BFDChanged(step.st)
		if diff := cmp.Diff(step.want, r.take()); diff != "" {
			t.Errorf("%s: calls (-want +got):\n%s", step.name, diff)
		}
	}
}

// TestSpeakerPlannedStop: peers without graceful restart are sent the
// withdrawals (the Speaker waits until the session has written them), then
// their BFD sessions end and their BGP sessions close; peers with graceful
// restart keep the routes (nothing is withdrawn from them) and their BFD
// sessions. The exports are those of the full table, also when the last
// Apply was a patch (Desired.Changed).
func TestSpeakerPlannedStop(t *testing.T) {
	ctx := context.Background()
	r := &fakeRouter{}
	b := &fakeBFD{log: r}
	s := NewSpeakerWith(logr.Discard(), r, b)
	d := desired(map[Export]Attributes{{peerA, vip1}: {}, {peerB, vip1}: {}}, peerA, peerB)
	d.Peers[0].BFD, d.Peers[1].BFD = fastBFD, fastBFD
	d.Peers[1].RestartTime = 2 * time.Minute
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	d.Exports, d.Changed = map[Export]Attributes{{peerB, vip2}: {}}, []netip.Prefix{vip2}
	if err := s.Apply(ctx, d); err != nil {
		t.Fatal(err)
	}
	r.take()
	// peerA's session writes its withdrawal a few polls after the refresh.
	sent, polls := uint64(7), 0
	r.sessions = func() []Session {
		if slices.Contains(r.calls, "refresh 192.0.2.1") {
			if polls++; polls == 3 {
				sent++
				r.calls = append(r.calls, "withdrawal written to 192.0.2.1")
			}
		}
		return []Session{{Peer: peerA, State: "Established", UpdatesSent: sent}, {Peer: peerB, State: "Established", UpdatesSent: 3}}
	}
	if err := s.Stop(ctx, true); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"unexport 198.51.100.1/32 from 192.0.2.1", "refresh 192.0.2.1", "withdrawal written to 192.0.2.1",
		"bfd [192.0.2.2]", "stop graceful=true",
	}
	if diff := cmp.Diff(want, r.take()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if b.closed {
		t.Error("the BFD sessions of the graceful-restart peer were closed; they must run until the process exits")
	}
	// BFD going down after the Stop resets nothing.
	s.BFDChanged(bfd.Status{Config: bfd.Config{Peer: peerB}, State: bfd.Up})
	s.BFDChanged(bfd.Status{Config: bfd.Config{Peer: peerB}, State: bfd.Down})
	if c := r.take(); len(c) != 0 {
		t.Errorf("calls after the Stop: %v", c)
	}
}
