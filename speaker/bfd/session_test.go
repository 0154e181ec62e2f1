package bfd

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func testConfig() Config {
	return Config{Peer: netip.MustParseAddr("192.0.2.1"), DesiredMinTx: 100 * time.Millisecond,
		RequiredMinRx: 100 * time.Millisecond, DetectMultiplier: 3}
}

// newTestSession returns a session in state st whose remote (discriminator
// 99, 3 × 100ms) is known unless st is Down.
func newTestSession(t *testing.T, st State) *session {
	t.Helper()
	s := newSession(testConfig(), 42, t0, func() float64 { return 0.5 })
	if st == Down {
		return s
	}
	if st == AdminDown {
		s.adminDown(t0)
		return s
	}
	s.receive(remote(Down), t0)
	if st == Up {
		s.receive(remote(Up), t0)
		s.receive(&packet{State: Up, Final: true, DetectMult: 3, MyDiscr: 99, YourDiscr: 42,
			DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}, t0)
		s.finalPending = false
	}
	if s.state != st {
		t.Fatalf("setting up: state %s, want %s", s.state, st)
	}
	return s
}

// remote is a packet from the remote in state st.
func remote(st State) *packet {
	return &packet{State: st, DetectMult: 3, MyDiscr: 99, YourDiscr: 42,
		DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond}
}

func TestReceiveStateTable(t *testing.T) {
	for _, tc := range []struct {
		local, received, want State
		diag                  Diag
	}{
		{Down, AdminDown, Down, DiagNone},
		{Down, Down, Init, DiagNone},
		{Down, Init, Up, DiagNone},
		{Down, Up, Down, DiagNone},
		{Init, AdminDown, Down, DiagNeighborDown},
		{Init, Down, Init, DiagNone},
		{Init, Init, Up, DiagNone},
		{Init, Up, Up, DiagNone},
		{Up, AdminDown, Down, DiagNeighborDown},
		{Up, Down, Down, DiagNeighborDown},
		{Up, Init, Up, DiagNone},
		{Up, Up, Up, DiagNone},
		{AdminDown, Down, AdminDown, DiagAdminDown},
		{AdminDown, Up, AdminDown, DiagAdminDown},
	} {
		t.Run(tc.local.String()+"+"+tc.received.String(), func(t *testing.T) {
			s := newTestSession(t, tc.local)
			flaps := s.flaps
			changed := s.receive(remote(tc.received), t0.Add(time.Millisecond))
			if s.state != tc.want || s.localDiag != tc.diag {
				t.Errorf("state %s diag %q, want %s %q", s.state, s.localDiag, tc.want, tc.diag)
			}
			if changed != (tc.local != tc.want) {
				t.Errorf("changed = %v", changed)
			}
			wantFlaps := flaps
			if tc.local == Up && tc.want != Up {
				wantFlaps++
			}
			if s.flaps != wantFlaps {
				t.Errorf("flaps %d, want %d", s.flaps, wantFlaps)
			}
			if s.remoteState != tc.received || s.remoteDiscr != 99 {
				t.Errorf("remote state %s discr %d, want %s 99", s.remoteState, s.remoteDiscr, tc.received)
			}
		})
	}
}

func TestReceiveAdminDownReason(t *testing.T) {
	s := newTestSession(t, Up)
	s.receive(&packet{State: AdminDown, Diag: DiagAdminDown, DetectMult: 3, MyDiscr: 99,
		DesiredMinTx: time.Second, RequiredMinRx: time.Second}, t0.Add(time.Second))
	st := s.status()
	want := Status{Config: testConfig(), State: Down, RemoteState: AdminDown, LocalDiag: DiagNeighborDown,
		RemoteDiag: DiagAdminDown, LocalDiscr: 42, RemoteDiscr: 99, Since: t0.Add(time.Second),
		TxInterval: time.Second, DetectTime: 3 * time.Second, RemoteMinRx: time.Second, RemoteMinTx: time.Second,
		RemoteMultiplier: 3, Flaps: 1, Reason: reasonPeerAdmin}
	if diff := cmp.Diff(want, st, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}
	if got := s.transmit(t0.Add(time.Second)); got.State != Down || got.Diag != DiagNeighborDown {
		t.Errorf("next packet state %s diag %q, want Down %q", got.State, got.Diag, DiagNeighborDown)
	}
}

func TestPollAnsweredWithFinal(t *testing.T) {
	s := newTestSession(t, Up)
	p := remote(Up)
	p.Poll = true
	s.receive(p, t0)
	if !s.due(t0) {
		t.Fatal("a Final must be due at once")
	}
	out := s.transmit(t0)
	if !out.Final || out.Poll {
		t.Errorf("packet after a Poll: P=%v F=%v, want F only", out.Poll, out.Final)
	}
	if s.transmit(t0.Add(100 * time.Millisecond)).Final {
		t.Error("the Final bit must be sent once")
	}
	// Not in AdminDown: the packet is discarded.
	a := newTestSession(t, AdminDown)
	a.receive(p, t0)
	if a.finalPending {
		t.Error("an AdminDown session answered a Poll")
	}
}

func TestPollWhileWaitingForFinal(t *testing.T) {
	s := newTestSession(t, Up)
	s.setConfig(Config{Peer: s.cfg.Peer, DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 100 * time.Millisecond, DetectMultiplier: 3}, t0)
	p := remote(Up)
	p.Poll = true
	s.receive(p, t0)
	if out := s.transmit(t0); !out.Final || out.Poll {
		t.Errorf("P=%v F=%v, want a Final without Poll", out.Poll, out.Final)
	}
	if out := s.transmit(t0); !out.Poll || out.Final {
		t.Errorf("P=%v F=%v, want the Poll to continue", out.Poll, out.Final)
	}
}

func TestSlowTimersUntilUpThenPoll(t *testing.T) {
	s := newSession(testConfig(), 42, t0, func() float64 { return 0 })
	if got := s.transmit(t0); got.DesiredMinTx != time.Second || got.RequiredMinRx != 100*time.Millisecond || got.Poll {
		t.Errorf("Down: advertises tx %v rx %v poll %v, want 1s 100ms false", got.DesiredMinTx, got.RequiredMinRx, got.Poll)
	}
	if s.txInterval() != time.Second || s.nextTx != t0.Add(time.Second) {
		t.Errorf("Down: tx interval %v next %v, want 1s at t0+1s", s.txInterval(), s.nextTx.Sub(t0))
	}
	s.receive(remote(Down), t0)
	if s.state != Init || s.txInterval() != time.Second {
		t.Fatalf("Init: state %s tx %v, want Init 1s", s.state, s.txInterval())
	}
	now := t0.Add(10 * time.Millisecond)
	s.receive(remote(Up), now)
	if s.state != Up || s.txInterval() != 100*time.Millisecond || !s.polling {
		t.Fatalf("Up: state %s tx %v polling %v, want Up 100ms true", s.state, s.txInterval(), s.polling)
	}
	if s.due(now) || !s.due(t0.Add(100*time.Millisecond)) {
		t.Error("the faster interval must take effect at once: next packet 100ms after the last")
	}
	now = t0.Add(100 * time.Millisecond)
	if got := s.transmit(now); !got.Poll || got.DesiredMinTx != 100*time.Millisecond {
		t.Errorf("Up: poll %v tx %v, want a Poll advertising 100ms", got.Poll, got.DesiredMinTx)
	}
	fin := remote(Up)
	fin.Final = true
	s.receive(fin, now)
	if s.polling || s.transmit(now).Poll {
		t.Error("the Final must end the Poll Sequence")
	}
	// Going down again slows down at once, without a poll.
	s.receive(remote(Down), now)
	if s.state != Down || s.txInterval() != time.Second || s.polling {
		t.Errorf("Down again: state %s tx %v polling %v", s.state, s.txInterval(), s.polling)
	}
}

func TestTimerChangesWhileUp(t *testing.T) {
	cfg := testConfig()
	s := newTestSession(t, Up)

	// Desired Min TX increases: the old interval stays until the Final.
	cfg.DesiredMinTx = 300 * time.Millisecond
	s.setConfig(cfg, t0)
	if got := s.packet(); !got.Poll || got.DesiredMinTx != 300*time.Millisecond {
		t.Errorf("poll %v tx %v, want a Poll advertising 300ms", got.Poll, got.DesiredMinTx)
	}
	if s.txInterval() != 100*time.Millisecond {
		t.Errorf("tx interval during the poll %v, want the old 100ms", s.txInterval())
	}
	// A change during the poll waits for it to end.
	cfg.RequiredMinRx = 50 * time.Millisecond
	s.setConfig(cfg, t0)
	if got := s.packet(); got.RequiredMinRx != 100*time.Millisecond {
		t.Errorf("rx advertised during the first poll %v, want 100ms", got.RequiredMinRx)
	}
	fin := remote(Up)
	fin.Final = true
	s.receive(fin, t0)
	if s.txInterval() != 300*time.Millisecond {
		t.Errorf("tx interval after the Final %v, want 300ms", s.txInterval())
	}
	// Required Min RX decreased: a second poll; detection keeps the old value.
	if got := s.packet(); !got.Poll || got.RequiredMinRx != 50*time.Millisecond {
		t.Errorf("poll %v rx %v, want a second Poll advertising 50ms", got.Poll, got.RequiredMinRx)
	}
	if s.detectTime() != 300*time.Millisecond {
		t.Errorf("detect time during the poll %v, want 3 × 100ms", s.detectTime())
	}
	fast := remote(Up)
	fast.DesiredMinTx = 50 * time.Millisecond
	fast.Final = true
	s.receive(fast, t0)
	if s.detectTime() != 150*time.Millisecond || s.polling {
		t.Errorf("detect time after the Final %v polling %v, want 3 × 50ms, false", s.detectTime(), s.polling)
	}

	// Desired Min TX decreases and Required Min RX increases: at once.
	cfg.DesiredMinTx, cfg.RequiredMinRx = 20*time.Millisecond, 200*time.Millisecond
	s.setConfig(cfg, t0)
	if s.txInterval() != 100*time.Millisecond || s.detectTime() != 600*time.Millisecond || !s.polling {
		t.Errorf("tx %v detect %v polling %v, want 100ms (remote min rx), 600ms, true", s.txInterval(), s.detectTime(), s.polling)
	}
	if s.state != Up || s.flaps != 0 {
		t.Errorf("timer changes took the session %s (flaps %d)", s.state, s.flaps)
	}
}

func TestDetectionExpiry(t *testing.T) {
	for _, st := range []State{Init, Up} {
		t.Run(st.String(), func(t *testing.T) {
			s := newTestSession(t, st)
			dt := s.detectTime()
			if dt != 300*time.Millisecond {
				t.Fatalf("detect time %v, want 300ms", dt)
			}
			if got := s.nextEvent(); got.After(t0.Add(dt)) {
				t.Errorf("next event at %v, after the detection time", got.Sub(t0))
			}
			if s.expire(t0.Add(dt - time.Microsecond)) {
				t.Fatal("expired before the detection time")
			}
			if !s.expire(t0.Add(dt)) {
				t.Fatal("not expired at the detection time")
			}
			wantFlaps := uint64(0)
			if st == Up {
				wantFlaps = 1
			}
			if s.state != Down || s.localDiag != DiagDetectionExpired || s.flaps != wantFlaps || s.remoteDiscr != 0 {
				t.Errorf("state %s diag %q flaps %d remote discr %d", s.state, s.localDiag, s.flaps, s.remoteDiscr)
			}
			if got := s.status(); got.Reason != "detection time expired after 300ms" || got.DetectTime != 0 {
				t.Errorf("reason %q detect time %v", got.Reason, got.DetectTime)
			}
			if p := s.packet(); p.YourDiscr != 0 || p.State != Down || p.Diag != DiagDetectionExpired {
				t.Errorf("packet after expiry: %+v", p)
			}
		})
	}
}

func TestNeverUpReason(t *testing.T) {
	s := newSession(testConfig(), 42, t0, func() float64 { return 0 })
	if s.expire(t0.Add(time.Hour)) {
		t.Error("a session without a remote expired")
	}
	st := s.status()
	if st.State != Down || st.Reason != reasonNoPacket || st.DetectTime != 0 || st.RemoteDiscr != 0 {
		t.Errorf("status %+v", st)
	}
	if !strings.Contains(st.Reason, "no BFD packet from the peer yet") {
		t.Errorf("reason %q", st.Reason)
	}
}

func TestDetectTimeFromRemote(t *testing.T) {
	s := newTestSession(t, Up)
	p := remote(Up)
	p.DetectMult = 5
	p.DesiredMinTx = 200 * time.Millisecond
	s.receive(p, t0)
	if got := s.detectTime(); got != time.Second {
		t.Errorf("detect time %v, want 5 × max(100ms, 200ms) = 1s", got)
	}
	p.DesiredMinTx = 10 * time.Millisecond
	s.receive(p, t0)
	if got := s.detectTime(); got != 500*time.Millisecond {
		t.Errorf("detect time %v, want 5 × max(100ms, 10ms) = 500ms", got)
	}
}

func TestRemoteMinRxZeroStopsPeriodic(t *testing.T) {
	s := newTestSession(t, Up)
	p := remote(Up)
	p.RequiredMinRx = 0
	s.receive(p, t0)
	if s.txInterval() != 0 || s.due(t0.Add(time.Hour)) {
		t.Error("periodic packets continue although the remote asked for none")
	}
	if next := s.nextEvent(); next != t0.Add(s.detectTime()) {
		t.Errorf("next event %v, want only the detection time", next)
	}
	p.Poll = true
	s.receive(p, t0)
	if !s.due(t0) || !s.transmit(t0).Final {
		t.Error("a Poll must still be answered")
	}
	p.Poll, p.RequiredMinRx = false, 100*time.Millisecond
	s.receive(p, t0.Add(time.Millisecond))
	if !s.due(t0.Add(100 * time.Millisecond)) {
		t.Error("periodic packets did not resume")
	}
}

func TestTxIntervalNegotiation(t *testing.T) {
	for _, tc := range []struct{ local, remote, want time.Duration }{
		{100 * time.Millisecond, 300 * time.Millisecond, 300 * time.Millisecond},
		{300 * time.Millisecond, 100 * time.Millisecond, 300 * time.Millisecond},
		{time.Second, time.Microsecond, time.Second},
		{time.Second, 0, 0},
	} {
		if got := txInterval(tc.local, tc.remote); got != tc.want {
			t.Errorf("txInterval(%v, %v) = %v, want %v", tc.local, tc.remote, got, tc.want)
		}
	}
	if got := advertisedTx(50*time.Millisecond, Init); got != time.Second {
		t.Errorf("advertisedTx Init = %v, want 1s", got)
	}
	if got := advertisedTx(2*time.Second, Down); got != 2*time.Second {
		t.Errorf("advertisedTx Down 2s = %v", got)
	}
	if got := advertisedTx(50*time.Millisecond, Up); got != 50*time.Millisecond {
		t.Errorf("advertisedTx Up = %v", got)
	}
	if got := detectTime(0, time.Second, time.Second); got != 0 {
		t.Errorf("detectTime without remote = %v", got)
	}
}

func TestJitterBounds(t *testing.T) {
	iv := time.Second
	for _, tc := range []struct {
		mult   uint8
		lo, hi time.Duration
	}{
		{3, 750 * time.Millisecond, time.Second},
		{1, 750 * time.Millisecond, 900 * time.Millisecond},
	} {
		for _, r := range []float64{0, 0.25, 0.5, 0.999999} {
			got := jitter(iv, tc.mult, r)
			if got <= tc.lo || got > tc.hi {
				t.Errorf("jitter(1s, mult %d, %v) = %v, want in (%v, %v]", tc.mult, r, got, tc.lo, tc.hi)
			}
		}
		if got := jitter(iv, tc.mult, 0); got != tc.hi {
			t.Errorf("jitter(1s, mult %d, 0) = %v, want %v", tc.mult, got, tc.hi)
		}
	}
	// The session applies it to every periodic packet.
	s := newSession(testConfig(), 1, t0, func() float64 { return 0.999 })
	s.transmit(t0)
	if d := s.nextTx.Sub(t0); d < 750*time.Millisecond || d > 751*time.Millisecond {
		t.Errorf("next packet after %v, want about 750ms", d)
	}
}
