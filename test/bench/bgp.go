package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// benchBGP measures, on the BGP rig (real CCM with deploy/'s RBAC and the
// binary's defaults, real speakers, FRR as the router, a client behind
// it): Service created → ECMP route in the router's kernel → first
// connection from behind the router; Service deleted → route gone; how
// long the client is cut off when one advertising speaker (and its node's
// responder) is killed; and 1000 VIPs from 3 nodes in the router's kernel.
func benchBGP(ctx context.Context, trials int) error {
	trials = max(trials, minL2Trials)
	x, err := startBGPBench(ctx)
	if err != nil {
		return err
	}
	defer x.Close()
	cp, b, fail := x.cp, x.b, x.fail
	err = x.apply(ctx, fmt.Sprintf(`apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata: {name: tor}
spec: {peerAddress: %s, peerASN: %d, myASN: %d}
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: bgp}
spec:
  addresses: [%s, %s]
  bgp: {}
`, rig.RouterV4.Addr(), rig.RouterASN, rig.NodeASN, rig.BGPPoolV4, rig.BGPPoolV6))
	if err != nil {
		return err
	}
	var all []string
	for _, n := range b.Nodes {
		all = append(all, n.IPv4.String())
	}
	// The sessions come up once; the figures start from there.
	warm := "warm-up"
	if _, err := cp.Client.CoreV1().Services("default").Create(ctx, lbService(warm), metav1.CreateOptions{}); err != nil {
		return err
	}
	vip, err := waitVIP(ctx, cp, warm)
	if err != nil {
		return fail(err)
	}
	if _, err := b.WaitNextHops(netip.PrefixFrom(vip, 32), all, 60*time.Second); err != nil {
		return fail(err)
	}

	var toRoute, toReach, withdraw []float64
	for i := range trials {
		name := fmt.Sprintf("route-%d", i)
		start := time.Now()
		if _, err := cp.Client.CoreV1().Services("default").Create(ctx, lbService(name), metav1.CreateOptions{}); err != nil {
			return err
		}
		vip, err := waitVIP(ctx, cp, name)
		if err != nil {
			return fail(err)
		}
		host := netip.PrefixFrom(vip, 32)
		var routed, reached time.Duration
		deadline := start.Add(30 * time.Second)
		for routed == 0 || reached == 0 {
			if routed == 0 {
				if hops, err := b.Router.KernelNextHops(host); err == nil && slices.Equal(hops, all) {
					routed = time.Since(start)
				}
			}
			if reached == 0 {
				if _, err := b.ReachFromOutside(ctx, vip, 100*time.Millisecond); err == nil {
					reached = time.Since(start)
				}
			}
			if time.Now().After(deadline) {
				return fail(fmt.Errorf("%s (%s): route after %s, reached after %s (0: not yet) within 30 s", name, vip, routed, reached))
			}
			time.Sleep(2 * time.Millisecond)
		}
		toRoute = append(toRoute, routed.Seconds())
		toReach = append(toReach, reached.Seconds())
		del := time.Now()
		if err := cp.Client.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
		if _, err := b.WaitNextHops(host, nil, 30*time.Second); err != nil {
			return fail(err)
		}
		withdraw = append(withdraw, time.Since(del).Seconds())
	}
	report("bgp_service_create_to_route_p50", median(toRoute), "s")
	report("bgp_service_create_to_reachable_p50", median(toReach), "s")
	report("bgp_withdraw_on_delete_p50", median(withdraw), "s")

	// Speaker crash: SIGKILL one advertising speaker and stop its node's
	// responder; new connections from behind the router fail while the
	// router still sends some of them to that node.
	var cutoffs []float64
	target := netip.AddrPortFrom(vip, rig.ServicePort)
	for i := range trials {
		n := b.Nodes[i%len(b.Nodes)]
		probe := b.Outside.StartProbe(target, 5*time.Millisecond, 300*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		killed := time.Now()
		n.Responder.SetServing(false)
		if err := b.KillSpeaker(n); err != nil {
			probe.Stop()
			return err
		}
		var rest []string
		for _, h := range all {
			if h != n.IPv4.String() {
				rest = append(rest, h)
			}
		}
		if _, err := b.WaitNextHops(netip.PrefixFrom(vip, 32), rest, 30*time.Second); err != nil {
			probe.Stop()
			return fail(err)
		}
		time.Sleep(500 * time.Millisecond) // probes that started before the route changed finish
		rs := probe.Stop()
		cut := 0.0
		for _, r := range rs {
			if !r.OK && r.At.After(killed) {
				cut = max(cut, r.At.Sub(killed).Seconds())
			}
		}
		cutoffs = append(cutoffs, cut)
		n.Responder.SetServing(true)
		if err := b.RestartSpeaker(ctx, n); err != nil {
			return fail(err)
		}
		if _, err := b.WaitNextHops(netip.PrefixFrom(vip, 32), all, 60*time.Second); err != nil {
			return fail(err)
		}
	}
	report("bgp_failover_speaker_crash_p50", median(cutoffs), "s")
	report("bgp_failover_speaker_crash_max", slices.Max(cutoffs), "s")

	// 1000 IPv6 VIPs (the IPv4 documentation ranges are too small).
	const many = 1000
	names := make(chan string)
	var wg sync.WaitGroup
	var createErr error
	var mu sync.Mutex
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for name := range names {
				svc := lbService(name)
				svc.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
				if _, err := cp.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					mu.Lock()
					createErr = err
					mu.Unlock()
				}
			}
		}()
	}
	for i := range many {
		names <- fmt.Sprintf("many-%d", i)
	}
	close(names)
	wg.Wait()
	if createErr != nil {
		return createErr
	}
	lastCreate := time.Now()
	deadline := lastCreate.Add(5 * time.Minute)
	for {
		n, err := ecmpRoutes(b, rig.BGPPoolV6, len(all))
		if err != nil {
			return fail(err)
		}
		if n >= many {
			break
		}
		if time.Now().After(deadline) {
			return fail(fmt.Errorf("%d of %d IPv6 VIPs routed over %d nodes after 5 min", n, many, len(all)))
		}
		time.Sleep(50 * time.Millisecond)
	}
	report("bgp_1000_vips_routes_installed_s", time.Since(lastCreate).Seconds(), "s")
	return nil
}

// bgpBench is the BGP rig the bgp and bfd groups measure on: a control
// plane with deploy/ applied, the CCM with the binary's defaults, three
// nodes' speakers, FRR as the router and a client behind it.
type bgpBench struct {
	cp      *controlplane.ControlPlane
	b       *rig.BGP
	closers []func()
}

func startBGPBench(ctx context.Context) (x *bgpBench, err error) {
	if err := netrig.Usable(); err != nil {
		return nil, fmt.Errorf("network namespaces: %w", err)
	}
	if err := frr.Usable(); err != nil {
		return nil, err
	}
	x = &bgpBench{}
	defer func() {
		if err != nil {
			x.Close()
		}
	}()
	if x.cp, err = controlplane.Start(ctx, controlplane.Options{}); err != nil {
		return nil, err
	}
	cp := x.cp
	x.closers = append(x.closers, func() { _ = cp.Stop() })
	var lans [2]*netrig.LAN
	for i := range lans {
		if lans[i], err = netrig.NewLANNoTest(); err != nil {
			return nil, err
		}
		l := lans[i]
		x.closers = append(x.closers, func() { _ = l.Close() })
	}
	kubeconfig, err := rig.InstallDeploy(ctx, x.cp)
	if err != nil {
		return nil, err
	}
	if x.b, err = rig.StartBGP(ctx, x.cp, lans[0], lans[1], rig.L2Options{Kubeconfig: kubeconfig}, ""); err != nil {
		return nil, err
	}
	x.closers = append(x.closers, x.b.Stop)
	return x, nil
}

// Close stops the rig.
func (x *bgpBench) Close() {
	for _, c := range slices.Backward(x.closers) {
		c()
	}
}

// fail prints the processes' and FRR's logs with err.
func (x *bgpBench) fail(err error) error {
	fmt.Fprintf(os.Stderr, "process logs:\n%s\nbgpd:\n%s\nbfdd:\n%s\n", x.b.Logs(30), x.b.Router.Log("bgpd"), x.b.Router.Log("bfdd"))
	return err
}

// apply applies objects (the CRDs may still be settling).
func (x *bgpBench) apply(ctx context.Context, objs string) error {
	return rig.Eventually(30*time.Second, func() error {
		if out, err := x.cp.KubectlStdin(ctx, objs, "apply", "-f", "-"); err != nil {
			return fmt.Errorf("applying %.200s: %w\n%s", objs, err, out)
		}
		return nil
	})
}

// ecmpRoutes counts the routes in the router's kernel inside prefix with
// hops next hops.
func ecmpRoutes(b *rig.BGP, prefix netip.Prefix, hops int) (int, error) {
	out, err := b.Router.Host.Run("ip", "-j", "-6", "route", "show", "proto", "bgp")
	if err != nil {
		return 0, err
	}
	var routes []struct {
		Dst      string            `json:"dst"`
		Nexthops []json.RawMessage `json:"nexthops"`
	}
	if err := json.Unmarshal([]byte(out), &routes); err != nil {
		return 0, err
	}
	n := 0
	for _, r := range routes {
		p, err := netip.ParsePrefix(r.Dst)
		if err != nil {
			a, aerr := netip.ParseAddr(r.Dst)
			if aerr != nil {
				continue
			}
			p = netip.PrefixFrom(a, 128)
		}
		if prefix.Contains(p.Addr()) && len(r.Nexthops) == hops {
			n++
		}
	}
	return n, nil
}
