package speaker_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/speaker"
)

// TestManagerPacesHeartbeats: a real Manager (heartbeat 20 ms, at most 100
// heartbeats a second, so two streams at 20 ms) and a real agent over
// mutual TLS. With its one speaker the stream beats every 20 ms; when two
// more nodes join (their speakers unreachable) the Manager spreads its
// rate over three streams, 40 ms, and the agent takes that from the next
// heartbeat, its cut-off deadline with it; when they leave, 20 ms again.
// The speaker is never taken for lost meanwhile.
func TestManagerPacesHeartbeats(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const node = "node-a"
	nodeAddr := netip.MustParseAddr("192.0.2.11")
	bundle, creds := testPKI(t, node)
	ann := &slowAnnouncer{addrs: map[netip.Addr]bool{}}
	agent := speaker.NewAgent(node, "lo", func(*net.Interface, func(speaker.Claim)) (speaker.Announcer, error) { return ann, nil }, logr.Discard(),
		speaker.WithLocalAddresses(func() (map[netip.Addr]string, error) { return nil, nil }), speaker.WithCredentials(creds))
	go agent.Run(ctx)
	dial := serveAgent(t, agent, creds)
	m := speakers.New(ctx, speakers.Options{
		Heartbeat: 20 * time.Millisecond, Misses: 3, HeartbeatRate: 100, Identity: bundle, Leader: "test",
		Dial: func(ctx context.Context, addr string) (net.Conn, error) {
			if addr != netip.AddrPortFrom(nodeAddr, speakerv1.DefaultPort).String() {
				return nil, errors.New("unreachable")
			}
			return dial(ctx, addr)
		},
	})
	var losses atomic.Int32
	m.OnChange(func(n string) {
		if st, _ := m.State(n); n == node && !st.Connected && st.Applied > 0 {
			losses.Add(1)
		}
	})
	m.SetNode(node, nodeAddr)
	m.SetReady()

	// await waits until the Manager and the agent use interval.
	await := func(interval time.Duration) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for m.Heartbeat() != interval || agent.HeartbeatInterval() != interval {
			if time.Now().After(deadline) {
				t.Fatalf("after 10s: the Manager beats every %s, the agent expects every %s; want %s", m.Heartbeat(), agent.HeartbeatInterval(), interval)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	await(20 * time.Millisecond)
	m.SetNode("node-b", netip.MustParseAddr("192.0.2.12"))
	m.SetNode("node-c", netip.MustParseAddr("192.0.2.13"))
	await(40 * time.Millisecond)
	if got, want := m.LossLimit(), 120*time.Millisecond; got != want {
		t.Errorf("LossLimit() = %s at 40 ms × 3, want %s", got, want)
	}
	m.RemoveNode("node-b")
	m.RemoveNode("node-c")
	await(20 * time.Millisecond)
	if st, _ := m.State(node); !st.Connected || losses.Load() > 0 {
		t.Errorf("speaker connected %v, taken for lost %d times; want connected, never lost", st.Connected, losses.Load())
	}
}
