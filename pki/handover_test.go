package pki

import (
	"context"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/slowclient"
)

// TestNewLeaderHandshakeDoesNotWait is issue 20, finding 4 (review, point
// 1): a new leader whose watches of the speaker pods and Nodes have not
// listed them yet (a big cluster, a slow API server) must not hold its
// speakers' TLS handshakes until they have: the speaker gives up on a
// handshake after 5 s and the planner on a speaker's first report after
// 2 s, so VIPs would move. The handshake completes at once and the peer's
// attestation is pending (its stream renews with its token at once); a
// replica that started the watches before it led (StartLiveness,
// WithLiveness) authenticates its speakers fully from the first handshake.
func TestNewLeaderHandshakeDoesNotWait(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	old := mustBootstrap(t, cs, WithClock(clk.Now))
	sp, _ := enrolledPeer(t, cs, old, tr, clk)

	// The next leader's list of pods hangs until the test says.
	release := make(chan struct{})
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	next, err := Bootstrap(ctx, slowclient.Pods(cs, release), testNS, WithClock(clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	peer := dial(t, next, "node-a", sp)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the new leader's handshake took %s waiting for its watches, want at once", took.Round(time.Millisecond))
	}
	if !peer.Enrolled() || !peer.AttestationPending() {
		t.Errorf("before the watches listed: enrolled %t, attestation pending %t; want both (the stream renews at once)", peer.Enrolled(), peer.AttestationPending())
	}
	close(release)
	released = true
	waitCtx, waitCancel := context.WithTimeout(ctx, 10*time.Second)
	defer waitCancel()
	if !next.WaitForLiveness(waitCtx) {
		t.Fatal("WaitForLiveness: the watches did not list")
	}
	if peer := dial(t, next, "node-a", sp); !peer.Enrolled() || peer.AttestationPending() {
		t.Errorf("after the watches listed: enrolled %t, attestation pending %t; want enrolled only", peer.Enrolled(), peer.AttestationPending())
	}

	t.Run("warm standby", func(t *testing.T) {
		live := StartLiveness(ctx, cs, testNS, "")
		if !live.WaitForSync(waitCtx) {
			t.Fatal("the standby's watches did not list")
		}
		leader, err := Bootstrap(ctx, cs, testNS, WithClock(clk.Now), WithLiveness(live))
		if err != nil {
			t.Fatal(err)
		}
		if peer := dial(t, leader, "node-a", sp); !peer.Enrolled() || peer.AttestationPending() {
			t.Errorf("first handshake of a warm leader: enrolled %t, attestation pending %t; want enrolled only", peer.Enrolled(), peer.AttestationPending())
		}
	})
}
