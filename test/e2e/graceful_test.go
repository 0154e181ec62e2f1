package e2e

import (
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/rig"
)

// TestBGPGracefulRestart: what a client behind the router sees while
// every node's speaker restarts in turn (one new connection every 10 ms,
// and long-lived connections through the router), with FRR in its default
// graceful-restart helper mode and BFD at 100 ms.
func TestBGPGracefulRestart(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{LogDir: os.Getenv("IRONLB_BGP_LOGDIR")}, "")
	all := nodeHops(b, false)
	if err := b.RouterBFD(ctx, 100, 100); err != nil {
		t.Fatal(err)
	}
	const bfd = "\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"
	c.applyPeer("tor", torSpec(bfd+"\n  gracefulRestart: {enabled: true}"))
	c.applyPool("bgp", bgpPool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := waitBFD(ctx, b.Router, all, 100, 100, 3); err != nil {
		t.Fatal(err)
	}
	const holders = 12

	roll := func(t *testing.T, sig syscall.Signal) rig.RollingResult {
		t.Helper()
		res, err := b.RollingRestart(ctx, vip, holders, sig)
		t.Logf("%s, one node after another: %d/%d new connections failed, %d/%d long-lived connections broke, back after %v",
			sig, res.FailedConnections, res.Attempts, res.BrokenHolders, res.Holders, res.PerNode)
		for _, br := range res.Breaks {
			t.Logf("  %s", br)
		}
		if err != nil {
			t.Fatal(err)
		}
		return res
	}

	t.Run("graceful restart and BFD: a rolling update loses no connection", func(t *testing.T) {
		res := roll(t, syscall.SIGTERM)
		if res.FailedConnections != 0 || res.BrokenHolders != 0 {
			t.Errorf("%d new connections failed and %d long-lived ones broke, want none", res.FailedConnections, res.BrokenHolders)
		}
	})

	t.Run("graceful restart and BFD: crashed speakers lose no connection either", func(t *testing.T) {
		// The node still forwards (kube-proxy does): the router keeps
		// its routes, stale, until the new speaker has sent them again.
		res := roll(t, syscall.SIGKILL)
		if res.FailedConnections != 0 || res.BrokenHolders != 0 {
			t.Errorf("%d new connections failed and %d long-lived ones broke, want none", res.FailedConnections, res.BrokenHolders)
		}
	})

	t.Run("graceful restart and BFD: a lost node leaves within the detection time", func(t *testing.T) {
		f, err := b.MeasureSilentLoss(ctx, vip)
		t.Logf("link of %s down: route gone after %s, client cut off %s (%d failed connections)", f.Node, f.RouteGone, f.Outage, f.Failed)
		if err != nil {
			t.Fatal(err)
		}
		// BFD 100 ms × 3; graceful restart would keep the routes for
		// hold time + restart time (129 s) if the router took it for a
		// restart.
		if f.RouteGone > 3*time.Second {
			t.Errorf("route gone after %s, want within about the detection time", f.RouteGone)
		}
	})

	t.Run("without graceful restart, a planned restart withdraws before it closes", func(t *testing.T) {
		// A new capability needs new sessions: gobgp closes and reopens
		// them.
		changed := time.Now()
		c.applyPeer("tor", torSpec(bfd))
		if err := b.WaitSessionsRenewed(ctx, changed, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		res := roll(t, syscall.SIGTERM)
		// Long-lived connections through the restarted node move to
		// other nodes with the route and break; new ones do not fail,
		// but for one whose handshake the re-hash catches (seen: 1 of
		// 593).
		if res.FailedConnections > res.Attempts/100 {
			t.Errorf("%d of %d new connections failed, want at most 1%%: the routes are withdrawn before the sessions close", res.FailedConnections, res.Attempts)
		}
	})
}
