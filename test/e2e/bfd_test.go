package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/rig"
)

// bgpPeerStatus reads a BGPPeer's status.
func (c *cluster) bgpPeerStatus(name string) (v1alpha1.BGPPeerStatus, error) {
	var st v1alpha1.BGPPeerStatus
	u, err := dynamic.NewForConfigOrDie(c.cp.Config).Resource(v1alpha1.BGPPeerResource).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		return st, err
	}
	var p v1alpha1.BGPPeer
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		return st, err
	}
	return p.Status, nil
}

// bgpDrops sums FRR's dropped-connection counters of the nodes' sessions.
func bgpDrops(ctx context.Context, r *frr.Router, addrs []string) (int, error) {
	m, err := r.Neighbors(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, a := range addrs {
		n += m[a].Dropped
	}
	return n, nil
}

// waitBFD waits until FRR has a BFD session with each of addrs that is
// up and reports the nodes' timers (rx, tx in ms, multiplier).
func waitBFD(ctx context.Context, r *frr.Router, addrs []string, rx, tx, mult int) error {
	return rig.Eventually(30*time.Second, func() error {
		peers, err := r.BFDPeers(ctx)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			p, ok := peers[a]
			switch {
			case !ok:
				return fmt.Errorf("FRR has no BFD session with %s", a)
			case p.Status != "up":
				return fmt.Errorf("FRR's BFD session with %s is %s", a, p.Status)
			case p.RemoteReceive != rx || p.RemoteTransmit != tx || p.RemoteMultiplier != mult:
				return fmt.Errorf("FRR sees %s's timers rx %d tx %d ×%d, want rx %d tx %d ×%d", a, p.RemoteReceive, p.RemoteTransmit, p.RemoteMultiplier, rx, tx, mult)
			}
		}
		return nil
	})
}

// TestBFD: the speakers' BFD against FRR's bfdd. A router that does not
// run BFD leaves the sessions up with BFD Down and a reason; once it does,
// BFD comes up with the nodes' timers; new timers renegotiate without a
// drop; a node whose link goes down leaves the router's ECMP set within
// the detection time, far sooner than the hold time; multihop works.
func TestBFD(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{LogDir: os.Getenv("IRONLB_BGP_LOGDIR")}, "")
	all := nodeHops(b, false)
	c.applyPeer("tor", torSpec(""))
	c.applyPool("bgp", bgpPool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	drops, err := bgpDrops(ctx, b.Router, all)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("a router without BFD: sessions stay up, BFD Down with a reason", func(t *testing.T) {
		c.applyPeer("tor", torSpec("\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"))
		err := rig.Eventually(30*time.Second, func() error {
			st, err := c.bgpPeerStatus("tor")
			if err != nil {
				return err
			}
			if st.Summary != "Established 3/3, BFD Up 0/3" {
				return fmt.Errorf("summary %q", st.Summary)
			}
			for _, s := range st.Sessions {
				if s.BFD == nil || s.BFD.State != v1alpha1.BFDDown || !strings.Contains(s.BFD.Reason, "does the router run BFD") {
					return fmt.Errorf("node %s: BFD %+v, want Down with the reason", s.Node, s.BFD)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if now, err := bgpDrops(ctx, b.Router, all); err != nil || now != drops {
			t.Errorf("BGP sessions dropped %d times since BFD was turned on (%v), want none", now-drops, err)
		}
	})

	t.Run("BFD comes up with the nodes' timers, without a BGP drop", func(t *testing.T) {
		if err := b.RouterBFD(ctx, 100, 100); err != nil {
			t.Fatal(err)
		}
		if err := waitBFD(ctx, b.Router, all, 100, 100, 3); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(30*time.Second, func() error {
			st, err := c.bgpPeerStatus("tor")
			if err != nil {
				return err
			}
			if st.Summary != "Established 3/3, BFD Up 3/3" {
				return fmt.Errorf("summary %q", st.Summary)
			}
			m, err := b.CCMMetrics(ctx)
			if err != nil {
				return err
			}
			for _, n := range []string{"node-a", "node-b", "node-c"} {
				if want := fmt.Sprintf(`ironlb_bfd_session_up{node=%q,peer="192.0.2.1"} 1`, n); !strings.Contains(m, want) {
					return fmt.Errorf("CCM metrics lack %s", want)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if now, err := bgpDrops(ctx, b.Router, all); err != nil || now != drops {
			t.Errorf("BGP sessions dropped %d times (%v), want none", now-drops, err)
		}
	})

	t.Run("new timers renegotiate without a drop", func(t *testing.T) {
		before, err := b.Router.BFDPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c.applyPeer("tor", torSpec("\n  bfd: {enabled: true, receiveInterval: 200ms, transmitInterval: 150ms, detectMultiplier: 4}"))
		if err := waitBFD(ctx, b.Router, all, 200, 150, 4); err != nil {
			t.Fatal(err)
		}
		after, err := b.Router.BFDPeers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range all {
			if after[a].ID != before[a].ID || after[a].Uptime < before[a].Uptime {
				t.Errorf("FRR's BFD session with %s was re-created or went down: before %+v after %+v", a, before[a], after[a])
			}
		}
		if now, err := bgpDrops(ctx, b.Router, all); err != nil || now != drops {
			t.Errorf("BGP sessions dropped %d times (%v), want none", now-drops, err)
		}
		c.applyPeer("tor", torSpec("\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}"))
		if err := waitBFD(ctx, b.Router, all, 100, 100, 3); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a node's link down leaves the ECMP set within the detection time", func(t *testing.T) {
		n := b.Node("node-c")
		start := time.Now()
		if err := n.Host.SetLink(false); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(host(vip), nodeHops(b, false, "node-a", "node-b"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		// BFD detects in 3 × 100 ms; without it the hold time (9 s) would.
		t.Logf("the router dropped node-c's next hop %s after its link went down (BFD 100ms × 3, hold time 9s)", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("next hop dropped after %s: not BFD's doing (hold time 9s)", took)
		}
		for i := range 10 {
			if node, err := b.ReachFromOutside(ctx, vip, 2*time.Second); err != nil || node == "node-c" {
				t.Fatalf("connection %d from outside: reached %q (%v)", i, node, err)
			}
		}
		if err := n.Host.SetLink(true); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(host(vip), all, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		if err := waitBFD(ctx, b.Router, all, 100, 100, 3); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("multihop", func(t *testing.T) {
		// node-a leaves the LAN peer and peers with the router's upstream
		// address, two hops away as BGP and BFD see it.
		c.labelNode("node-b", "rack=r1")
		c.labelNode("node-c", "rack=r1")
		c.applyPeer("tor", torSpec("\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}\n  nodeSelector:\n    matchLabels: {rack: r1}"))
		a := b.Node("node-a").IPv4.String()
		far := "203.0.113.1"
		if err := b.Router.Configure(ctx, fmt.Sprintf("router bgp %d", rig.RouterASN),
			fmt.Sprintf("neighbor %s remote-as %d", a, rig.NodeASN), fmt.Sprintf("neighbor %s ebgp-multihop 2", a),
			fmt.Sprintf("neighbor %s update-source %s", a, far), fmt.Sprintf("neighbor %s timers 3 9", a),
			fmt.Sprintf("neighbor %s bfd", a), fmt.Sprintf("neighbor %s bfd profile fast", a),
			"address-family ipv6 unicast", fmt.Sprintf("neighbor %s activate", a)); err != nil {
			t.Fatal(err)
		}
		c.applyPeer("tor-far", fmt.Sprintf("  peerAddress: %s\n  peerASN: %d\n  myASN: %d\n  holdTime: 9s\n  connectRetryTime: 1s\n  ebgpMultihop: 2\n  bfd: {enabled: true, receiveInterval: 100ms, transmitInterval: 100ms}\n  nodeSelector:\n    matchExpressions: [{key: rack, operator: DoesNotExist}]",
			far, rig.RouterASN, rig.NodeASN))
		if _, err := b.WaitNextHops(host(vip), all, 60*time.Second); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(30*time.Second, func() error {
			peers, err := b.Router.BFDPeers(ctx)
			if err != nil {
				return err
			}
			if p := peers[a]; !p.Multihop || p.Status != "up" || p.Local != far || p.RemoteReceive != 100 {
				return fmt.Errorf("FRR's BFD session with %s: %+v, want multihop, up, from %s", a, p, far)
			}
			st, err := c.bgpPeerStatus("tor-far")
			if err != nil {
				return err
			}
			if st.Summary != "Established 1/1, BFD Up 1/1" {
				return fmt.Errorf("tor-far summary %q", st.Summary)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := b.Node("node-a").Host.SetLink(false); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(host(vip), nodeHops(b, false, "node-b", "node-c"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		took := time.Since(start)
		t.Logf("multihop: the router dropped node-a's next hop %s after its link went down", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("next hop dropped after %s: not BFD's doing (hold time 9s)", took)
		}
		if err := b.Node("node-a").Host.SetLink(true); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(host(vip), all, 60*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}
