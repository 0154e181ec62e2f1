package bfd

import (
	"context"
	"net/netip"
	"testing"
	"time"
)

// TestHandleChecks feeds packets straight to a Server's reception path and
// checks the TTL rules, the A bit and session selection.
func TestHandleChecks(t *testing.T) {
	sw := newFakeSwitch()
	s := NewServer(WithNet(&fakeNet{sw: sw, addr: netip.MustParseAddr("2001:db8::1")}))
	defer s.Close()
	peer := netip.MustParseAddr("2001:db8::2")
	multi := netip.MustParseAddr("2001:db8:1::2")
	cfgs := []Config{
		{Peer: peer, DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMultiplier: 3},
		{Peer: multi, Multihop: true, MaxHops: 2, DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMultiplier: 3},
	}
	if err := s.Configure(context.Background(), cfgs); err != nil {
		t.Fatal(err)
	}
	state := func(p netip.Addr) Status {
		for _, st := range s.Sessions() {
			if st.Peer == p {
				return st
			}
		}
		t.Fatalf("no session with %s", p)
		return Status{}
	}
	local := netip.MustParseAddr("2001:db8::1")
	pkt := func(mod func(*packet)) []byte {
		p := &packet{State: Down, DetectMult: 3, MyDiscr: 77, DesiredMinTx: time.Second, RequiredMinRx: time.Second}
		if mod != nil {
			mod(p)
		}
		return appendPacket(nil, p)
	}
	meta := func(src netip.Addr, ttl int) Meta {
		return Meta{Src: netip.AddrPortFrom(src, 50000), Dst: local, TTL: ttl}
	}
	now := time.Now()

	s.handle(pkt(nil), meta(peer, 254), false, now)
	s.handle(pkt(nil), meta(multi, 253), true, now)
	auth := append(pkt(nil), 1, 2) // simple password section header
	auth[1] |= bitAuth
	auth[3] = 26
	s.handle(auth, meta(peer, 255), false, now)
	s.handle(pkt(nil), meta(netip.MustParseAddr("2001:db8::3"), 255), false, now)
	s.handle(pkt(nil), meta(peer, 255), true, now) // single-hop peer on the multihop port
	bad := pkt(nil)
	bad[0] = 2 << 5 // version 2
	s.handle(bad, meta(peer, 255), false, now)
	s.handle(appendPacket(nil, &packet{State: Up, DetectMult: 3, MyDiscr: 77, YourDiscr: state(peer).LocalDiscr}),
		meta(multi, 255), false, now) // right discriminator, wrong source
	if a, b := state(peer), state(multi); a.RemoteDiscr != 0 || b.RemoteDiscr != 0 {
		t.Fatalf("a discarded packet was accepted: %+v %+v", a, b)
	}
	if got := [4]uint64{s.dropTTL.Load(), s.dropAuth.Load(), s.dropUnknown.Load(), s.dropInvalid.Load()}; got != [4]uint64{2, 1, 3, 1} {
		t.Errorf("drops ttl/auth/unknown/invalid = %v, want [2 1 3 1]", got)
	}

	// Accepted: single hop with TTL 255, multihop with TTL 254 (MaxHops 2).
	s.handle(pkt(nil), meta(peer, 255), false, now)
	s.handle(pkt(nil), meta(multi, 254), true, now)
	for _, p := range []netip.Addr{peer, multi} {
		if st := state(p); st.State != Init || st.RemoteDiscr != 77 {
			t.Errorf("%s: state %s remote discriminator %d, want Init 77", p, st.State, st.RemoteDiscr)
		}
	}
	// Selected by Your Discriminator from now on.
	s.handle(pkt(func(p *packet) { p.State = Up; p.YourDiscr = state(peer).LocalDiscr }), meta(peer, 255), false, now)
	if st := state(peer); st.State != Up {
		t.Errorf("state %s after Up, want Up", st.State)
	}
}
