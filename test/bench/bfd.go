package main

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

// bfdTrials is the least number of trials of each figure of the bfd
// group.
const bfdTrials = 10

// benchBFD measures, on the BGP rig with FRR's bgpd and bfdd in their
// default graceful-restart helper mode: how long a client behind the
// router is cut off when a node's link goes down, with BFD at 100 ms × 3
// and with only a 3 s hold time; how many connections a rolling restart
// of the three speakers costs with graceful restart and BFD (and without
// graceful restart); and the speaker's CPU per BFD session at 100 ms.
func benchBFD(ctx context.Context, trials int) error {
	trials = max(trials, bfdTrials)
	x, err := startBGPBench(ctx)
	if err != nil {
		return err
	}
	defer x.Close()
	b := x.b
	const bfd = "bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"
	tor := func(extra string) string {
		return fmt.Sprintf("apiVersion: ironlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: tor}\nspec:\n  peerAddress: %s\n  peerASN: %d\n  myASN: %d\n%s",
			rig.RouterV4.Addr(), rig.RouterASN, rig.NodeASN, extra)
	}
	if err := b.RouterBFD(ctx, 100, 100); err != nil {
		return x.fail(err)
	}
	err = x.apply(ctx, tor("  "+bfd+"\n  gracefulRestart: {enabled: true}\n")+fmt.Sprintf(`---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: bgp}
spec:
  addresses: [%s, %s]
  bgp: {}
`, rig.BGPPoolV4, rig.BGPPoolV6))
	if err != nil {
		return err
	}
	if _, err := x.cp.Client.CoreV1().Services("default").Create(ctx, lbService("bfd"), metav1.CreateOptions{}); err != nil {
		return err
	}
	vip, err := waitVIP(ctx, x.cp, "bfd")
	if err != nil {
		return x.fail(err)
	}
	if err := waitRouterBFD(ctx, b, 3); err != nil {
		return x.fail(err)
	}

	// A node's link down, BFD on: the router drops its next hop after
	// the detection time and the client's connections succeed again.
	outages, gone, err := silentLosses(ctx, b, vip, trials, 3)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_failover_silent_bfd_p50", median(outages), "s")
	report("bgp_failover_silent_bfd_max", slices.Max(outages), "s")
	report("bgp_failover_silent_bfd_route_gone_p50", median(gone), "s")

	// The same with the BGPPeer's default timers (300 ms × 3), on both
	// sides.
	if err := b.RouterBFD(ctx, 300, 300); err != nil {
		return x.fail(err)
	}
	if err := x.apply(ctx, tor("  bfd: {enabled: true}\n  gracefulRestart: {enabled: true}\n")); err != nil {
		return err
	}
	if err := waitRouterBFDTimers(ctx, b, 300); err != nil {
		return x.fail(err)
	}
	outages, _, err = silentLosses(ctx, b, vip, 5, 3)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_failover_silent_bfd_default_timers_p50", median(outages), "s")
	if err := b.RouterBFD(ctx, 100, 100); err != nil {
		return x.fail(err)
	}
	if err := x.apply(ctx, tor("  "+bfd+"\n  gracefulRestart: {enabled: true}\n")); err != nil {
		return err
	}
	if err := waitRouterBFDTimers(ctx, b, 100); err != nil {
		return x.fail(err)
	}

	// Rolling restarts (SIGTERM, as a DaemonSet update), graceful restart
	// and BFD on.
	failed, broken, err := rollingRestarts(ctx, b, vip, trials)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_rolling_restart_failed_connections", float64(failed), "connections")
	report("bgp_rolling_restart_broken_long_lived", float64(broken), "connections")

	if err := bfdCPU(ctx, x); err != nil {
		return x.fail(err)
	}

	// Without graceful restart: the routes are withdrawn before the
	// sessions close, so new connections do not fail, but long-lived
	// ones through the restarted node move with the route and break.
	if err := x.apply(ctx, tor("  "+bfd+"\n")); err != nil {
		return err
	}
	if err := b.WaitSessionsRenewed(ctx, time.Now(), 60*time.Second); err != nil {
		return x.fail(err)
	}
	failed, broken, err = rollingRestarts(ctx, b, vip, 3)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_rolling_restart_nogr_failed_connections", float64(failed), "connections")
	report("bgp_rolling_restart_nogr_broken_long_lived", float64(broken), "connections")

	// BFD off, holdTime 3s (the shortest there is): what users get
	// without BFD.
	if err := x.apply(ctx, tor("  holdTime: 3s\n")); err != nil {
		return err
	}
	if err := b.WaitSessionsRenewed(ctx, time.Now(), 60*time.Second); err != nil {
		return x.fail(err)
	}
	outages, _, err = silentLosses(ctx, b, vip, trials, 0)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_failover_silent_holdtime_p50", median(outages), "s")

	// Graceful restart without BFD: a node that is gone keeps its routes
	// until the hold time expires. FRR then sends a NOTIFICATION, which
	// ends graceful restart (IronLB does not negotiate RFC 8538's N bit),
	// so the restart time does not add to it.
	if err := x.apply(ctx, tor("  holdTime: 3s\n  gracefulRestart: {enabled: true, restartTime: 5s}\n")); err != nil {
		return err
	}
	if err := b.WaitSessionsRenewed(ctx, time.Now(), 60*time.Second); err != nil {
		return x.fail(err)
	}
	outages, _, err = silentLosses(ctx, b, vip, 3, 0)
	if err != nil {
		return x.fail(err)
	}
	report("bgp_failover_silent_gr_nobfd_p50", median(outages), "s")
	return nil
}

// silentLosses takes a node's link down trials times and returns how long
// the client was cut off and how long the route took to go. Before each
// trial it waits until the router has bfdUp BFD sessions up.
func silentLosses(ctx context.Context, b *rig.BGP, vip netip.Addr, trials, bfdUp int) (outages, gone []float64, err error) {
	for range trials {
		f, err := b.MeasureSilentLoss(ctx, vip)
		if err != nil {
			return nil, nil, err
		}
		outages = append(outages, f.Outage.Seconds())
		gone = append(gone, f.RouteGone.Seconds())
		// The node's BFD session (if any) must be up again before the
		// next trial.
		if err := waitRouterBFD(ctx, b, bfdUp); err != nil {
			return nil, nil, err
		}
	}
	return outages, gone, nil
}

// rollingRestarts restarts the three speakers one after another, trials
// times, and returns the failed new connections and broken long-lived
// ones over all of them.
func rollingRestarts(ctx context.Context, b *rig.BGP, vip netip.Addr, trials int) (failed, broken int, err error) {
	for range trials {
		res, err := b.RollingRestart(ctx, vip, 12, syscall.SIGTERM)
		if err != nil {
			return 0, 0, err
		}
		failed += res.FailedConnections
		broken += res.BrokenHolders
	}
	return failed, broken, nil
}

// waitRouterBFD waits until FRR has n BFD sessions up.
func waitRouterBFD(ctx context.Context, b *rig.BGP, n int) error {
	return rig.Eventually(60*time.Second, func() error {
		l, err := b.Router.BFDPeerList(ctx)
		if err != nil {
			return err
		}
		up := 0
		for _, p := range l {
			if p.Status == "up" {
				up++
			}
		}
		if up < n {
			return fmt.Errorf("%d of %d BFD sessions up in the router", up, n)
		}
		return nil
	})
}

// waitRouterBFDTimers waits until the router's BFD sessions with the three
// nodes are up with both sides at ms.
func waitRouterBFDTimers(ctx context.Context, b *rig.BGP, ms int) error {
	return rig.Eventually(60*time.Second, func() error {
		l, err := b.Router.BFDPeerList(ctx)
		if err != nil {
			return err
		}
		ok := 0
		for _, p := range l {
			if p.Status == "up" && p.ReceiveInterval == ms && p.RemoteReceive == ms && p.RemoteTransmit == ms {
				ok++
			}
		}
		if ok < len(b.Nodes) {
			return fmt.Errorf("%d of %d BFD sessions up at %d ms", ok, len(b.Nodes), ms)
		}
		return nil
	})
}

// bfdSessions is how many BFD sessions the CPU figure runs.
const bfdSessions = 100

// bfdCPU measures node-a's speaker CPU with 100 BGP peers (100 router
// addresses on the LAN) with BFD at 100 ms, against the same 100 peers without BFD,
// and reports the difference per session.
func bfdCPU(ctx context.Context, x *bgpBench) error {
	b := x.b
	n := b.Node("node-a")
	if out, err := x.cp.Kubectl(ctx, "label", "node", n.Name, "bfdbench=yes", "--overwrite"); err != nil {
		return fmt.Errorf("labelling %s: %w\n%s", n.Name, err, out)
	}
	// A router holds one session per neighbor address, and a node one
	// per peer address: 100 free addresses of the LAN for the router
	// (.14-.99, .101-.114) and 100 for node-a (.115-.191, .224-.246).
	var free []netip.Addr
	for _, r := range [][2]int{{14, 99}, {101, 191}, {224, 246}} {
		for i := r[0]; i <= r[1]; i++ {
			free = append(free, netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
		}
	}
	routerAddrs, nodeAddrs := free[:bfdSessions], free[bfdSessions:2*bfdSessions]
	for i := range bfdSessions {
		if _, err := b.Router.Host.Run("ip", "addr", "replace", routerAddrs[i].String()+"/24", "dev", b.Router.Host.Interface); err != nil {
			return err
		}
		if _, err := n.Host.Run("ip", "addr", "replace", nodeAddrs[i].String()+"/24", "dev", n.Host.Interface); err != nil {
			return err
		}
	}
	// FRR accepts 100 dynamic neighbors by default.
	if err := b.Router.Configure(ctx, fmt.Sprintf("router bgp %d", rig.RouterASN), "bgp listen limit 1000"); err != nil {
		return err
	}
	peers := func(bfdOn bool) string {
		var sb strings.Builder
		for i := range bfdSessions {
			fmt.Fprintf(&sb, "---\napiVersion: ironlb.dev/v1alpha1\nkind: BGPPeer\nmetadata: {name: cpu-%d, labels: {bench: bfd}}\nspec:\n  peerAddress: %s\n  sourceAddress: %s\n  peerASN: %d\n  myASN: %d\n  nodeSelector: {matchLabels: {bfdbench: \"yes\"}}\n  bfd: {enabled: %t, receiveInterval: 100ms, transmitInterval: 100ms}\n",
				i, routerAddrs[i], nodeAddrs[i], rig.RouterASN, rig.NodeASN, bfdOn)
		}
		return sb.String()
	}
	if err := x.apply(ctx, peers(true)); err != nil {
		return err
	}
	if err := waitRouterBFD(ctx, b, 3+bfdSessions); err != nil {
		return err
	}
	bfdd, err := b.Router.Pid("bfdd")
	if err != nil {
		return err
	}
	var frrBFD float64
	done := make(chan error, 1)
	go func() {
		var err error
		frrBFD, err = cpuFraction(bfdd, 20*time.Second)
		done <- err
	}()
	withBFD, err := cpuFraction(n.Speaker.Pid(), 20*time.Second)
	if err := errors.Join(err, <-done); err != nil {
		return err
	}
	if err := x.apply(ctx, peers(false)); err != nil {
		return err
	}
	err = rig.Eventually(60*time.Second, func() error {
		st, err := b.SpeakerGet(ctx, n, "/bgp")
		if err != nil {
			return err
		}
		if c := strings.Count(st, `"bfd":`); c > 1 {
			return fmt.Errorf("%s's speaker still has %d BFD sessions", n.Name, c)
		}
		if c := strings.Count(st, `"Established"`); c < 1+bfdSessions {
			return fmt.Errorf("%s's speaker has %d sessions established", n.Name, c)
		}
		return nil
	})
	if err != nil {
		return err
	}
	without, err := cpuFraction(n.Speaker.Pid(), 20*time.Second)
	if err != nil {
		return err
	}
	report("bfd_cpu_100_sessions_100ms", 100*withBFD, "%cpu")
	report("bfd_cpu_100_sessions_off", 100*without, "%cpu")
	report("bfd_cpu_per_session", 100*(withBFD-without)/bfdSessions, "%cpu")
	// FRR's bfdd (C, one thread) runs these 100 sessions and the three
	// nodes' at once: the same work from the other end, for scale.
	report("bfd_cpu_frr_bfdd_103_sessions_100ms", 100*frrBFD, "%cpu")
	if out, err := x.cp.Kubectl(ctx, "delete", "bgppeer", "-l", "bench=bfd", "--wait"); err != nil {
		return fmt.Errorf("deleting the CPU peers: %w\n%s", err, out)
	}
	return nil
}

// cpuFraction is the share of one core process pid used over d.
func cpuFraction(pid int, d time.Duration) (float64, error) {
	t0, err := procs.CPUTime(pid)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	time.Sleep(d)
	t1, err := procs.CPUTime(pid)
	if err != nil {
		return 0, err
	}
	return (t1 - t0).Seconds() / time.Since(start).Seconds(), nil
}
