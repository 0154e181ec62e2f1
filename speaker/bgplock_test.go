package speaker

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// lockProbeBGP is a fakeBGP that checks, in every call, that the agent's
// lock (a.mu) is free: heartbeats and reports must never wait for gobgp.
// Its first Apply fails, so that Run's retry (pollBGP) is exercised too.
type lockProbeBGP struct {
	fakeBGP
	a        *Agent
	calls    atomic.Int32
	held     atomic.Int32 // calls made with a.mu held
	sessions atomic.Int32
	failed   atomic.Bool
}

// probe counts one call, and counts it as made under a.mu when a.mu
// cannot be taken within a second.
func (f *lockProbeBGP) probe() {
	f.calls.Add(1)
	got := make(chan struct{})
	go func() {
		f.a.mu.Lock()
		f.a.mu.Unlock() //nolint:staticcheck // taking it is the probe
		close(got)
	}()
	select {
	case <-got:
	case <-time.After(time.Second):
		f.held.Add(1)
	}
}

func (f *lockProbeBGP) Apply(ctx context.Context, d bgp.Desired) error {
	f.probe()
	if !f.failed.Swap(true) {
		return errors.New("first apply fails")
	}
	return f.fakeBGP.Apply(ctx, d)
}

func (f *lockProbeBGP) Sessions(ctx context.Context) ([]bgp.Session, error) {
	f.probe()
	f.sessions.Add(1)
	return f.fakeBGP.Sessions(ctx)
}

func (f *lockProbeBGP) Stop(ctx context.Context, graceful bool) error {
	f.probe()
	return f.fakeBGP.Stop(ctx, graceful)
}

// TestBGPSideIsCalledOutsideTheAgentsLock: no call into the BGP side
// (Apply from a snapshot, an update and Run's retry, Sessions from Run's
// polling, Stop from Close) is made with a.mu held.
func TestBGPSideIsCalledOutsideTheAgentsLock(t *testing.T) {
	fb := &lockProbeBGP{}
	fa := newFakeAnnouncer()
	agent := NewAgent("node-a", "lo", fa.factory, logr.Discard(),
		WithLocalAddresses(noLocalAddresses), WithBGP(fb), WithMaintainInterval(20*time.Millisecond))
	fb.a = agent
	c := serve(t, agent)
	s, _ := open(t, c)
	vip := &speakerv1.Announcement{Address: "198.51.100.1", BgpOnly: true, Bgp: []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}}}
	send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: &speakerv1.Snapshot{
		Version: 1, Leader: "test", Bgp: bgpConfig, Announcements: []*speakerv1.Announcement{vip},
	}}})
	send(t, s, update(2, []string{"198.51.100.2"}, "198.51.100.1"))
	deadline := time.Now().Add(10 * time.Second)
	for {
		fb.mu.Lock()
		applied := fb.applied // succeeded: the retry after the failed first
		fb.mu.Unlock()
		if applied > 0 && fb.sessions.Load() >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10s: %d successful applies, %d session polls; want a retried apply and 2 polls", applied, fb.sessions.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := agent.Close(); err != nil {
		t.Fatal(err)
	}
	if n := fb.held.Load(); n != 0 {
		t.Errorf("%d of %d calls into the BGP side were made with the agent's lock held", n, fb.calls.Load())
	}
}

// TestStaleBGPApplyIsNotRecordedAsApplied: an apply whose set-up or
// export index was replaced before its result is recorded counts as
// failed (retried with the full table), not as applied.
func TestStaleBGPApplyIsNotRecordedAsApplied(t *testing.T) {
	a := NewAgent("node-a", "lo", newFakeAnnouncer().factory, logr.Discard(),
		WithLocalAddresses(noLocalAddresses), WithBGP(&fakeBGP{}))
	a.mu.Lock()
	defer a.mu.Unlock()
	a.bgpCfg = bgpConfig
	d, err := a.desiredBGPLocked()
	if err != nil {
		t.Fatal(err)
	}
	a.bgpCfg = &speakerv1.BGPConfig{}
	a.recordBGPLocked(d, nil)
	if !errors.Is(a.bgpErr, errBGPStale) {
		t.Errorf("after a set-up change: recorded %v, want %v", a.bgpErr, errBGPStale)
	}
	d, _ = a.desiredBGPLocked()
	a.exports = newExportIndex()
	a.recordBGPLocked(d, nil)
	if !errors.Is(a.bgpErr, errBGPStale) {
		t.Errorf("after the export index was replaced: recorded %v, want %v", a.bgpErr, errBGPStale)
	}
	d, _ = a.desiredBGPLocked()
	a.recordBGPLocked(d, nil)
	if a.bgpErr != nil {
		t.Errorf("an apply of the current state recorded %v, want success", a.bgpErr)
	}
}
