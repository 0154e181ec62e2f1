package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// TestLayer2Reliability runs the reliability fixes against the real CCM,
// speakers and API server on the layer-2 rig: VIPs stay put through a
// blip of the CCM's network; a re-created interface is reopened; a deleted
// pool never widens where its VIPs go; the speaker of a deleted Node
// withdraws before its stream closes.
func TestLayer2Reliability(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)

	t.Run("CCM network blip keeps every VIP in place", func(t *testing.T) {
		owners := map[netip.Addr]string{}
		for i := range 6 {
			name := fmt.Sprintf("blip-%d", i)
			c.createService(lbService("default", name, nil))
			vip := c.vip("default", name)
			owners[vip] = checkAnnouncer(t, ctx, r, vip)
		}
		if spread := countValues(owners); len(spread) < 2 {
			t.Fatalf("VIPs not spread over nodes: %v", spread)
		}
		var probed netip.Addr
		for vip := range owners {
			probed = vip
			break
		}
		probe := r.Client.StartProbe(netip.AddrPortFrom(probed, rig.ServicePort), rig.ProbeInterval, rig.ProbeTimeout)
		// Longer than the loss-detection time (1 s): the CCM loses every
		// speaker at once.
		if err := r.Ctrl.SetLink(false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		if err := r.Ctrl.SetLink(true); err != nil {
			t.Fatal(err)
		}
		// The signal: every speaker is connected again and the settle
		// window is over, after which lost speakers' VIPs would move.
		waitMetrics(t, ctx, r, 30*time.Second,
			`ironlb_speaker_connected{node="node-a"} 1`, `ironlb_speaker_connected{node="node-b"} 1`,
			`ironlb_speaker_connected{node="node-c"} 1`, `ironlb_planner_settling 0`)
		rs := probe.Stop()
		if fails := netrig.Failures(rs); len(fails) > 0 {
			t.Errorf("the client lost %d of %d connections to %s during the blip", len(fails), len(rs), probed)
		}
		ccm, err := r.CCMMetrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v := metricValue(ccm, "ironlb_mass_speaker_losses_total"); v < 1 {
			t.Errorf("ironlb_mass_speaker_losses_total = %v, want the blip counted", v)
		}
		for vip, was := range owners {
			if now := checkAnnouncer(t, ctx, r, vip); now != was {
				t.Errorf("%s moved from %s to %s during the CCM's network blip", vip, was, now)
			}
		}
	})

	t.Run("a re-created interface is reopened", func(t *testing.T) {
		c.applyPool("only-a", "addresses: [192.0.2.220-192.0.2.221]\nautoAssign: false\nlayer2:\n  nodeSelector:\n    matchLabels: {kubernetes.io/hostname: node-a}")
		c.createService(lbService("default", "bonded", map[string]string{"ironlb.dev/pool": "only-a"}))
		vip := c.vip("default", "bonded")
		if node := checkAnnouncer(t, ctx, r, vip); node != "node-a" {
			t.Fatalf("%s announced by %s, want node-a (the pool's only node)", vip, node)
		}
		a := r.Node("node-a")
		oldMAC := a.Host.MAC.String()
		start := time.Now()
		if err := a.Host.Recreate(); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(30*time.Second, func() error {
			_ = r.Client.FlushNeighbors()
			node, err := r.Reach(ctx, vip, 300*time.Millisecond)
			if err != nil {
				return err
			}
			if node != "node-a" {
				return fmt.Errorf("%s answered by %s", vip, node)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s unreachable after node-a's interface was re-created: %v\n%s", vip, err, a.Speaker.Tail(20))
		}
		t.Logf("%s reachable again through node-a %s after its interface was re-created (MAC %s → %s)",
			vip, time.Since(start).Round(time.Millisecond), oldMAC, a.Host.MAC)
		if !a.Speaker.LogContains("Interface was re-created; reopening its announcer") && !a.Speaker.LogContains("Interface is gone") {
			t.Errorf("node-a's speaker did not reopen its announcer:\n%s", a.Speaker.Tail(20))
		}
		if node := checkAnnouncer(t, ctx, r, vip); node != "node-a" {
			t.Errorf("the client resolved %s to %s", vip, node)
		}
	})

	t.Run("a deleted pool keeps its VIPs' scope", func(t *testing.T) {
		c.applyPool("bc", "addresses: [192.0.2.222-192.0.2.223]\nautoAssign: false\nlayer2:\n  nodeSelector:\n    matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [node-b, node-c]}]")
		c.createService(lbService("default", "scoped", map[string]string{"ironlb.dev/pool": "bc"}))
		vip := c.vip("default", "scoped")
		first := checkAnnouncer(t, ctx, r, vip)
		if first == "node-a" {
			t.Fatalf("%s on node-a, outside the pool's selector", vip)
		}
		if err := c.pools.Delete(ctx, "bc", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		// At once, not at the next resync of the Service.
		c.waitEvent("default", "scoped", corev1.EventTypeWarning, "AddressOutsidePools", vip.String()+" is in no IPPool any more")
		waitMetrics(t, ctx, r, 10*time.Second, `ironlb_addresses_outside_pools 1`)
		// Its nodes go away (turn NotReady) one after the other: it moves
		// to the other selected node, then to none, never to node-a.
		second := map[string]string{"node-b": "node-c", "node-c": "node-b"}[first]
		setNodeReady(t, ctx, c, first, false)
		waitAnnouncer(t, ctx, r, vip, second)
		setNodeReady(t, ctx, c, second, false)
		c.waitEvent("default", "scoped", corev1.EventTypeWarning, "NoAnnouncingNode", "node-a: node does not match IPPool bc's layer2.nodeSelector")
		if _, err := r.Reach(ctx, vip, time.Second); err == nil {
			_ = r.Client.FlushNeighbors()
			if node, err := r.Reach(ctx, vip, time.Second); err == nil {
				t.Errorf("%s answered by %s with both of its pool's nodes down", vip, node)
			}
		}
		for _, n := range []string{first, second} {
			setNodeReady(t, ctx, c, n, true)
		}
		waitAnnouncer(t, ctx, r, vip, "node-b", "node-c")
	})

	t.Run("a deleted Node's speaker withdraws first", func(t *testing.T) {
		vip := c.vip("default", "blip-0")
		owner := r.Node(checkAnnouncer(t, ctx, r, vip))
		withdrawn := strings.Count(owner.Speaker.Log(), "Withdrew VIP")
		if err := c.cp.Client.CoreV1().Nodes().Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(15*time.Second, func() error {
			if strings.Count(owner.Speaker.Log(), "Withdrew VIP") == withdrawn {
				return fmt.Errorf("%s's speaker has not withdrawn", owner.Name)
			}
			got, err := r.Announcing(ctx, owner)
			if err != nil {
				return err
			}
			if len(got) != 0 {
				return fmt.Errorf("%s's speaker still announces %v", owner.Name, got)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if owner.Speaker.Exited() {
			t.Fatal("the speaker exited; the test needs it running to tell withdrawal from shutdown")
		}
		waitAnnouncer(t, ctx, r, vip, othersThan(owner.Name)...)
		if _, err := rig.RegisterNode(ctx, c.cp.Client, owner.Name, owner.IPv4.String()+","+owner.IPv6.String(), nil); err != nil {
			t.Fatal(err)
		}
	})
}

// setNodeReady sets the Ready condition of node, as its kubelet would (a
// node that goes away turns NotReady). It is how the tests take a node out:
// a speaker's SIGTERM is a restart, whose VIPs stay on the node, and a
// crashed speaker's VIPs stay where they are when no other node may take
// them (issue 21, item 6).
func setNodeReady(t *testing.T, ctx context.Context, c *cluster, node string, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := c.cp.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for i := range n.Status.Conditions {
			if n.Status.Conditions[i].Type == corev1.NodeReady {
				n.Status.Conditions[i].Status = status
				n.Status.Conditions[i].LastTransitionTime = metav1.Now()
			}
		}
		_, err = c.cp.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("setting node %s Ready=%v: %v", node, ready, err)
	}
}

// waitAnnouncer waits until the client reaches vip through one of nodes.
func waitAnnouncer(t *testing.T, ctx context.Context, r *rig.L2, vip netip.Addr, nodes ...string) {
	t.Helper()
	err := rig.Eventually(20*time.Second, func() error {
		_ = r.Client.FlushNeighbors()
		node, err := r.Reach(ctx, vip, 300*time.Millisecond)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n == node {
				return nil
			}
		}
		return fmt.Errorf("%s answered by %s, want one of %v", vip, node, nodes)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func othersThan(node string) []string {
	var out []string
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}

// waitMetrics waits until the CCM's /metrics has every line.
func waitMetrics(t *testing.T, ctx context.Context, r *rig.L2, timeout time.Duration, lines ...string) {
	t.Helper()
	err := rig.Eventually(timeout, func() error {
		m, err := r.CCMMetrics(ctx)
		if err != nil {
			return err
		}
		for _, l := range lines {
			if !strings.Contains(m, l) {
				return fmt.Errorf("CCM /metrics lacks %q", l)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// metricValue returns the value of an unlabelled metric, -1 if absent.
func metricValue(metrics, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(metrics)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

func countValues[K comparable](m map[K]string) map[string]int {
	out := map[string]int{}
	for _, v := range m {
		out[v]++
	}
	return out
}
