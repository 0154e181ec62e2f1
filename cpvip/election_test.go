package cpvip

import (
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// step is one input to the election at a time (ms after start) and the
// action wanted.
type step struct {
	at    int
	ready *bool // SetReady
	msg   *Message
	leave bool
	stall bool // Stalled, then Tick
	// tick when neither ready, msg nor leave.
	want      Action
	wantEpoch uint64 // checked when non-zero
}

var (
	yes = ptrTo(true)
	no  = ptrTo(false)
)

func ptrTo[T any](v T) *T { return &v }

// peer is a message from node n (192.0.2.1n).
func peer(n int, ready, holding bool, epoch uint64) *Message {
	return &Message{Node: "n" + string(rune('0'+n)), NodeIP: netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)}), Ready: ready, Holding: holding, Epoch: epoch}
}

// supported returns m with support n.
func supported(m *Message, n uint8) *Message {
	m.Support = n
	return m
}

func TestElection(t *testing.T) {
	// Self is n2 (192.0.2.12): n1 has a lower IP, n3 a higher one.
	tests := []struct {
		name  string
		steps []step
	}{{
		name: "listens for the dead interval at start-up",
		steps: []step{
			{at: 0, ready: yes, want: None},
			{at: 100, want: None},
			{at: 499, want: None},
			{at: 500, want: Take, wantEpoch: 1},
			{at: 600, want: None},
		},
	}, {
		name: "not ready never takes",
		steps: []step{
			{at: 0, ready: no},
			{at: 1000, want: None},
			{at: 1100, ready: yes, want: Take, wantEpoch: 1},
		},
	}, {
		name: "no move on rejoin: an existing holder is learned during the listen period",
		steps: []step{
			{at: 0, ready: yes},
			{at: 50, msg: peer(3, true, true, 7), want: None},
			{at: 150, msg: peer(3, true, true, 7), want: None},
			{at: 550, msg: peer(3, true, true, 7), want: None},
			{at: 600, want: None},
		},
	}, {
		name: "take-over when the holder goes silent for the dead interval",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, true, 7)},
			{at: 599, want: None},
			{at: 600, want: Take, wantEpoch: 8},
		},
	}, {
		name: "take-over at once when the holder releases",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, true, 7)},
			{at: 600, msg: peer(3, true, true, 7), want: None},
			{at: 650, msg: peer(3, false, false, 7), want: Take, wantEpoch: 8},
		},
	}, {
		name: "the lowest ready node IP takes over, not this one",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(1, true, false, 3)},
			{at: 500, want: None},
			{at: 550, msg: peer(1, true, false, 3), want: None},
		},
	}, {
		name: "an unready lower node IP does not count",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(1, false, false, 3)},
			{at: 500, want: Take, wantEpoch: 4},
		},
	}, {
		name: "a lower node IP not heard within the dead interval does not count",
		steps: []step{
			{at: 0, ready: yes},
			{at: 0, msg: peer(1, true, false, 3)},
			{at: 499, want: None},
			{at: 500, want: Take, wantEpoch: 4},
		},
	}, {
		name: "a higher node IP does not stop this one",
		steps: []step{
			{at: 0, ready: yes},
			{at: 400, msg: peer(3, true, false, 0)},
			{at: 500, want: Take, wantEpoch: 1},
		},
	}, {
		name: "unready holder releases",
		steps: []step{
			{at: 0, ready: yes},
			{at: 500, want: Take, wantEpoch: 1},
			{at: 700, ready: no, want: Release, wantEpoch: 1},
			{at: 800, want: None},
			{at: 900, ready: yes, want: Take, wantEpoch: 2},
		},
	}, {
		name: "holder keeps holding while it hears nobody",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(1, true, false, 0)},
			{at: 150, msg: peer(1, false, false, 0)},
			{at: 500, want: Take, wantEpoch: 1},
			{at: 5000, want: None},
			{at: 60000, want: None},
		},
	}, {
		name: "heal: the higher epoch keeps it; this one releases",
		steps: []step{
			{at: 0, ready: yes},
			{at: 500, want: Take, wantEpoch: 1},
			{at: 700, msg: supported(peer(3, true, true, 5), 1), want: Release, wantEpoch: 5},
			{at: 800, want: None},
			{at: 900, msg: supported(peer(3, true, true, 5), 1), want: None},
		},
	}, {
		name: "heal: this one has the higher epoch, keeps it and re-announces",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, false, 4)},
			{at: 500, want: Take, wantEpoch: 5},
			{at: 700, msg: supported(peer(1, true, true, 2), 1), want: Reassert, wantEpoch: 5},
			{at: 800, msg: peer(1, true, false, 5), want: None},
			{at: 900, want: None},
		},
	}, {
		name: "heal: same epoch, the lower node IP keeps it",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, false, 4)},
			{at: 500, want: Take, wantEpoch: 5},
			{at: 700, msg: supported(peer(3, true, true, 5), 1), want: Reassert},
			{at: 750, msg: supported(peer(1, true, true, 5), 1), want: Release},
		},
	}, {
		name: "heal: cut off alone, this one took over last but gives way to the holder the rest of the LAN kept",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: supported(peer(1, true, true, 4), 2)},
			// n1 goes silent (this node's link is down): take-over.
			{at: 600, want: Take, wantEpoch: 5},
			// The link is back: n1 held all along with n3 beside it.
			{at: 5000, msg: supported(peer(1, true, true, 4), 2), want: Release, wantEpoch: 5},
			{at: 5100, want: None},
		},
	}, {
		name: "heal: the holder that was cut off alone gives way to this successor, heard steadily by n3",
		steps: []step{
			{at: 0, ready: yes},
			{at: 0, msg: peer(3, true, false, 2)},
			{at: 100, msg: supported(peer(1, true, true, 2), 3)},
			{at: 200, msg: peer(3, true, false, 2)},
			{at: 300, msg: peer(3, true, false, 2)},
			{at: 400, msg: peer(3, true, false, 2)},
			{at: 500, msg: peer(3, true, false, 2)},
			// n1 went silent at 100: take-over at 600, with n3 heard
			// steadily since 0 (support 2).
			{at: 600, msg: peer(3, true, false, 2), want: Take, wantEpoch: 3},
			{at: 700, msg: peer(3, true, false, 3)},
			// n1's link is back: alone all along, support 1.
			{at: 750, msg: supported(peer(1, true, true, 2), 1), want: Reassert, wantEpoch: 3},
			{at: 800, msg: peer(1, true, false, 3), want: None},
		},
	}, {
		name: "a speaker that was stalled listens a dead interval again before it takes over",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, true, 7)},
			// This speaker's loop wakes up 700 ms late: the holder's
			// messages may still wait unread.
			{at: 800, stall: true, want: None},
			{at: 1299, want: None},
			{at: 1300, want: Take, wantEpoch: 8},
		},
	}, {
		name: "leave releases and never takes again",
		steps: []step{
			{at: 0, ready: yes},
			{at: 500, want: Take, wantEpoch: 1},
			{at: 600, leave: true, want: Release},
			{at: 2000, want: None},
			{at: 2100, ready: yes, want: None},
		},
	}, {
		name: "leave while not holding does nothing",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, leave: true, want: None},
			{at: 600, want: None},
		},
	}, {
		name: "epoch is the highest seen plus one, from non-holders too",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: peer(3, true, false, 41)},
			{at: 500, want: Take, wantEpoch: 42},
		},
	}, {
		name: "own messages looped back are ignored",
		steps: []step{
			{at: 0, ready: yes},
			{at: 100, msg: &Message{Node: "n2", NodeIP: netip.MustParseAddr("192.0.2.12"), Ready: true, Holding: true, Epoch: 9}, want: None},
			{at: 500, want: Take, wantEpoch: 1},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			e := NewElection(ElectionConfig{Node: "n2", NodeIP: netip.MustParseAddr("192.0.2.12")}, t0)
			for i, s := range tt.steps {
				now := t0.Add(time.Duration(s.at) * time.Millisecond)
				var d Decision
				switch {
				case s.ready != nil:
					d = e.SetReady(*s.ready, now)
				case s.msg != nil:
					d = e.Receive(*s.msg, now)
				case s.leave:
					d = e.Leave(now)
				case s.stall:
					e.Stalled(now)
					d = e.Tick(now)
				default:
					d = e.Tick(now)
				}
				if d.Action != s.want {
					t.Fatalf("step %d (at %d ms): action %s (%s), want %s", i, s.at, d.Action, d.Why, s.want)
				}
				if s.wantEpoch != 0 && d.Epoch != s.wantEpoch {
					t.Fatalf("step %d (at %d ms): epoch %d, want %d", i, s.at, d.Epoch, s.wantEpoch)
				}
				if got, want := e.Holding(), holdingAfter(e, d); got != want {
					t.Fatalf("step %d: Holding %v after %s", i, got, d.Action)
				}
			}
		})
	}
}

// holdingAfter is what Holding must say after d (Take and Reassert: held;
// Release: not; None: unchanged, so whatever it says).
func holdingAfter(e *Election, d Decision) bool {
	switch d.Action {
	case Take, Reassert:
		return true
	case Release:
		return false
	}
	return e.Holding()
}

func TestElectionSupport(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	e := NewElection(ElectionConfig{Node: "n2", NodeIP: netip.MustParseAddr("192.0.2.12")}, t0)
	for _, tc := range []struct {
		name string
		do   func()
		now  int
		want uint8
	}{
		{"not ready, nobody heard", func() {}, 0, 0},
		{"ready counts itself", func() { e.SetReady(true, at(0)) }, 0, 1},
		{"a peer heard just now is not steady", func() { e.Receive(*peer(1, true, false, 0), at(100)) }, 100, 1},
		{"heard every 100 ms for the dead interval: steady", func() {
			for ms := 200; ms <= 600; ms += 100 {
				e.Receive(*peer(1, true, false, 0), at(ms))
			}
		}, 600, 2},
		{"an unready peer does not count", func() {
			for ms := 100; ms <= 600; ms += 100 {
				e.Receive(*peer(3, false, false, 0), at(ms))
			}
		}, 600, 2},
		{"silent for the dead interval: gone", func() {}, 1100, 1},
		{"heard again: the streak starts over", func() { e.Receive(*peer(1, true, false, 0), at(1200)) }, 1200, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.do()
			if got := e.Outgoing(at(tc.now)).Support; got != tc.want {
				t.Errorf("support %d, want %d", got, tc.want)
			}
		})
	}
}

func TestElectionOutgoingAndStatus(t *testing.T) {
	t0 := time.Unix(1000, 0)
	e := NewElection(ElectionConfig{Node: "n2", NodeIP: netip.MustParseAddr("192.0.2.12")}, t0)
	e.SetReady(true, t0)
	e.Receive(*peer(3, true, false, 6), t0.Add(100*time.Millisecond))
	if d := e.Tick(t0.Add(500 * time.Millisecond)); d.Action != Take {
		t.Fatalf("action %s, want take", d.Action)
	}
	now := t0.Add(600 * time.Millisecond)
	// n3, heard once 500 ms ago, is not steady: support 1.
	want := Message{Node: "n2", NodeIP: netip.MustParseAddr("192.0.2.12"), Ready: true, Holding: true, Epoch: 7, Support: 1}
	if diff := cmp.Diff(want, e.Outgoing(now), cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("Outgoing (-want +got):\n%s", diff)
	}
	if h, ep := e.Holder(now); h != "n2" || ep != 7 {
		t.Errorf("Holder = %s, %d; want n2, 7", h, ep)
	}
	wantPeers := []PeerStatus{{Node: "n3", Address: "192.0.2.13", APIServerReady: true, Epoch: 6, LastHeardMillis: 500}}
	if diff := cmp.Diff(wantPeers, e.Peers(now)); diff != "" {
		t.Errorf("Peers (-want +got):\n%s", diff)
	}
	e.Leave(now)
	if m := e.Outgoing(now); m.Ready || m.Holding {
		t.Errorf("after Leave the message says ready %v holding %v, want neither", m.Ready, m.Holding)
	}
	if ps := e.Peers(now.Add(2 * time.Minute)); len(ps) != 1 {
		t.Errorf("peers are forgotten only at Tick; got %d", len(ps))
	}
	e.Tick(now.Add(2 * time.Minute))
	if ps := e.Peers(now.Add(2 * time.Minute)); len(ps) != 0 {
		t.Errorf("a peer silent for 2 minutes is still listed: %+v", ps)
	}
}
