package rig

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// EchoPort is where StartEcho's echo servers listen on every node (and
// every address routed locally there, so on the VIPs).
const EchoPort = 8081

// echoes holds each rig's echo servers (*L2 -> *echoState; a BGP rig's
// are its L2's): see (*L2).StartEcho.
var echoes sync.Map

type echoState struct {
	mu      sync.Mutex
	servers map[string]*netrig.EchoServer // by node name
}

// BGPFailover is one measured silent failure of a node advertising a VIP.
type BGPFailover struct {
	// Node is the node whose link went down.
	Node string
	// Outage runs from the failure to the start of the client's first
	// successful connection after its last failed one (0: none failed).
	Outage time.Duration
	// Failed counts the client's failed connections.
	Failed int
	// RouteGone is how long the router's kernel kept routing the VIP via
	// the node.
	RouteGone time.Duration
}

// vipHops returns the prefix routing vip and the next hops the router
// should have for it when every node advertises it.
func (b *BGP) vipHops(vip netip.Addr) (netip.Prefix, []string) {
	var hops []string
	for _, n := range b.Nodes {
		hops = append(hops, nodeHop(n, vip))
	}
	return netip.PrefixFrom(vip, vip.BitLen()), hops
}

// nodeHop returns n's next-hop address for vip's family.
func nodeHop(n *L2Node, vip netip.Addr) string {
	if vip.Is4() {
		return n.IPv4.String()
	}
	return n.IPv6.String()
}

// MeasureSilentLoss pulls the cable of one node routing vip (the last by
// name) while the outside client opens a connection every 10 ms, and
// measures how long the router kept the route via the node and how long
// the client was hurt. It then plugs the cable back and waits until the
// router routes via the node again, so trials can repeat.
func (b *BGP) MeasureSilentLoss(ctx context.Context, vip netip.Addr) (BGPFailover, error) {
	prefix, all := b.vipHops(vip)
	if _, err := b.WaitNextHops(prefix, all, 30*time.Second); err != nil {
		return BGPFailover{}, fmt.Errorf("before the failure: %w", err)
	}
	probe := b.Outside.StartProbe(netip.AddrPortFrom(vip, ServicePort), ProbeInterval, ProbeTimeout)
	defer probe.Stop()
	time.Sleep(200 * time.Millisecond)
	hops, err := b.Router.KernelNextHops(prefix)
	if err != nil {
		return BGPFailover{}, fmt.Errorf("router's next hops for %s: %w", prefix, err)
	}
	var n *L2Node
	for _, c := range b.Nodes {
		if slices.Contains(hops, nodeHop(c, vip)) && (n == nil || c.Name > n.Name) {
			n = c
		}
	}
	if n == nil {
		return BGPFailover{}, fmt.Errorf("the router routes %s via %v, no node", prefix, hops)
	}
	hop := nodeHop(n, vip)
	res := BGPFailover{Node: n.Name}

	failedAt := time.Now()
	if err := n.Host.SetLink(false); err != nil {
		return res, err
	}
	var gone error
	for {
		hops, err := b.Router.KernelNextHops(prefix)
		if err == nil && !slices.Contains(hops, hop) {
			res.RouteGone = time.Since(failedAt)
			break
		}
		if time.Since(failedAt) > 15*time.Second {
			gone = fmt.Errorf("the router still routes %s via %s (%v, %v) 15s after its link went down", prefix, n.Name, hops, err)
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if gone == nil {
		time.Sleep(time.Until(failedAt.Add(res.RouteGone + time.Second)))
	}
	rs := probe.Stop()
	var lastFail time.Time
	for _, r := range rs {
		if !r.OK && r.At.After(failedAt.Add(-ProbeTimeout)) {
			res.Failed++
			lastFail = r.At
		}
	}
	if res.Failed > 0 {
		res.Outage = netrig.NeverRecovered
		for _, r := range rs {
			if r.OK && r.At.After(lastFail) {
				res.Outage = max(0, r.At.Sub(failedAt))
				break
			}
		}
		if res.Outage == netrig.NeverRecovered && gone == nil {
			gone = fmt.Errorf("the client did not recover within 1s of the route via %s going", n.Name)
		}
	}

	rerr := n.Host.SetLink(true)
	if rerr == nil {
		rerr = Eventually(30*time.Second, func() error {
			hops, err := b.Router.KernelNextHops(prefix)
			if err != nil {
				return err
			}
			if !slices.Contains(hops, hop) {
				return fmt.Errorf("the router routes %s via %v, not yet via %s", prefix, hops, n.Name)
			}
			return nil
		})
	}
	if rerr != nil {
		rerr = fmt.Errorf("repairing %s: %w", n.Name, rerr)
	}
	if err := errors.Join(gone, rerr); err != nil {
		return res, fmt.Errorf("silent loss of %s: %w", n.Name, err)
	}
	return res, nil
}

// RollingResult is what clients saw while every node's speaker restarted
// in turn.
type RollingResult struct {
	// Restarts counts the speakers restarted.
	Restarts int
	// FailedConnections counts the outside client's failed new
	// connections (one every 10 ms), out of Attempts.
	FailedConnections int
	// BrokenHolders counts the long-lived connections that broke, out of
	// Holders opened.
	BrokenHolders int
	Holders       int
	Attempts      int
	// Breaks say when (since the first signal, and during which node's
	// restart) and why each long-lived connection broke.
	Breaks []string
	// PerNode is, for each node in name order, the time from the signal to
	// the router routing the VIP via every node again with the node's
	// session Established.
	PerNode []time.Duration
}

// RollingRestart restarts every node's speaker in name order, as a
// DaemonSet update (sig SIGTERM) or a crash (SIGKILL) does, each once the
// previous one is back: its route in the router's kernel and its session
// in FRR. Meanwhile the outside client opens a connection to vip every
// 10 ms and holds holders long-lived connections to the nodes' echo
// servers, echoing every 50 ms.
func (b *BGP) RollingRestart(ctx context.Context, vip netip.Addr, holders int, sig syscall.Signal) (RollingResult, error) {
	var res RollingResult
	if err := b.StartEcho(); err != nil {
		return res, err
	}
	prefix, all := b.vipHops(vip)
	if _, err := b.WaitNextHops(prefix, all, 60*time.Second); err != nil {
		return res, fmt.Errorf("before the restarts: %w", err)
	}
	probe := b.Outside.StartProbe(netip.AddrPortFrom(vip, ServicePort), ProbeInterval, ProbeTimeout)
	defer probe.Stop()
	hs := b.Outside.StartHolders(netip.AddrPortFrom(vip, EchoPort), holders, 50*time.Millisecond, time.Second)
	defer hs.Stop()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := hs.Ready(rctx)
	cancel()
	if err != nil {
		return res, fmt.Errorf("holders to %s: %w", vip, err)
	}

	type phase struct {
		node string
		at   time.Time
	}
	var phases []phase
	// finish fills in what the clients saw, also after an error.
	finish := func() {
		rs := probe.Stop()
		st := hs.Stop()
		res.Attempts = len(rs)
		res.FailedConnections = len(netrig.Failures(rs))
		res.Holders, res.BrokenHolders = st.Opened, st.Broken
		for _, br := range st.Breaks {
			during, since := "before the first restart", time.Duration(0)
			for _, p := range phases {
				if !br.At.Before(p.at) {
					during, since = "during "+p.node, br.At.Sub(phases[0].at)
				}
			}
			res.Breaks = append(res.Breaks, fmt.Sprintf("+%s (%s): %s", since.Round(time.Millisecond), during, br.Err))
		}
	}
	nodes := slices.Clone(b.Nodes)
	slices.SortFunc(nodes, func(x, y *L2Node) int { return strings.Compare(x.Name, y.Name) })
	for _, n := range nodes {
		at := time.Now()
		phases = append(phases, phase{n.Name, at})
		err := func() error {
			if err := n.Speaker.Signal(sig); err != nil {
				return fmt.Errorf("signalling %s's speaker: %w", n.Name, err)
			}
			if err := n.Speaker.Wait(10 * time.Second); err != nil {
				return fmt.Errorf("after %s: %w", sig, err)
			}
			if err := b.RestartSpeaker(ctx, n); err != nil {
				return fmt.Errorf("restarting %s's speaker: %w", n.Name, err)
			}
			res.Restarts++
			if err := b.waitBack(ctx, n, at, prefix, all, 60*time.Second); err != nil {
				return fmt.Errorf("after restarting %s's speaker: %w", n.Name, err)
			}
			return nil
		}()
		if err != nil {
			finish()
			return res, fmt.Errorf("rolling restart (%s): %w", sig, err)
		}
		res.PerNode = append(res.PerNode, time.Since(at))
	}
	time.Sleep(500 * time.Millisecond)
	finish()
	return res, nil
}

// waitBack waits until the router's kernel routes prefix via exactly all,
// FRR has an Established session with n that came up after since (n's
// speaker was restarted), and none of FRR's paths for prefix is stale
// (kept by graceful restart, not yet advertised again).
func (b *BGP) waitBack(ctx context.Context, n *L2Node, since time.Time, prefix netip.Prefix, all []string, timeout time.Duration) error {
	all = slices.Sorted(slices.Values(all))
	deadline := time.Now().Add(timeout)
	for {
		err := func() error {
			hops, err := b.Router.KernelNextHops(prefix)
			if err != nil {
				return err
			}
			if !slices.Equal(hops, all) {
				return fmt.Errorf("the router routes %s via %v, want %v", prefix, hops, all)
			}
			nb, err := b.Router.Neighbors(ctx)
			if err != nil {
				return err
			}
			if s := nb[n.IPv4.String()]; s.State != "Established" || time.Duration(s.UpMsec)*time.Millisecond > time.Since(since) {
				return fmt.Errorf("FRR's session with %s (%s) is %q for %dms, not yet the restarted speaker's", n.Name, n.IPv4, s.State, s.UpMsec)
			}
			paths, err := b.Router.Paths(ctx, prefix)
			if err != nil {
				return err
			}
			for _, p := range paths {
				if p.Stale {
					return fmt.Errorf("FRR's path for %s via %v is still stale", prefix, p.Nexthops)
				}
			}
			return nil
		}()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || time.Now().After(deadline) {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
