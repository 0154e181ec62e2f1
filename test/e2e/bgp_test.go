package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// bgpPool is a BGP-only pool the nodes route locally.
const bgpPool = "addresses: [198.51.100.0/26, '2001:db8:300::/120']\nbgp: {}"

// newBGP starts the BGP rig: the layer-2 rig with deploy/ applied, plus an
// FRR router peering with every node and an outside client behind it.
func newBGP(t *testing.T, ctx context.Context, opts rig.L2Options, routerExtra string) (*cluster, *rig.BGP) {
	t.Helper()
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	if err := frr.Usable(); err != nil {
		t.Skipf("FRR unusable: %v", err)
	}
	cp := controlplane.ForTest(t)
	c := &cluster{t: t, ctx: ctx, cp: cp, kubeconfig: installDeploy(t, ctx, cp)}
	c.pools = dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)
	lan := netrig.NewLAN(t)
	upstream := netrig.NewLAN(t)
	opts.Kubeconfig = c.kubeconfig
	b, err := rig.StartBGP(ctx, cp, lan, upstream, opts, routerExtra)
	t.Cleanup(func() {
		if b == nil {
			return
		}
		if t.Failed() {
			t.Logf("process logs:\n%s", b.Logs(40))
			if b.Router != nil {
				t.Logf("bgpd log:\n%s", b.Router.Log("bgpd"))
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
	c.applyPeer("tor", fmt.Sprintf("  peerAddress: %s\n  peerASN: %d\n  myASN: %d\n  holdTime: 9s\n  connectRetryTime: 1s",
		rig.RouterV4.Addr(), rig.RouterASN, rig.NodeASN))
	c.applyPool("bgp", bgpPool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	if !rig.BGPPoolV4.Contains(vip) {
		t.Fatalf("VIP %s not from the BGP pool %s", vip, rig.BGPPoolV4)
	}
	var nodes []string
	for _, n := range b.Nodes {
		nodes = append(nodes, n.IPv4.String())
	}
	slices.Sort(nodes)
	created := time.Now()
	err := rig.Eventually(30*time.Second, func() error {
		hops, err := b.RouteNextHops(vip)
		if err != nil {
			return err
		}
		if !slices.Equal(hops, nodes) {
			return fmt.Errorf("router's kernel route to %s via %v, want %v", vip, hops, nodes)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ECMP route over %d nodes in the router's kernel %s after the VIP was assigned", len(nodes), time.Since(created).Round(time.Millisecond))
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
