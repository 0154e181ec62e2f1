package main

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
)

// bgpSteps advertises a Service over BGP and reaches it from behind the
// router.
func (d *demo) bgpSteps(ctx context.Context, logs func() []string) error {
	fmt.Println()
	var vip netip.Addr
	var route string
	err := d.do(ctx, "BGP: a BGPPeer for the router (BFD, graceful restart), a BGP pool and svc-bgp (test/demo/sample-bgp.yaml); waiting for the router's ECMP route", logs, func() error {
		// The router runs BFD for the nodes at the BGPPeer's default
		// timers.
		if err := d.bgp.RouterBFD(ctx, 300, 300); err != nil {
			return err
		}
		if err := waitFor(ctx, 30*time.Second, func() error {
			_, err := d.cp.KubectlStdin(ctx, sampleBGP, "apply", "-f", "-")
			return err
		}); err != nil {
			return err
		}
		if err := waitFor(ctx, 30*time.Second, func() error {
			svc, err := d.cp.Client.CoreV1().Services("default").Get(ctx, "svc-bgp", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(svc.Status.LoadBalancer.Ingress) == 0 {
				return fmt.Errorf("svc-bgp has no EXTERNAL-IP yet")
			}
			vip, err = netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
			return err
		}); err != nil {
			return err
		}
		var nodes []string
		for _, n := range d.bgp.Nodes {
			nodes = append(nodes, n.IPv4.String())
		}
		if _, err := d.bgp.WaitNextHops(netip.PrefixFrom(vip, 32), nodes, 60*time.Second); err != nil {
			return err
		}
		if err := waitFor(ctx, 30*time.Second, func() error {
			out, err := d.cp.Kubectl(ctx, "get", "bgppeer", "router", "-o", "jsonpath={.status.summary}")
			if err == nil && out != "Established 3/3, BFD Up 3/3" {
				err = fmt.Errorf("BGPPeer router: %q, want Established 3/3, BFD Up 3/3", out)
			}
			return err
		}); err != nil {
			return err
		}
		out, err := d.bgp.Router.Host.Run("ip", "route", "show", vip.String())
		route = strings.TrimSpace(out)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("  the router's kernel (FRR installed it):\n%s\n", indent(route))
	if err := d.kubectl(ctx, "get", "bgppeers"); err != nil {
		return err
	}

	var answered []string
	err = d.do(ctx, fmt.Sprintf("Reaching svc-bgp (%s) from the client behind the router", vip), logs, func() error {
		seen := map[string]int{}
		for i := 0; i < 30; i++ {
			node, err := d.bgp.ReachFromOutside(ctx, vip, 2*time.Second)
			if err != nil {
				return fmt.Errorf("connection %d: %w", i+1, err)
			}
			seen[node]++
		}
		if len(seen) < 2 {
			return fmt.Errorf("30 connections all reached %v: no ECMP", seen)
		}
		for n, c := range seen {
			answered = append(answered, fmt.Sprintf("%s %d", n, c))
		}
		slices.Sort(answered)
		return nil
	})
	if err != nil {
		return err
	}
	fmt.Printf("  30 connections from %s were answered by: %s\n", d.bgp.Outside.Name, strings.Join(answered, ", "))
	fmt.Println("  one VIP, every node serving it (ECMP)")

	var f rig.BGPFailover
	err = d.do(ctx, "BGP: pulling a node's cable while the client connects every 10 ms; BFD tells the router", logs, func() error {
		var err error
		f, err = d.bgp.MeasureSilentLoss(ctx, vip)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Printf("  the router dropped %s's route %s after its link went down (BFD 300ms × 3; BGP's hold time alone: 90s);\n", f.Node, f.RouteGone.Round(time.Millisecond))
	fmt.Printf("  %d of the client's connections failed, over %s; the node is back\n", f.Failed, f.Outage.Round(time.Millisecond))
	return nil
}
