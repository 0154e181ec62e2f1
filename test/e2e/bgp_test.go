package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// bgpPool is a BGP-only pool the nodes route locally.
const bgpPool = "addresses: [198.51.100.0/27, '2001:db8:300::/120']\nbgp: {}"

// newBGP starts the BGP rig: the layer-2 rig with deploy/ applied, plus an
// FRR router peering with every node and an outside client behind it.
func newBGP(t *testing.T, ctx context.Context, opts rig.L2Options, routerExtra string) (*cluster, *rig.BGP) {
	t.Helper()
	if err := frr.Usable(); err != nil {
		t.Skipf("FRR unusable: %v", err)
	}
	c, lan := newRigCluster(t, ctx)
	upstream := netrig.NewLAN(t)
	opts.Kubeconfig = c.kubeconfig
	b, err := rig.StartBGP(ctx, c.cp, lan, upstream, opts, routerExtra)
	t.Cleanup(func() {
		if b == nil {
			return
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", b.Logs(40))
			if b.Router != nil {
				t.Logf("bgpd log:\n%s", b.Router.Log("bgpd"))
				t.Logf("bfdd log:\n%s", b.Router.Log("bfdd"))
			}
		}
		b.Stop()
	})
	if err != nil {
		t.Fatalf("starting the BGP rig: %v", err)
	}
	c.ccm = b.CCM
	return c, b
}

// torSpec is the spec of a BGPPeer for the rig's router (short timers),
// with extra lines.
func torSpec(extra string) string {
	return fmt.Sprintf("  peerAddress: %s\n  peerASN: %d\n  myASN: %d\n  holdTime: 9s\n  connectRetryTime: 1s%s",
		rig.RouterV4.Addr(), rig.RouterASN, rig.NodeASN, extra)
}

// applyPeer creates or updates a BGPPeer.
func (c *cluster) applyPeer(name, specYAML string) {
	c.t.Helper()
	doc := fmt.Sprintf("apiVersion: ironlb.dev/v1alpha1\nkind: BGPPeer\nmetadata:\n  name: %s\nspec:\n%s", name, specYAML)
	if out, err := c.cp.KubectlStdin(c.ctx, doc, "apply", "-f", "-"); err != nil {
		c.t.Fatalf("applying BGPPeer %s: %v\n%s", name, err, out)
	}
}

// TestBGP: real CCM, speakers, API server and FRR. Every node advertises a
// BGP pool's VIP; the router's kernel has an ECMP route over all of them,
// clients behind the router reach several nodes; the BGPPeer's status
// shows the sessions; deleting the Service withdraws the route.
func TestBGP(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{LogDir: os.Getenv("IRONLB_BGP_LOGDIR")}, "")
	c.applyPeer("tor", torSpec(""))
	c.applyPool("bgp", bgpPool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	if !rig.BGPPoolV4.Contains(vip) {
		t.Fatalf("VIP %s not from the BGP pool %s", vip, rig.BGPPoolV4)
	}
	nodes := nodeHops(b, false)
	took, err := b.WaitNextHops(host(vip), nodes, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ECMP route over %d nodes in the router's kernel %s after the VIP was assigned", len(nodes), took.Round(time.Millisecond))
	reached := map[string]bool{}
	for i := 0; i < 40 && len(reached) < 2; i++ {
		node, err := b.ReachFromOutside(ctx, vip, 2*time.Second)
		if err != nil {
			t.Fatalf("connection %d from outside to %s: %v", i, vip, err)
		}
		reached[node] = true
	}
	if len(reached) < 2 {
		t.Errorf("40 connections from outside all reached %v, want at least two nodes (ECMP)", reached)
	}
	err = rig.Eventually(30*time.Second, func() error {
		p, err := dynamic.NewForConfigOrDie(c.cp.Config).Resource(v1alpha1.BGPPeerResource).Get(ctx, "tor", metav1.GetOptions{})
		if err != nil {
			return err
		}
		summary, _, _ := unstructured.NestedString(p.Object, "status", "summary")
		if summary != "Established 3/3" {
			return fmt.Errorf("BGPPeer tor status summary %q, want Established 3/3", summary)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	c.waitEvent("default", "web", "Normal", "VIPAdvertised", "advertised over BGP from node-a, node-b, node-c")
	if body, err := b.SpeakerGet(ctx, b.Nodes[0], "/bgp"); err != nil || !strings.Contains(body, `"prefix":"`+vip.String()+`/32","peer":"192.0.2.1"`) || !strings.Contains(body, `"state":"Established"`) {
		t.Errorf("node-a's /bgp: %s (%v), want the route to the peer and an Established session", body, err)
	}
	err = rig.Eventually(10*time.Second, func() error {
		m, err := b.CCMMetrics(ctx)
		if err != nil {
			return err
		}
		for _, n := range []string{"node-a", "node-b", "node-c"} {
			for _, want := range []string{
				fmt.Sprintf(`ironlb_bgp_session_up{node=%q,peer="192.0.2.1"} 1`, n),
				fmt.Sprintf(`ironlb_bgp_advertised_routes{node=%q,peer="192.0.2.1"} 1`, n),
			} {
				if !strings.Contains(m, want) {
					return fmt.Errorf("CCM metrics lack %s", want)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	// Deleting the Service withdraws the route.
	if err := c.cp.Client.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = rig.Eventually(30*time.Second, func() error {
		paths, err := b.Router.Paths(ctx, netip.PrefixFrom(vip, 32))
		if err != nil {
			return err
		}
		if len(paths) != 0 {
			return fmt.Errorf("FRR still has %d paths for %s", len(paths), vip)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// nodeHops are the nodes' IPv4 (or IPv6) addresses, as next hops.
func nodeHops(b *rig.BGP, v6 bool, names ...string) []string {
	var out []string
	for _, n := range b.Nodes {
		if len(names) > 0 && !slices.Contains(names, n.Name) {
			continue
		}
		if v6 {
			out = append(out, n.IPv6.String())
		} else {
			out = append(out, n.IPv4.String())
		}
	}
	return out
}

func host(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }

func (c *cluster) labelNode(name string, kv ...string) {
	c.t.Helper()
	args := append([]string{"label", "node", name, "--overwrite"}, kv...)
	if out, err := c.cp.Kubectl(c.ctx, args...); err != nil {
		c.t.Fatalf("labelling %s: %v\n%s", name, err, out)
	}
}

// TestBGPScenarios: what an operator changes and breaks, seen from the
// router (its RIB and kernel) and from a client behind it.
func TestBGPScenarios(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{LogDir: os.Getenv("IRONLB_BGP_LOGDIR")}, "")
	c.applyPeer("tor", torSpec(""))
	c.applyPool("bgp", bgpPool)
	c.applyPool("l2", l2Pool)
	c.createService(lbService("default", "web", map[string]string{"ironlb.dev/pool": "bgp"}))
	vip := c.vip("default", "web")
	all := nodeHops(b, false)
	if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
		t.Fatal(err)
	}

	t.Run("a peer's nodeSelector decides which nodes open sessions", func(t *testing.T) {
		c.labelNode("node-a", "rack=r1")
		c.labelNode("node-b", "rack=r1")
		c.applyPeer("tor", torSpec("\n  nodeSelector:\n    matchLabels: {rack: r1}"))
		if _, err := b.WaitNextHops(host(vip), nodeHops(b, false, "node-a", "node-b"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(30*time.Second, func() error {
			n, err := b.Router.Neighbors(ctx)
			if err != nil {
				return err
			}
			for _, a := range nodeHops(b, false, "node-a", "node-b") {
				if n[a].State != "Established" {
					return fmt.Errorf("session with %s is %q", a, n[a].State)
				}
			}
			if s, ok := n[nodeHops(b, false, "node-c")[0]]; ok && s.State == "Established" {
				return fmt.Errorf("node-c, which the peer does not select, still has a session")
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		c.applyPeer("tor", torSpec(""))
		if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("the pool's bgp.nodeSelector decides which nodes advertise", func(t *testing.T) {
		c.applyPool("bgp", "addresses: [198.51.100.0/27, '2001:db8:300::/120']\nbgp:\n  nodeSelector:\n    matchLabels: {rack: r1}")
		if _, err := b.WaitNextHops(host(vip), nodeHops(b, false, "node-a", "node-b"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		c.applyPool("bgp", bgpPool)
		if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("externalTrafficPolicy Local follows the endpoints", func(t *testing.T) {
		c.createService(lbService("default", "local", map[string]string{"ironlb.dev/pool": "bgp"}, func(s *corev1.Service) {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}))
		lv := c.vip("default", "local")
		setEndpoint(t, ctx, c, "default", "local", "node-b")
		if _, err := b.WaitNextHops(host(lv), nodeHops(b, false, "node-b"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if node, err := b.ReachFromOutside(ctx, lv, 2*time.Second); err != nil || node != "node-b" {
			t.Errorf("reached %q (%v), want node-b", node, err)
		}
		setEndpoint(t, ctx, c, "default", "local", "node-c")
		if _, err := b.WaitNextHops(host(lv), nodeHops(b, false, "node-c"), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("an IPv6 VIP over the IPv4 sessions", func(t *testing.T) {
		c.createService(lbService("default", "v6", map[string]string{"ironlb.dev/pool": "bgp"}, func(s *corev1.Service) {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}))
		v6 := c.vip("default", "v6")
		if _, err := b.WaitNextHops(host(v6), nodeHops(b, true), 30*time.Second); err != nil {
			t.Fatal(err)
		}
		if _, err := b.ReachFromOutside(ctx, v6, 2*time.Second); err != nil {
			t.Errorf("reaching %s from outside: %v", v6, err)
		}
	})

	t.Run("communities, large communities and aggregation as FRR sees them", func(t *testing.T) {
		c.applyPool("agg", "addresses: [198.51.100.32/27]\nbgp:\n  advertisements:\n  - communities: ['65000:100', no-export]\n    largeCommunities: ['65000:1:2']\n  - aggregationLength: 27")
		c.createService(lbService("default", "agg", map[string]string{"ironlb.dev/pool": "agg"}))
		av := c.vip("default", "agg")
		err := rig.Eventually(30*time.Second, func() error {
			paths, err := b.Router.Paths(ctx, host(av))
			if err != nil {
				return err
			}
			if len(paths) != 3 {
				return fmt.Errorf("%d paths for %s, want 3", len(paths), av)
			}
			for _, p := range paths {
				if p.Community == nil || p.Community.String != "65000:100 no-export" || p.LargeCommunity == nil || p.LargeCommunity.String != "65000:1:2" {
					return fmt.Errorf("path %+v lacks the communities", p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(netip.MustParsePrefix("198.51.100.32/27"), all, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("a layer-2 pool and a BGP pool from the same speakers", func(t *testing.T) {
		c.createService(lbService("default", "lan", map[string]string{"ironlb.dev/pool": "l2"}))
		lv := c.vip("default", "lan")
		if _, err := b.WaitReachable(ctx, lv, 15*time.Second); err != nil {
			t.Errorf("layer-2 VIP %s from the LAN client: %v", lv, err)
		}
		if _, err := b.ReachFromOutside(ctx, vip, 2*time.Second); err != nil {
			t.Errorf("BGP VIP %s from outside: %v", vip, err)
		}
	})

	t.Run("a new hold time applies (the sessions are reset for it)", func(t *testing.T) {
		waitHold := func(ms int) {
			t.Helper()
			err := rig.Eventually(30*time.Second, func() error {
				n, err := b.Router.Neighbors(ctx)
				if err != nil {
					return err
				}
				for _, a := range all {
					if n[a].State != "Established" || n[a].HoldTimeMsecs != ms {
						return fmt.Errorf("session with %s: %s, hold time %dms, want Established with %dms", a, n[a].State, n[a].HoldTimeMsecs, ms)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
				t.Fatal(err)
			}
		}
		c.applyPeer("tor", strings.Replace(torSpec(""), "holdTime: 9s", "holdTime: 6s", 1))
		waitHold(6000)
		c.applyPeer("tor", torSpec(""))
		waitHold(9000)
	})

	t.Run("a killed speaker's next hop goes, the others keep serving", func(t *testing.T) {
		n := b.Node("node-a")
		if err := b.KillSpeaker(n); err != nil {
			t.Fatal(err)
		}
		took, err := b.WaitNextHops(host(vip), nodeHops(b, false, "node-b", "node-c"), 30*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("the router dropped node-a's next hop %s after its speaker was killed", took.Round(time.Millisecond))
		for i := range 10 {
			if node, err := b.ReachFromOutside(ctx, vip, 2*time.Second); err != nil || node == "node-a" {
				t.Fatalf("connection %d: reached %q (%v)", i, node, err)
			}
		}
		if err := b.RestartSpeaker(ctx, n); err != nil {
			t.Fatal(err)
		}
		if _, err := b.WaitNextHops(host(vip), all, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("routes and connections stay while the CCM is stopped", func(t *testing.T) {
		if err := c.ccm.Stop(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		// The signal: every speaker noticed its CCM stream ended.
		for _, n := range b.Nodes {
			if err := n.Speaker.WaitForLog("CCM stream ended", 30*time.Second); err != nil {
				t.Logf("%s: %v", n.Name, err)
			}
		}
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := b.ReachFromOutside(ctx, vip, 2*time.Second); err != nil {
				t.Fatalf("with the CCM stopped: %v", err)
			}
			hops, err := b.Router.KernelNextHops(host(vip))
			if err != nil || !slices.Equal(hops, all) {
				t.Fatalf("with the CCM stopped, next hops %v (%v), want %v", hops, err, all)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

// TestBGPPassword: TCP MD5 from a Secret. With the wrong password no
// session comes up and the BGPPeer's status says why; fixing the Secret
// re-keys the sessions.
func TestBGPPassword(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, b := newBGP(t, ctx, rig.L2Options{}, " neighbor nodes password s3cret-pw\n")
	secret := func(pw string) {
		t.Helper()
		doc := fmt.Sprintf("apiVersion: v1\nkind: Secret\ntype: ironlb.dev/bgp-password\nmetadata:\n  name: tor-pw\n  namespace: %s\nstringData:\n  password: %s\n", b.SecretNamespace(), pw)
		if out, err := c.cp.KubectlStdin(ctx, doc, "apply", "-f", "-"); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	secret("wrong-pw")
	c.applyPeer("tor", torSpec("\n  passwordSecretRef: {name: tor-pw}"))
	c.applyPool("bgp", bgpPool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	peers := dynamic.NewForConfigOrDie(c.cp.Config).Resource(v1alpha1.BGPPeerResource)
	status := func() (summary string, errs []string, err error) {
		p, err := peers.Get(ctx, "tor", metav1.GetOptions{})
		if err != nil {
			return "", nil, err
		}
		summary, _, _ = unstructured.NestedString(p.Object, "status", "summary")
		sessions, _, _ := unstructured.NestedSlice(p.Object, "status", "sessions")
		for _, s := range sessions {
			m, _ := s.(map[string]any)
			e, _ := m["lastError"].(string)
			errs = append(errs, e)
		}
		return summary, errs, nil
	}
	// The signal: every node's session reports why it fails.
	err := rig.Eventually(60*time.Second, func() error {
		summary, errs, err := status()
		if err != nil {
			return err
		}
		if summary != "Established 0/3" || len(errs) != 3 {
			return fmt.Errorf("status %q %v", summary, errs)
		}
		for _, e := range errs {
			if !strings.Contains(e, "TCP MD5 password") {
				return fmt.Errorf("last errors %v, want each to name the TCP MD5 password", errs)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := b.Router.Neighbors(ctx); err != nil || len(n) != 0 {
		t.Fatalf("FRR has neighbors %v (%v) with the wrong password", n, err)
	}
	if err := rig.Eventually(10*time.Second, func() error {
		return findEvent(ctx, c.cp, "BGPPeer", "tor", "default", "Warning", "SessionFailed", "TCP MD5 password")
	}); err != nil {
		t.Error(err)
	}
	secret("s3cret-pw")
	err = rig.Eventually(60*time.Second, func() error {
		summary, _, err := status()
		if err != nil {
			return err
		}
		if summary != "Established 3/3" {
			return fmt.Errorf("status %q after fixing the password", summary)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.WaitNextHops(host(vip), nodeHops(b, false), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// The password never shows in the CCM's or the speakers' logs.
	for _, l := range []string{b.CCM.Log(), b.Nodes[0].Speaker.Log()} {
		if strings.Contains(l, "s3cret-pw") || strings.Contains(l, "wrong-pw") {
			t.Error("a password appears in a log")
		}
	}
}
