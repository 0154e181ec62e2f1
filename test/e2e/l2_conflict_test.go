package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
)

// TestLayer2AddressInUse is issue 21's item 3 on the layer-2 rig: IronLB
// never takes over an address another LAN host uses. A Service requesting
// the address of a server whose kernel holds it keeps the address in its
// status but is not announced (only the server answers), with a Warning
// AddressInUse naming the server's MAC and the CCM's gauge at 1; once the
// server lets the address go, a node announces it (after the speaker's
// re-probe backoff) and AddressInUseResolved follows. A host that starts
// using the address of an announced VIP (gratuitous ARP / unsolicited NA)
// is reported the same way and the node stops answering.
func TestLayer2AddressInUse(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)

	for _, tc := range []struct {
		fam    corev1.IPFamily
		server netip.Prefix // in the pool, held by a LAN server
	}{
		{corev1.IPv4Protocol, netip.MustParsePrefix("192.0.2.210/24")},
		{corev1.IPv6Protocol, netip.MustParsePrefix("2001:db8:100::210/64")},
	} {
		fam := strings.ToLower(string(tc.fam))
		t.Run(string(tc.fam)+" a requested address a server holds is not taken", func(t *testing.T) {
			addr := tc.server.Addr()
			server, err := r.AddForeignHost("server"+fam[len(fam)-1:], tc.server)
			if err != nil {
				t.Fatal(err)
			}
			waitOnlyMAC(t, ctx, r, addr, server.MAC, 10*time.Second)
			name := "in-use-" + fam
			c.createService(lbService("default", name, nil, singleStack(tc.fam), func(s *corev1.Service) { s.Spec.LoadBalancerIP = addr.String() }))
			if vip := c.vip("default", name); vip != addr {
				t.Fatalf("%s got %s, want the requested %s", name, vip, addr)
			}
			waitEventOf(t, ctx, c, "default", name, "AddressInUse", server.MAC.String(), corev1.EventTypeWarning)
			waitGauge(t, ctx, r, "ironlb_vips_address_in_use", 1)
			// Not taken over, again and again: only the server answers.
			for range 5 {
				macs, err := r.AnsweringMACs(ctx, addr, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if !onlyMAC(macs, server.MAC) {
					t.Fatalf("%s answered by %s; want the server %s only", addr, macNames(r, macs), server.MAC)
				}
				time.Sleep(200 * time.Millisecond)
			}
			keepsAddress(t, ctx, c, "default", name, addr)

			// The admin fixes it (here the server lets the address go):
			// a node announces it after the re-probe backoff.
			if err := server.RemoveAddr(tc.server); err != nil {
				t.Fatal(err)
			}
			freed := time.Now()
			node := waitNodeAnswers(t, ctx, r, addr, 30*time.Second)
			t.Logf("%s announced by %s %s after the server let it go", addr, node.Name, time.Since(freed).Round(time.Millisecond))
			waitEventOf(t, ctx, c, "default", name, "AddressInUseResolved", addr.String(), corev1.EventTypeNormal, corev1.EventTypeWarning)
			waitGauge(t, ctx, r, "ironlb_vips_address_in_use", 0)
			_ = r.Client.FlushNeighbors()
			if got := checkAnnouncer(t, ctx, r, addr); got != node.Name {
				t.Errorf("the client reached %s through %s, the ARP/NDP answer came from %s", addr, got, node.Name)
			}
		})

		t.Run(string(tc.fam)+" a host claiming an announced address", func(t *testing.T) {
			name := "claimed-" + fam
			c.createService(lbService("default", name, nil, singleStack(tc.fam)))
			vip := c.vip("default", name)
			owner := r.Node(checkAnnouncer(t, ctx, r, vip))
			waitOnlyMAC(t, ctx, r, vip, owner.Host.MAC, 10*time.Second)
			bits := 24
			if vip.Is6() {
				bits = 64
			}
			p := netip.PrefixFrom(vip, bits)
			squatter, err := r.AddForeignHost("squatter" + fam[len(fam)-1:])
			if err != nil {
				t.Fatal(err)
			}
			if err := squatter.AddAddr(p); err != nil {
				t.Fatal(err)
			}
			if err := squatter.Announce(vip); err != nil {
				t.Fatal(err)
			}
			waitEventOf(t, ctx, c, "default", name, "AddressInUse", squatter.MAC.String(), corev1.EventTypeWarning)
			waitGauge(t, ctx, r, "ironlb_vips_address_in_use", 1)
			// The node stops answering: only the squatter does.
			waitOnlyMAC(t, ctx, r, vip, squatter.MAC, 10*time.Second)
			if got, err := r.Announcing(ctx, owner); err != nil {
				t.Fatal(err)
			} else if slices.Contains(got, vip.String()) {
				t.Errorf("%s still lists %s among its announcements: %v", owner.Name, vip, got)
			}
			keepsAddress(t, ctx, c, "default", name, vip)

			if err := squatter.Remove(); err != nil {
				t.Fatal(err)
			}
			node := waitNodeAnswers(t, ctx, r, vip, 70*time.Second)
			t.Logf("%s announced by %s again once the squatter left", vip, node.Name)
			waitEventOf(t, ctx, c, "default", name, "AddressInUseResolved", vip.String(), corev1.EventTypeNormal, corev1.EventTypeWarning)
			waitGauge(t, ctx, r, "ironlb_vips_address_in_use", 0)
		})
	}
}

// waitOnlyMAC waits until exactly mac answers for addr.
func waitOnlyMAC(t *testing.T, ctx context.Context, r *rig.L2, addr netip.Addr, mac net.HardwareAddr, timeout time.Duration) {
	t.Helper()
	var last []net.HardwareAddr
	err := rig.Eventually(timeout, func() error {
		var err error
		if last, err = r.AnsweringMACs(ctx, addr, 100*time.Millisecond); err != nil {
			return err
		}
		if !onlyMAC(last, mac) {
			return fmt.Errorf("%s answered by %s, want %s only", addr, macNames(r, last), mac)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitNodeAnswers waits until exactly one MAC answers for addr and it is a
// node's, and returns that node.
func waitNodeAnswers(t *testing.T, ctx context.Context, r *rig.L2, addr netip.Addr, timeout time.Duration) *rig.L2Node {
	t.Helper()
	var node *rig.L2Node
	err := rig.Eventually(timeout, func() error {
		macs, err := r.AnsweringMACs(ctx, addr, 100*time.Millisecond)
		if err != nil {
			return err
		}
		if len(macs) != 1 || r.NodeByMAC(macs[0]) == nil {
			return fmt.Errorf("%s answered by %s, want one node", addr, macNames(r, macs))
		}
		node = r.NodeByMAC(macs[0])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return node
}

// keepsAddress checks that the Service still holds addr in its status.
func keepsAddress(t *testing.T, ctx context.Context, c *cluster, namespace, name string, addr netip.Addr) {
	t.Helper()
	svc, err := c.cp.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := ingress(svc); !slices.Equal(got, []string{addr.String()}) {
		t.Errorf("%s/%s has %v in its status, want it to keep %s", namespace, name, got, addr)
	}
}

// waitGauge waits until the CCM's unlabelled gauge name reads want.
func waitGauge(t *testing.T, ctx context.Context, r *rig.L2, name string, want float64) {
	t.Helper()
	err := rig.Eventually(15*time.Second, func() error {
		m, err := r.CCMMetrics(ctx)
		if err != nil {
			return err
		}
		if got := metricValue(m, name); got != want {
			return fmt.Errorf("%s = %v, want %v", name, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitEventOf waits for an Event of one of types with reason on the
// Service whose message contains msg (failing t, the subtest, not the
// cluster's test).
func waitEventOf(t *testing.T, ctx context.Context, c *cluster, namespace, name, reason, msg string, types ...string) {
	t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		var err error
		for _, typ := range types {
			if err = findEvent(ctx, c.cp, "Service", name, namespace, typ, reason, msg); err == nil {
				return nil
			}
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
