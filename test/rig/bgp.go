package rig

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
)

// The BGP rig is the layer-2 rig plus a router on the nodes' LAN running
// FRR, which peers with every node's speaker (dynamic neighbors in the
// nodes' subnet) and spreads traffic over them with ECMP, and an outside
// client on a second segment behind the router: every figure is seen from
// off the nodes' subnet.
var (
	RouterV4     = pfx(LANv4, 1)
	RouterV6     = pfx(LANv6, 1)
	OutsideV4    = netip.MustParsePrefix("203.0.113.0/24")
	OutsideV6    = netip.MustParsePrefix("2001:db8:200::/64")
	BGPPoolV4    = netip.MustParsePrefix("198.51.100.0/26")
	BGPPoolV6    = netip.MustParsePrefix("2001:db8:300::/116")
	RouterASN    = uint32(64512)
	NodeASN      = uint32(64513)
	outsideRtrV4 = netip.MustParsePrefix("203.0.113.1/24")
	outsideRtrV6 = netip.MustParsePrefix("2001:db8:200::1/64")
	outsideCliV4 = netip.MustParsePrefix("203.0.113.10/24")
	outsideCliV6 = netip.MustParsePrefix("2001:db8:200::10/64")
)

// BGP is the BGP rig.
type BGP struct {
	*L2
	Router  *frr.Router
	Outside *netrig.Host
}

// routerConfig is FRR's bgpd configuration: passive dynamic neighbors for
// the nodes' subnet (the speakers dial), ECMP over up to 16 nodes, no eBGP
// policy requirement. extra lines go into the router section.
func routerConfig(extra string) string {
	return fmt.Sprintf(`router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor nodes peer-group
 neighbor nodes remote-as %d
 neighbor nodes timers 3 9
 bgp listen range %s peer-group nodes
 bgp listen range %s peer-group nodes
%s address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
 address-family ipv6 unicast
  neighbor nodes activate
  maximum-paths 16
 exit-address-family
`, RouterASN, RouterV4.Addr(), NodeASN, LANv4, LANv6, extra)
}

// StartBGP starts the layer-2 rig (its pools and the BGP pools routed
// locally on the nodes) on lan, then the router and the outside client on
// upstream. routerExtra adds lines to FRR's router section (a password).
func StartBGP(ctx context.Context, cp *controlplane.ControlPlane, lan, upstream *netrig.LAN, opts L2Options, routerExtra string) (*BGP, error) {
	opts.ExtraPrefixes = append(opts.ExtraPrefixes, BGPPoolV4, BGPPoolV6)
	l2, err := StartL2(ctx, cp, lan, opts)
	if err != nil {
		return nil, err
	}
	b := &BGP{L2: l2}
	rh, err := lan.AddHost("router", RouterV4, RouterV6)
	if err != nil {
		return nil, err
	}
	if err := rh.AttachTo(upstream, "eth1", outsideRtrV4, outsideRtrV6); err != nil {
		return nil, err
	}
	if b.Outside, err = upstream.AddHost("outside", outsideCliV4, outsideCliV6); err != nil {
		return nil, err
	}
	if err := b.Outside.AddRoute(netip.MustParsePrefix("0.0.0.0/0"), outsideRtrV4.Addr()); err != nil {
		return nil, err
	}
	if err := b.Outside.AddRoute(netip.MustParsePrefix("::/0"), outsideRtrV6.Addr()); err != nil {
		return nil, err
	}
	for _, n := range l2.Nodes {
		if err := b.routeOutside(n); err != nil {
			return nil, err
		}
	}
	if b.Router, err = frr.Start(rh, routerConfig(routerExtra)); err != nil {
		return nil, err
	}
	return b, nil
}

// routeOutside routes the outside segment via the router from a node.
func (b *BGP) routeOutside(n *L2Node) error {
	if err := n.Host.AddRoute(OutsideV4, RouterV4.Addr()); err != nil {
		return err
	}
	return n.Host.AddRoute(OutsideV6, RouterV6.Addr())
}

// RouterBFD turns BFD on in the router for the nodes' sessions, with a
// profile of rx and tx milliseconds (FRR: bfdd, "neighbor nodes bfd").
func (b *BGP) RouterBFD(ctx context.Context, rx, tx int) error {
	return b.Router.Configure(ctx, "bfd", "profile fast", fmt.Sprintf("receive-interval %d", rx), fmt.Sprintf("transmit-interval %d", tx),
		"exit", "exit", fmt.Sprintf("router bgp %d", RouterASN), "neighbor nodes bfd", "neighbor nodes bfd profile fast")
}

// WaitSessionsRenewed waits until the router has an Established session
// with every node that came up after since (a changed capability or hold
// time renews them).
func (b *BGP) WaitSessionsRenewed(ctx context.Context, since time.Time, timeout time.Duration) error {
	return Eventually(timeout, func() error {
		nb, err := b.Router.Neighbors(ctx)
		if err != nil {
			return err
		}
		for _, n := range b.Nodes {
			if s := nb[n.IPv4.String()]; s.State != "Established" || time.Duration(s.UpMsec)*time.Millisecond > time.Since(since) {
				return fmt.Errorf("session with %s %s for %dms, not renewed since %s", n.Name, s.State, s.UpMsec, since.Format(time.StampMilli))
			}
		}
		return nil
	})
}

// Stop stops the router and the layer-2 rig.
func (b *BGP) Stop() {
	if b.Router != nil {
		_ = b.Router.Close()
	}
	b.L2.Stop()
}

// ReachFromOutside connects from the outside client, through the router,
// to vip's service port and returns the answering node's name.
func (b *BGP) ReachFromOutside(ctx context.Context, vip netip.Addr, timeout time.Duration) (string, error) {
	return reach(ctx, b.Outside, vip, timeout)
}

// KillSpeaker SIGKILLs the node's speaker (its BGP sessions drop with it).
func (b *BGP) KillSpeaker(n *L2Node) error { return n.Speaker.Kill() }

// RestartSpeaker starts the node's speaker again after KillSpeaker and
// waits until the CCM took it over.
func (b *BGP) RestartSpeaker(ctx context.Context, n *L2Node) error {
	_ = n.Speaker.Wait(5 * time.Second)
	n.restarts++
	if err := b.startSpeaker(ctx, n, fmt.Sprintf("speaker-%s-%d", n.Name, n.restarts)); err != nil {
		return err
	}
	return n.Speaker.WaitForLog(tookOver, 20*time.Second)
}

// WaitNextHops waits until the router's kernel routes prefix via exactly
// want (none: no route), and returns how long that took.
func (b *BGP) WaitNextHops(prefix netip.Prefix, want []string, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	want = slices.Clone(want)
	slices.Sort(want)
	err := Eventually(timeout, func() error {
		hops, err := b.Router.KernelNextHops(prefix)
		if err != nil {
			return err
		}
		if !slices.Equal(hops, want) {
			return fmt.Errorf("router's kernel route to %s via %v, want %v", prefix, hops, want)
		}
		return nil
	})
	return time.Since(start), err
}
