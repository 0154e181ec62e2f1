package bfd

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const waitLimit = 10 * time.Second

// host is a Server on a fakeNet, with its state changes on a channel.
type host struct {
	*Server
	addr    netip.Addr
	changes chan Status
}

func newHost(t *testing.T, sw *fakeSwitch, addr string) *host {
	t.Helper()
	h := &host{addr: netip.MustParseAddr(addr), changes: make(chan Status, 1000)}
	h.Server = NewServer(WithNet(&fakeNet{sw: sw, addr: h.addr}), WithOnChange(func(st Status) {
		select {
		case h.changes <- st:
		default:
			t.Errorf("%s: change channel full", addr)
		}
	}))
	t.Cleanup(func() { h.Close() })
	return h
}

// waitState waits for a change of h's session to state st and returns it.
func (h *host) waitState(t *testing.T, st State) Status {
	t.Helper()
	deadline := time.After(waitLimit)
	for {
		select {
		case got := <-h.changes:
			if got.State == st {
				return got
			}
		case <-deadline:
			t.Fatalf("%s: no change to %s within %v; sessions: %+v", h.addr, st, waitLimit, h.Sessions())
		}
	}
}

// waitFor polls h's only session until ok, with a deadline.
func (h *host) waitFor(t *testing.T, what string, ok func(Status) bool) Status {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for {
		ss := h.Sessions()
		if len(ss) == 1 && ok(ss[0]) {
			return ss[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s did not happen within %v; sessions: %+v", h.addr, what, waitLimit, ss)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func peerConfig(peer *host, iv time.Duration) Config {
	return Config{Peer: peer.addr, DesiredMinTx: iv, RequiredMinRx: iv, DetectMultiplier: 3}
}

// upPair returns two hosts whose sessions with each other are Up.
func upPair(t *testing.T, iv time.Duration) (a, b *host) {
	t.Helper()
	sw := newFakeSwitch()
	a, b = newHost(t, sw, "10.0.0.1"), newHost(t, sw, "10.0.0.2")
	ctx := context.Background()
	if err := a.Configure(ctx, []Config{peerConfig(b, iv)}); err != nil {
		t.Fatal(err)
	}
	if err := b.Configure(ctx, []Config{peerConfig(a, iv)}); err != nil {
		t.Fatal(err)
	}
	for _, h := range []*host{a, b} {
		st := h.waitState(t, Up)
		if st.Reason != "" || st.RemoteDiscr == 0 || st.LocalDiscr == 0 {
			t.Errorf("%s Up: %+v", h.addr, st)
		}
	}
	return a, b
}

func TestServersUpRenegotiateShutdown(t *testing.T) {
	// Timers long enough that a loaded machine (CI, two cores) does not
	// expire a detection time and flap the session.
	a, b := upPair(t, 200*time.Millisecond)
	// Both sides converge on fast timers once the Poll Sequences end.
	st := a.waitFor(t, "fast timers", func(st Status) bool {
		return st.TxInterval == 200*time.Millisecond && st.DetectTime == 600*time.Millisecond && st.RemoteState == Up
	})
	if st.LocalAddr != a.addr || st.RemoteMultiplier != 3 || st.RemoteControlPlaneIndependent {
		t.Errorf("a: %+v", st)
	}

	// a slows down: b detects with a's new interval, a sends at it, nobody goes down.
	cfg := peerConfig(b, 400*time.Millisecond)
	cfg.DetectMultiplier = 4
	if err := a.Configure(context.Background(), []Config{cfg}); err != nil {
		t.Fatal(err)
	}
	a.waitFor(t, "renegotiated tx", func(st Status) bool { return st.TxInterval == 400*time.Millisecond })
	b.waitFor(t, "renegotiated detection", func(st Status) bool {
		return st.DetectTime == 1600*time.Millisecond && st.RemoteMinRx == 400*time.Millisecond && st.TxInterval == 400*time.Millisecond
	})
	for _, h := range []*host{a, b} {
		st := h.Sessions()[0]
		if st.State != Up || st.Flaps != 0 {
			t.Errorf("%s after renegotiation: state %s flaps %d", h.addr, st.State, st.Flaps)
		}
		select {
		case c := <-h.changes:
			t.Errorf("%s: state change during renegotiation: %+v", h.addr, c)
		default:
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if st := a.waitState(t, AdminDown); st.LocalDiag != DiagAdminDown {
		t.Errorf("a: AdminDown with diag %q", st.LocalDiag)
	}
	st = b.waitState(t, Down)
	if st.RemoteState != AdminDown || st.LocalDiag != DiagNeighborDown || st.RemoteDiag != DiagAdminDown ||
		st.Reason != reasonPeerAdmin || st.Flaps != 1 {
		t.Errorf("b after a's Shutdown: %+v", st)
	}
	if err := a.Configure(context.Background(), nil); err == nil {
		t.Error("Configure after Shutdown succeeded")
	}
}

func TestServerCloseIsSilent(t *testing.T) {
	a, b := upPair(t, 20*time.Millisecond)
	a.Close()
	a.Close() // idempotent
	st := b.waitState(t, Down)
	if st.LocalDiag != DiagDetectionExpired || st.Flaps != 1 || !strings.HasPrefix(st.Reason, "detection time expired after") {
		t.Errorf("b after a's Close: %+v", st)
	}
	select {
	case c := <-a.changes:
		t.Errorf("a changed state on Close: %+v", c)
	default:
	}
}

func TestConfigureRemoveSendsAdminDown(t *testing.T) {
	a, b := upPair(t, 20*time.Millisecond)
	if err := a.Configure(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if len(a.Sessions()) != 0 {
		t.Errorf("a still has sessions: %+v", a.Sessions())
	}
	st := b.waitState(t, Down)
	if st.RemoteState != AdminDown || st.Reason != reasonPeerAdmin {
		t.Errorf("b after removal: %+v", st)
	}
	// Re-adding brings it back up with a new discriminator.
	if err := a.Configure(context.Background(), []Config{peerConfig(b, 20*time.Millisecond)}); err != nil {
		t.Fatal(err)
	}
	b.waitState(t, Up)
	a.waitState(t, Up)
}

func TestConfigureValidation(t *testing.T) {
	sw := newFakeSwitch()
	a := newHost(t, sw, "10.0.0.1")
	good := Config{Peer: netip.MustParseAddr("10.0.0.9"), DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMultiplier: 3}
	good6 := Config{Peer: netip.MustParseAddr("2001:db8::9"), Multihop: true, DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMultiplier: 3}
	bad := func(peer string, f func(*Config)) Config {
		c := good
		c.Peer = netip.MustParseAddr(peer)
		f(&c)
		return c
	}
	cfgs := []Config{
		good, good6,
		bad("10.0.0.10", func(c *Config) { c.DetectMultiplier = 0 }),
		bad("10.0.0.11", func(c *Config) { c.DesiredMinTx = 9 * time.Millisecond }),
		bad("10.0.0.12", func(c *Config) { c.RequiredMinRx = 1 << 32 * time.Microsecond }),
		bad("10.0.0.13", func(c *Config) { c.Local = netip.MustParseAddr("2001:db8::1") }),
		{DesiredMinTx: time.Second, RequiredMinRx: time.Second, DetectMultiplier: 3},
		good,
	}
	err := a.Configure(context.Background(), cfgs)
	if err == nil {
		t.Fatal("no error for invalid configs")
	}
	for _, want := range []string{"10.0.0.10: detect multiplier", "10.0.0.11: desired min tx", "10.0.0.12: required min rx",
		"10.0.0.13: local address", "invalid IP: invalid peer", "10.0.0.9: configured twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	ss := a.Sessions()
	if len(ss) != 2 || ss[0].Peer != good.Peer || ss[1].Peer != good6.Peer {
		t.Fatalf("sessions %+v, want the two valid ones", ss)
	}
	if ss[0].State != Down || ss[0].Reason != reasonNoPacket || ss[0].LocalAddr != a.addr {
		t.Errorf("new session %+v", ss[0])
	}
	// A session whose new config is invalid is kept as it was.
	bad9 := good
	bad9.DetectMultiplier = 0
	if err := a.Configure(context.Background(), []Config{bad9}); err == nil {
		t.Error("no error")
	}
	if ss := a.Sessions(); len(ss) != 1 || ss[0].Peer != good.Peer || ss[0].DetectMultiplier != 3 {
		t.Errorf("sessions %+v, want 10.0.0.9 kept", ss)
	}
}
