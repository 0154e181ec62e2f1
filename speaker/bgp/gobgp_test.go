package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
)

func skipUnlessRig(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("needs network namespaces and FRR")
	}
	if err := netrig.Usable(); err != nil {
		t.Skip(err)
	}
	if err := frr.Usable(); err != nil {
		t.Skip(err)
	}
}

// rig is a LAN with an FRR router (AS 64512, 192.0.2.1, 2001:db8::1) and
// one node (192.0.2.11, 2001:db8::11) running GoBGP in a helper.
type rig struct {
	router *frr.Router
	node   *helper
}

const frrBase = `router bgp 64512
 bgp router-id 192.0.2.1
 no bgp ebgp-requires-policy
 bgp bestpath as-path multipath-relax
 neighbor 192.0.2.11 remote-as 64513
 neighbor 192.0.2.11 timers connect 1
%s address-family ipv4 unicast
  maximum-paths 8
 exit-address-family
 address-family ipv6 unicast
  neighbor 192.0.2.11 activate
  maximum-paths 8
 exit-address-family
`

func newRig(t *testing.T, extra string) *rig {
	t.Helper()
	skipUnlessRig(t)
	lan := netrig.NewLAN(t)
	rh, err := lan.AddHost("router", netip.MustParsePrefix("192.0.2.1/24"), netip.MustParsePrefix("2001:db8::1/64"))
	if err != nil {
		t.Fatal(err)
	}
	nh, err := lan.AddHost("node", netip.MustParsePrefix("192.0.2.11/24"), netip.MustParsePrefix("2001:db8::11/64"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := frr.Start(rh, fmt.Sprintf(frrBase, extra))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("bgpd log:\n%s", r.Log("bgpd"))
		}
		r.Close()
	})
	return &rig{router: r, node: startHelper(t, nh)}
}

var (
	routerAddr = netip.MustParseAddr("192.0.2.1")
	nodeAddr   = netip.MustParseAddr("192.0.2.11")
)

func nodeDesired(password string, exports map[Export]Attributes) Desired {
	return Desired{
		ASN: 64513, RouterID: nodeAddr, NextHopV6: netip.MustParseAddr("2001:db8::11"),
		Peers: []Peer{{
			Address: routerAddr, PeerASN: 64512, MyASN: 64513,
			HoldTime: 9 * time.Second, ConnectRetry: time.Second, Password: password,
		}},
		Exports: exports,
	}
}

func (r *rig) waitEstablished(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	err := eventually(30*time.Second, func() error {
		n, err := r.router.Neighbors(ctx)
		if err != nil {
			return err
		}
		if s := n["192.0.2.11"].State; s != "Established" {
			return fmt.Errorf("FRR's session with the node is %q", s)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// wantRoute waits until FRR's paths for prefix satisfy check.
func (r *rig) wantRoute(t *testing.T, prefix netip.Prefix, check func([]frr.Path) error) {
	t.Helper()
	ctx := context.Background()
	err := eventually(15*time.Second, func() error {
		paths, err := r.router.Paths(ctx, prefix)
		if err != nil {
			return err
		}
		return check(paths)
	})
	if err != nil {
		t.Fatalf("%s: %v", prefix, err)
	}
}

func onePath(check func(frr.Path) error) func([]frr.Path) error {
	return func(ps []frr.Path) error {
		if len(ps) != 1 {
			return fmt.Errorf("%d paths, want 1: %+v", len(ps), ps)
		}
		return check(ps[0])
	}
}

func noPath(ps []frr.Path) error {
	if len(ps) != 0 {
		return fmt.Errorf("still %d paths: %+v", len(ps), ps)
	}
	return nil
}

func communities(p frr.Path) (std, large string) {
	if p.Community != nil {
		std = p.Community.String
	}
	if p.LargeCommunity != nil {
		large = p.LargeCommunity.String
	}
	return std, large
}

// TestGoBGPAgainstFRR: a real gobgp session with FRR carries the IPv4 and
// IPv6 (over the IPv4 session) VIPs with their next hops and attributes
// into FRR's table and the router's kernel; attribute changes and
// withdrawals reach FRR.
func TestGoBGPAgainstFRR(t *testing.T) {
	r := newRig(t, "")
	v4 := netip.MustParsePrefix("198.51.100.7/32")
	v6 := netip.MustParsePrefix("2001:db8:5::7/128")
	r.node.apply(nodeDesired("", map[Export]Attributes{
		{routerAddr, v4}: {Communities: []string{"65000:100", "no-export"}, LargeCommunities: []string{"65000:1:2"}},
		{routerAddr, v6}: {},
	}))
	r.waitEstablished(t)
	r.wantRoute(t, v4, onePath(func(p frr.Path) error {
		std, large := communities(p)
		if std != "65000:100 no-export" || large != "65000:1:2" {
			return fmt.Errorf("communities %q, large %q", std, large)
		}
		if len(p.Nexthops) == 0 || p.Nexthops[0].IP != "192.0.2.11" {
			return fmt.Errorf("next hops %+v, want 192.0.2.11", p.Nexthops)
		}
		return nil
	}))
	r.wantRoute(t, v6, onePath(func(p frr.Path) error {
		if !slices.ContainsFunc(p.Nexthops, func(n struct {
			IP string `json:"ip"`
		}) bool {
			return n.IP == "2001:db8::11"
		}) {
			return fmt.Errorf("next hops %+v, want 2001:db8::11", p.Nexthops)
		}
		return nil
	}))
	err := eventually(10*time.Second, func() error {
		for _, p := range []netip.Prefix{v4, v6} {
			hops, err := r.router.KernelNextHops(p)
			if err != nil {
				return err
			}
			want := "192.0.2.11"
			if p.Addr().Is6() {
				want = "2001:db8::11"
			}
			if !slices.Equal(hops, []string{want}) {
				return fmt.Errorf("kernel route of %s via %v, want %s", p, hops, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// New attributes on an advertised path reach FRR (a refresh).
	r.node.apply(nodeDesired("", map[Export]Attributes{
		{routerAddr, v4}: {Communities: []string{"65000:200"}},
		{routerAddr, v6}: {},
	}))
	r.wantRoute(t, v4, onePath(func(p frr.Path) error {
		if std, large := communities(p); std != "65000:200" || large != "" {
			return fmt.Errorf("communities %q, large %q; want 65000:200 only", std, large)
		}
		return nil
	}))

	// Both families with the same attributes (gobgp keeps each family
	// in its own prefix set).
	v4b := netip.MustParsePrefix("198.51.100.17/32")
	r.node.apply(nodeDesired("", map[Export]Attributes{
		{routerAddr, v4}:  {Communities: []string{"65000:200"}},
		{routerAddr, v6}:  {},
		{routerAddr, v4b}: {},
	}))
	r.wantRoute(t, v4b, onePath(func(frr.Path) error { return nil }))

	// Withdrawn: gone from FRR; the other stays.
	r.node.apply(nodeDesired("", map[Export]Attributes{{routerAddr, v6}: {}}))
	r.wantRoute(t, v4, noPath)
	r.wantRoute(t, v4b, noPath)
	r.wantRoute(t, v6, onePath(func(frr.Path) error { return nil }))

	ss := r.node.sessions()
	if len(ss) != 1 || ss[0].State != "Established" || ss[0].Advertised != 1 {
		t.Errorf("sessions %+v, want one Established advertising 1 route", ss)
	}

	// No peers: the session closes and FRR drops the routes; the peer
	// back: everything returns (the server was kept).
	r.node.apply(Desired{ASN: 64513, RouterID: nodeAddr})
	r.wantRoute(t, v6, noPath)
	if ss := r.node.sessions(); len(ss) != 0 {
		t.Errorf("sessions %+v with no peers", ss)
	}
	r.node.apply(nodeDesired("", map[Export]Attributes{{routerAddr, v4}: {Communities: []string{"65000:300"}}}))
	r.waitEstablished(t)
	r.wantRoute(t, v4, onePath(func(p frr.Path) error {
		if std, _ := communities(p); std != "65000:300" {
			return fmt.Errorf("communities %q, want 65000:300", std)
		}
		return nil
	}))
}

// TestGoBGPPassword: with TCP MD5 on FRR's side, the right password
// establishes the session.
func TestGoBGPPassword(t *testing.T) {
	r := newRig(t, " neighbor 192.0.2.11 password s3cret-pw\n")
	v4 := netip.MustParsePrefix("198.51.100.8/32")
	r.node.apply(nodeDesired("s3cret-pw", map[Export]Attributes{{routerAddr, v4}: {}}))
	r.waitEstablished(t)
	r.wantRoute(t, v4, onePath(func(frr.Path) error { return nil }))
	if out, _ := r.router.Vtysh(context.Background(), "show bgp neighbors 192.0.2.11"); !strings.Contains(out, "Peer Authentication Enabled") && !strings.Contains(out, "password") {
		t.Logf("FRR does not show the password in use:\n%s", out)
	}
}

// TestGoBGPWrongPassword: with the wrong TCP MD5 password the session
// never establishes, and the session's last error says why; fixing the
// password establishes it.
func TestGoBGPWrongPassword(t *testing.T) {
	r := newRig(t, " neighbor 192.0.2.11 password s3cret-pw\n")
	v4 := netip.MustParsePrefix("198.51.100.9/32")
	r.node.apply(nodeDesired("wrong-pw", map[Export]Attributes{{routerAddr, v4}: {}}))
	// The signal: gobgp reports failed attempts (FRR's kernel drops the
	// unsigned SYNs, so each dial times out).
	err := eventually(30*time.Second, func() error {
		ss := r.node.sessions()
		if len(ss) != 1 || !strings.Contains(ss[0].LastError, "no answer from 192.0.2.1") {
			return fmt.Errorf("sessions %+v, want a last error about no answer", ss)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ss := r.node.sessions()
	t.Logf("with the wrong password: %+v", ss)
	if ss[0].State == "Established" {
		t.Fatal("established with the wrong password")
	}
	n, err := r.router.Neighbors(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if n["192.0.2.11"].State == "Established" {
		t.Fatal("FRR established with the wrong password")
	}
	r.node.apply(nodeDesired("s3cret-pw", map[Export]Attributes{{routerAddr, v4}: {}}))
	r.waitEstablished(t)
	r.wantRoute(t, v4, onePath(func(frr.Path) error { return nil }))
	if ss := r.node.sessions(); len(ss) != 1 || ss[0].LastError != "" {
		t.Errorf("sessions %+v: want the last error cleared once established", ss)
	}
}

// TestGoBGPMED: the MED of an export reaches the router, and a new MED
// replaces the old one.
func TestGoBGPMED(t *testing.T) {
	r := newRig(t, "")
	v4 := netip.MustParsePrefix("198.51.100.10/32")
	med := uint32(7)
	r.node.apply(nodeDesired("", map[Export]Attributes{{routerAddr, v4}: {MED: &med}}))
	r.waitEstablished(t)
	r.wantRoute(t, v4, onePath(func(p frr.Path) error {
		if p.MED != 7 {
			return fmt.Errorf("MED %d, want 7", p.MED)
		}
		return nil
	}))
	med2 := uint32(3)
	r.node.apply(nodeDesired("", map[Export]Attributes{{routerAddr, v4}: {MED: &med2}}))
	r.wantRoute(t, v4, onePath(func(p frr.Path) error {
		if p.MED != 3 {
			return fmt.Errorf("MED %d, want 3", p.MED)
		}
		return nil
	}))
}

// TestGoBGPLocalPrefOverIBGP: LOCAL_PREF reaches an iBGP peer.
func TestGoBGPLocalPrefOverIBGP(t *testing.T) {
	skipUnlessRig(t)
	lan := netrig.NewLAN(t)
	rh, err := lan.AddHost("router", netip.MustParsePrefix("192.0.2.1/24"))
	if err != nil {
		t.Fatal(err)
	}
	nh, err := lan.AddHost("node", netip.MustParsePrefix("192.0.2.11/24"))
	if err != nil {
		t.Fatal(err)
	}
	r, err := frr.Start(rh, "router bgp 64513\n bgp router-id 192.0.2.1\n neighbor 192.0.2.11 remote-as 64513\n neighbor 192.0.2.11 timers connect 1\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	rg := &rig{router: r, node: startHelper(t, nh)}
	v4 := netip.MustParsePrefix("198.51.100.10/32")
	lp := uint32(250)
	d := nodeDesired("", map[Export]Attributes{{routerAddr, v4}: {LocalPref: &lp}})
	d.Peers[0].PeerASN = 64513
	rg.node.apply(d)
	rg.waitEstablished(t)
	rg.wantRoute(t, v4, onePath(func(p frr.Path) error {
		if p.LocalPref != 250 {
			return fmt.Errorf("local preference %d, want 250", p.LocalPref)
		}
		return nil
	}))
}
