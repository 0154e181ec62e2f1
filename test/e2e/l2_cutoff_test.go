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
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// echoPort is where the cut-off test's nodes run an echo server for the
// client's long-lived connections (the VIPs are routed locally on every
// node, as kube-proxy's binding would).
const echoPort = 7007

// TestLayer2CutOff is issue 21's item 1 on the layer-2 rig: a node cut off
// from the CCM but still on the LAN. The CCM moves its VIP; the new owner's
// gratuitous ARP/NA reaches the old node, which, hearing no CCM, yields:
// within a second of the move exactly one MAC (the new owner's) answers
// for the VIP, and connections opened through the new owner are not
// broken. Once the path is back the old node is reconnected and stays
// quiet for the VIP. While the path is intact, a crash failover behaves
// as before.
func TestLayer2CutOff(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	echo := map[string]*netrig.EchoServer{}
	for _, n := range r.Nodes {
		s, err := n.Host.ServeEcho(echoPort)
		if err != nil {
			t.Fatal(err)
		}
		echo[n.Name] = s
	}

	for _, fam := range []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol} {
		t.Run(string(fam)+" cut off from the CCM yields to the new owner", func(t *testing.T) {
			name := "cut-" + strings.ToLower(string(fam))
			c.createService(lbService("default", name, nil, singleStack(fam)))
			vip := c.vip("default", name)
			owner := r.Node(checkAnnouncer(t, ctx, r, vip))
			waitOneMAC(t, ctx, r, vip, owner, 10*time.Second)
			took := strings.Count(owner.Speaker.Log(), "CCM took over the speaker")

			restore, err := r.CutCCM(owner)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = restore() })
			cutAt := time.Now()
			to, movedAt := waitMoved(t, ctx, c, r, "default", name, vip, owner.Name, 15*time.Second)
			t.Logf("%s moved from %s to %s %s after the cut (as the Announced record shows)", vip, owner.Name, to.Name, movedAt.Sub(cutAt).Round(time.Millisecond))

			// The claim: exactly one MAC within 1 s of the move, counted
			// from when the test saw the record change (after the move).
			single, last, err := untilOneMAC(ctx, r, vip, to, movedAt.Add(time.Second))
			if err != nil {
				t.Fatalf("%s: %v; answering: %s\n%s", vip, err, macNames(r, last), owner.Speaker.Tail(20))
			}
			t.Logf("%s: only %s answers %s after the move was seen", vip, to.Name, single.Sub(movedAt).Round(time.Millisecond))

			// Long-lived connections through the new owner, opened after
			// the move, see none broken while the old node stays cut off.
			_ = r.Client.FlushNeighbors()
			target := netip.AddrPortFrom(vip, echoPort)
			holders := r.Client.StartHolders(target, 12, 100*time.Millisecond, time.Second)
			defer holders.Stop()
			rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
			err = holders.Ready(rctx)
			rcancel()
			if err != nil {
				t.Fatal(err)
			}
			if n := echo[owner.Name].Conns(); n != 0 {
				t.Errorf("the cut-off node %s holds %d of the client's connections to %s", owner.Name, n, target)
			}
			// The window: the next 3 s, watched (not slept through):
			// the answers for the VIP and the connections, every 0.5 s.
			for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
				macs, err := r.AnsweringMACs(ctx, vip, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if !onlyMAC(macs, to.Host.MAC) {
					t.Errorf("%s answered by %s while %s is cut off; want %s only", vip, macNames(r, macs), owner.Name, to.Name)
				}
				if s := holders.Stats(); s.Broken > 0 {
					t.Fatalf("%d of %d connections through %s broken: %+v", s.Broken, s.Opened, to.Name, s.Breaks)
				}
				time.Sleep(400 * time.Millisecond)
			}

			// The path back: the CCM reconnects the old node, which stays
			// quiet for the VIP (the VIP stays where it is).
			if err := restore(); err != nil {
				t.Fatal(err)
			}
			err = rig.Eventually(20*time.Second, func() error {
				if strings.Count(owner.Speaker.Log(), "CCM took over the speaker") > took {
					return nil
				}
				return fmt.Errorf("%s's speaker not reconnected by the CCM", owner.Name)
			})
			if err != nil {
				t.Fatal(err)
			}
			err = rig.Eventually(5*time.Second, func() error {
				got, err := r.Announcing(ctx, owner)
				if err != nil {
					return err
				}
				if slices.Contains(got, vip.String()) {
					return fmt.Errorf("%s announces %s again after reconnecting: %v", owner.Name, vip, got)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				macs, err := r.AnsweringMACs(ctx, vip, 100*time.Millisecond)
				if err != nil {
					t.Fatal(err)
				}
				if !onlyMAC(macs, to.Host.MAC) {
					t.Errorf("%s answered by %s after %s reconnected; want %s only", vip, macNames(r, macs), owner.Name, to.Name)
				}
			}
			if on := announcedOn(t, ctx, c, "default", name, vip); !slices.Equal(on, []string{to.Name}) {
				t.Errorf("%s's record says %v after %s reconnected, want [%s]", vip, on, owner.Name, to.Name)
			}
			if s := holders.Stop(); s.Broken > 0 {
				t.Errorf("%d of %d connections through %s broken: %+v", s.Broken, s.Opened, to.Name, s.Breaks)
			}
		})
	}

	t.Run("crash failover with the CCM path intact", func(t *testing.T) {
		c.createService(lbService("default", "crash", nil))
		vip := c.vip("default", "crash")
		checkAnnouncer(t, ctx, r, vip)
		f, err := r.MeasureFailover(ctx, vip, rig.Crash)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("crash of %s: %s moved to %s, client cut off %s", f.From, vip, f.To, f.Outage)
		if on := announcedOn(t, ctx, c, "default", "crash", vip); !slices.Equal(on, []string{f.To}) {
			t.Errorf("%s's record says %v, the client reached it through %s", vip, on, f.To)
		}
		// MeasureFailover restarted the crashed speaker: every VIP, moved
		// or not, is answered by one node, the one its record names, and
		// no speaker that hears the CCM gave a VIP up because of another
		// node's announcement.
		for _, svc := range []string{"cut-ipv4", "cut-ipv6", "crash"} {
			v := c.vip("default", svc)
			on := announcedOn(t, ctx, c, "default", svc, v)
			if len(on) != 1 || r.Node(on[0]) == nil {
				t.Errorf("%s's record says %v, want one node", v, on)
				continue
			}
			waitOneMAC(t, ctx, r, v, r.Node(on[0]), 10*time.Second)
		}
	})
}

func singleStack(fam corev1.IPFamily) func(*corev1.Service) {
	return func(s *corev1.Service) {
		s.Spec.IPFamilies = []corev1.IPFamily{fam}
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
	}
}

// announcedOn returns the layer-2 nodes the Service's Announced record
// names for vip (nil when none).
func announcedOn(t *testing.T, ctx context.Context, c *cluster, namespace, name string, vip netip.Addr) []string {
	t.Helper()
	svc, err := c.cp.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return recordFor(svc, vip)
}

func recordFor(svc *corev1.Service, vip netip.Addr) []string {
	cond := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced")
	if cond == nil {
		return nil
	}
	var own []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			own = append(own, a)
		}
	}
	entries, err := announced.Decode(cond.Message, own)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if e.Address == vip {
			return e.Layer2
		}
	}
	return nil
}

// waitMoved polls the Service's Announced record until it names one node
// other than from for vip, and returns that node and when the test saw it.
func waitMoved(t *testing.T, ctx context.Context, c *cluster, r *rig.L2, namespace, name string, vip netip.Addr, from string, timeout time.Duration) (*rig.L2Node, time.Time) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var on []string
	for time.Now().Before(deadline) {
		svc, err := c.cp.Client.CoreV1().Services(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if on = recordFor(svc, vip); len(on) == 1 && on[0] != from {
			if n := r.Node(on[0]); n != nil {
				return n, time.Now()
			}
			t.Fatalf("%s moved to unknown node %q", vip, on[0])
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not moved from %s after %s: the record says %v", vip, from, timeout, on)
	return nil, time.Time{}
}

// untilOneMAC asks who has vip until exactly want's MAC answers, and
// returns when that was; it fails when deadline passes first, with the
// last answers.
func untilOneMAC(ctx context.Context, r *rig.L2, vip netip.Addr, want *rig.L2Node, deadline time.Time) (time.Time, []net.HardwareAddr, error) {
	var last []net.HardwareAddr
	for {
		macs, err := r.AnsweringMACs(ctx, vip, 100*time.Millisecond)
		if err != nil {
			return time.Time{}, macs, err
		}
		last = macs
		if onlyMAC(macs, want.Host.MAC) {
			return time.Now(), macs, nil
		}
		if time.Now().After(deadline) {
			return time.Time{}, last, fmt.Errorf("not answered by %s alone by the deadline", want.Name)
		}
	}
}

// waitOneMAC waits until exactly n's MAC answers for vip.
func waitOneMAC(t *testing.T, ctx context.Context, r *rig.L2, vip netip.Addr, n *rig.L2Node, timeout time.Duration) {
	t.Helper()
	if _, last, err := untilOneMAC(ctx, r, vip, n, time.Now().Add(timeout)); err != nil {
		t.Fatalf("%s: %v; answering: %s", vip, err, macNames(r, last))
	}
}

func onlyMAC(macs []net.HardwareAddr, want net.HardwareAddr) bool {
	return len(macs) == 1 && macs[0].String() == want.String()
}

// macNames names the answering MACs by node, for messages.
func macNames(r *rig.L2, macs []net.HardwareAddr) string {
	if len(macs) == 0 {
		return "nobody"
	}
	var out []string
	for _, m := range macs {
		if n := r.NodeByMAC(m); n != nil {
			out = append(out, n.Name+" ("+m.String()+")")
		} else {
			out = append(out, m.String())
		}
	}
	return strings.Join(out, ", ")
}
