package cpvip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// fakeSpeaker records what the runner asks of the BGP side as events.
type fakeSpeaker struct {
	events  chan string
	mu      sync.Mutex
	failing int // Apply calls still to fail
	adv     bool
}

func (f *fakeSpeaker) Apply(_ context.Context, d bgp.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failing > 0 {
		f.failing--
		f.events <- "apply failed"
		return errors.New("router unreachable")
	}
	f.adv = len(d.Exports) > 0
	if f.adv {
		f.events <- "advertise"
	} else {
		f.events <- "withdraw"
	}
	return nil
}

func (f *fakeSpeaker) Sessions(context.Context) ([]bgp.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	if f.adv {
		n = 1
	}
	return []bgp.Session{{Peer: netip.MustParseAddr("192.0.2.1"), State: "Established", Advertised: n,
		BFD: &bgp.BFDSession{State: "Up"}}}, nil
}

func (f *fakeSpeaker) Stop(_ context.Context, graceful bool) error {
	f.events <- fmt.Sprintf("stop graceful=%t", graceful)
	return nil
}

type runnerRig struct {
	b      *BGP
	events chan string
	ready  chan bool
	drain  chan time.Time
	sp     *fakeSpeaker
	cancel context.CancelFunc
	done   chan error
}

func startRunner(t *testing.T) *runnerRig {
	t.Helper()
	r := &runnerRig{events: make(chan string, 64), ready: make(chan bool), drain: make(chan time.Time, 1), done: make(chan error, 1)}
	r.sp = &fakeSpeaker{events: r.events}
	local := Local{
		Add: func(netip.Addr) error { r.events <- "add local"; return nil },
		Del: func(netip.Addr) error { r.events <- "del local"; return nil },
	}
	c := BGPConfig{Peers: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, PeerASN: 64512, ASN: 64513}
	b, err := newBGP(logr.Discard(), c, netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("192.0.2.11"), r.sp, local)
	if err != nil {
		t.Fatal(err)
	}
	b.afterFunc = func(time.Duration) <-chan time.Time { r.events <- "drain started"; return r.drain }
	r.b = b
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() { r.done <- b.Run(ctx, r.ready) }()
	t.Cleanup(func() {
		cancel()
		select { // the planned stop's drain
		case r.drain <- time.Now():
		default:
		}
		<-r.done
	})
	return r
}

// expect reads the next events and compares them with want.
func (r *runnerRig) expect(t *testing.T, want ...string) {
	t.Helper()
	var got []string
	timeout := time.After(10 * time.Second)
	for len(got) < len(want) {
		select {
		case e := <-r.events:
			got = append(got, e)
		case <-timeout:
			t.Fatalf("events %q, then nothing for 10s; want %q", got, want)
		}
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("events (-want +got):\n%s", diff)
	}
}

// TestBGPRunnerOrder: the VIP is local before it is advertised and stays
// local until its withdrawal (and the drain) is done; a planned stop
// withdraws through the speaker's graceful stop.
func TestBGPRunnerOrder(t *testing.T) {
	r := startRunner(t)
	r.expect(t, "del local", "withdraw")

	r.ready <- true
	r.expect(t, "add local", "advertise")
	r.ready <- true // taken once the runner is done advertising
	st := Status{}
	r.b.Fill(&st)
	want := Status{Mode: "bgp", Serving: true, BGP: []BGPSessionStatus{{Peer: "192.0.2.1", State: "Established", BFD: "up", Advertised: true}}}
	if diff := cmp.Diff(want, st); diff != "" {
		t.Errorf("status (-want +got):\n%s", diff)
	}

	r.ready <- false
	r.expect(t, "withdraw", "drain started")
	r.drain <- time.Now()
	r.expect(t, "del local")

	// Ready again within the drain: the VIP stays.
	r.ready <- true
	r.expect(t, "add local", "advertise")
	r.ready <- false
	r.expect(t, "withdraw", "drain started")
	r.ready <- true
	r.expect(t, "add local", "advertise")
	r.drain <- time.Now() // the old drain's timer: no longer waited for
	r.ready <- true       // a repeated value changes nothing

	r.cancel()
	r.expect(t, "stop graceful=true", "drain started")
	r.drain <- time.Now()
	r.expect(t, "del local")
	if err := <-r.done; err != nil {
		t.Fatal(err)
	}
	r.done <- nil // for the cleanup
}

// TestBGPRunnerRetry: a failed apply is retried; while a withdrawal has
// not worked the VIP stays local.
func TestBGPRunnerRetry(t *testing.T) {
	r := startRunner(t)
	r.expect(t, "del local", "withdraw")
	r.ready <- true
	r.expect(t, "add local", "advertise")
	r.sp.mu.Lock()
	r.sp.failing = 1
	r.sp.mu.Unlock()
	r.ready <- false
	r.expect(t, "apply failed", "withdraw", "drain started")
	r.drain <- time.Now()
	r.expect(t, "del local")

	r.sp.mu.Lock()
	r.sp.failing = 1
	r.sp.mu.Unlock()
	r.ready <- true
	r.expect(t, "add local", "apply failed", "add local", "advertise")
}

// TestBGPRunnerClosedReadiness: a closed readiness channel is unready.
func TestBGPRunnerClosedReadiness(t *testing.T) {
	r := startRunner(t)
	r.expect(t, "del local", "withdraw")
	r.ready <- true
	r.expect(t, "add local", "advertise")
	close(r.ready)
	r.expect(t, "withdraw", "drain started")
}
