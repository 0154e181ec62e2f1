package speaker

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestHeartbeatAnsweredWhileApplying: a heartbeat is answered at once
// while an apply waits in a socket write (an Announce that blocks), with
// the version applied so far; the apply's own answer follows.
func TestHeartbeatAnsweredWhileApplying(t *testing.T) {
	agent, fa, c := newTestAgent(t)
	block, blocked := make(chan struct{}), make(chan struct{}, 1)
	fa.mu.Lock()
	fa.block, fa.blocked = block, blocked
	fa.mu.Unlock()
	stream, _ := open(t, c)
	if err := stream.Send(snapshot(1, "192.0.2.1")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("the snapshot's Announce was never called")
	}
	if err := stream.Send(heartbeat(7)); err != nil {
		t.Fatal(err)
	}
	r, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if r.GetHeartbeatSeq() != 7 || r.GetAppliedVersion() != 0 {
		t.Errorf("answer while the apply blocks = seq %d, applied %d; want the heartbeat's answer (seq 7, applied 0)", r.GetHeartbeatSeq(), r.GetAppliedVersion())
	}
	// Reports and liveness do not wait for the apply either.
	if err := agent.Live(t.Context()); err != nil {
		t.Errorf("Live() while an apply blocks: %v", err)
	}
	close(block)
	for {
		r, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if r.GetFull() && r.GetAppliedVersion() == 1 {
			if diff := cmp.Diff([]string{"192.0.2.1=ANNOUNCING"}, vips(r)); diff != "" {
				t.Errorf("after the apply (-want +got):\n%s", diff)
			}
			break
		}
	}
}

// TestRestart: Restart ends every stream with ReasonRestarting and
// withdraws nothing over layer 2 and stops BGP as a planned stop.
func TestRestart(t *testing.T) {
	fb := &fakeBGP{}
	agent, fa, c := newTestAgent(t, WithBGP(fb))
	s1, _ := open(t, c)
	send(t, s1, snapshot(1, "192.0.2.1", "2001:db8::1"))
	s2, _ := open(t, c) // a second CCM (a standby's stream)
	agent.Restart()
	for name, s := range map[string]speakerv1.Speaker_SyncClient{"followed": s1, "other": s2} {
		if got := speakerv1.StreamErrorReason(recvErr(t, s)); got != speakerv1.ReasonRestarting {
			t.Errorf("%s stream ended with reason %q, want %q", name, got, speakerv1.ReasonRestarting)
		}
	}
	fa.mu.Lock()
	withdrawn, closed := fa.withdrawn, fa.closed
	fa.mu.Unlock()
	if withdrawn != 0 || closed {
		t.Errorf("Withdraw called %d times, announcer closed %v; want nothing withdrawn", withdrawn, closed)
	}
	if diff := cmp.Diff([]string{"192.0.2.1", "2001:db8::1"}, fa.list()); diff != "" {
		t.Errorf("answered for after Restart (-want +got):\n%s", diff)
	}
	fb.mu.Lock()
	stopped, graceful := fb.stopped, fb.graceful
	fb.mu.Unlock()
	if !stopped || !graceful {
		t.Errorf("BGP stopped %v, graceful %v; want a planned (graceful) stop: peers with graceful restart keep the routes, the others get withdrawals", stopped, graceful)
	}
	// No new stream is taken.
	s3, err := c.Sync(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if got := speakerv1.StreamErrorReason(recvErr(t, s3)); got != speakerv1.ReasonRestarting {
		t.Errorf("a stream opened after Restart ended with reason %q, want %q", got, speakerv1.ReasonRestarting)
	}
}
