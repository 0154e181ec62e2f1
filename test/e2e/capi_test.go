package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/loadbalancer/capiipam"
	"github.com/ironlb/ironlb/test/capicrds"
	"github.com/ironlb/ironlb/test/rig"
)

// TestClusterAPIClaims runs the shipped CCM (deploy/'s RBAC) on a control
// plane with Cluster API's own CRDs: an IPAddressClaim naming an IronLB
// pool is answered with an IPAddress; the pool's Services never get the
// claim's address (the last one waits for a free one); a restart of the
// CCM changes nothing; deleting the claim frees its address, which the
// waiting Service then gets.
func TestClusterAPIClaims(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	crds, err := capicrds.Paths(ctx, capicrds.Claims, capicrds.Addresses, capicrds.Clusters)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"apply", "--server-side"}
	for _, f := range crds {
		args = append(args, "-f", f)
	}
	if out, err := c.cp.Kubectl(ctx, args...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := c.cp.Kubectl(ctx, "wait", "--for=condition=Established", "--timeout=60s",
		"crd/ipaddressclaims.ipam.cluster.x-k8s.io", "crd/ipaddresses.ipam.cluster.x-k8s.io"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	c.createNamespace("machines", nil)
	// Four addresses, the gateway outside them.
	c.applyPool("metal", "addresses: [198.51.100.8/30]\nautoAssign: false\nclusterAPI:\n  prefix: 24\n  gateway: 198.51.100.1")
	dyn := dynamic.NewForConfigOrDie(c.cp.Config)
	claims := dyn.Resource(capiipam.ClaimResource).Namespace("machines")
	addresses := dyn.Resource(capiipam.AddressResource).Namespace("machines")
	claim := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "ipam.cluster.x-k8s.io/v1beta2", "kind": "IPAddressClaim",
		"metadata": map[string]any{"name": "node-1", "namespace": "machines"},
		"spec":     map[string]any{"poolRef": map[string]any{"apiGroup": "ironlb.dev", "kind": "IPPool", "name": "metal"}},
	}}
	// The claim controller starts watching once it sees the CRDs (it
	// checks discovery every minute): wait for its answer.
	if _, err := claims.Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var machine netip.Addr
	err = rig.Eventually(90*time.Second, func() error {
		a, err := addresses.Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			return err
		}
		spec, _, _ := unstructured.NestedMap(a.Object, "spec")
		s, _ := spec["address"].(string)
		if machine, err = netip.ParseAddr(s); err != nil {
			return fmt.Errorf("IPAddress spec %v: %w", spec, err)
		}
		if spec["gateway"] != "198.51.100.1" || spec["prefix"] != int64(24) {
			return fmt.Errorf("IPAddress spec %v: want gateway 198.51.100.1, prefix 24", spec)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("claim not answered: %v\nCCM log:\n%s", err, c.ccm.Log())
	}
	if !netip.MustParsePrefix("198.51.100.8/30").Contains(machine) {
		t.Fatalf("the machine got %s, outside the pool", machine)
	}
	if out, err := c.cp.Kubectl(ctx, "get", "-n", "machines", "ipaddresses.ipam.cluster.x-k8s.io", "node-1", "-o", "yaml"); err == nil {
		t.Logf("claim answered with %s:\n%s", machine, out)
	}
	if out, err := c.cp.Kubectl(ctx, "get", "-n", "machines", "ipaddressclaim", "node-1", "-o", "jsonpath={.status}"); err == nil {
		t.Logf("claim status: %s", out)
	}

	// Three Services get the other three addresses; the fourth waits.
	for i := 1; i <= 4; i++ {
		c.createService(lbService("default", fmt.Sprintf("metal-%d", i), map[string]string{"ironlb.dev/pool": "metal"}))
	}
	services := func() (got []string, pending []string) {
		for i := 1; i <= 4; i++ {
			name := fmt.Sprintf("metal-%d", i)
			svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if ips := ingress(svc); len(ips) > 0 {
				got = append(got, ips...)
			} else {
				pending = append(pending, name)
			}
		}
		return got, pending
	}
	var pending []string
	err = rig.Eventually(60*time.Second, func() error {
		got, p := services()
		pending = p
		if len(got) != 3 || len(p) != 1 {
			return fmt.Errorf("addresses %v, pending %v: want 3 and 1", got, p)
		}
		if slices.Contains(got, machine.String()) {
			return fmt.Errorf("a Service got the machine's address %s: %v", machine, got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.waitEvent("default", pending[0], corev1.EventTypeWarning, "SyncLoadBalancerFailed", "exhausted")

	parent := t // the new CCM outlives the subtest
	t.Run("a CCM restart keeps the machine's address from Services", func(t *testing.T) {
		before, _ := services()
		if err := c.ccm.Stop(10 * time.Second); err != nil {
			t.Logf("stopping the CCM: %v", err)
		}
		c.ccm = rig.StartCCMForTest(parent, rig.CCMOptions{Kubeconfig: c.kubeconfig, LeaderElect: true})
		// The new CCM has restored once it answers: the pending Service
		// is refused again, after the restart.
		// The new CCM has restored once it refuses the waiting Service
		// again: that comes from its own log.
		err := rig.Eventually(90*time.Second, func() error {
			if log := c.ccm.Log(); !strings.Contains(log, "error processing service default/"+pending[0]) {
				return fmt.Errorf("the new CCM has not refused %s yet", pending[0])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		after, p := services()
		slices.Sort(before)
		slices.Sort(after)
		if !slices.Equal(before, after) || len(p) != 1 {
			t.Fatalf("after the restart: %v pending %v; before %v", after, p, before)
		}
		a, err := addresses.Get(ctx, "node-1", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got, _, _ := unstructured.NestedString(a.Object, "spec", "address"); got != machine.String() {
			t.Fatalf("the IPAddress now holds %s, want %s", got, machine)
		}
	})

	t.Run("deleting the claim frees its address for the waiting Service", func(t *testing.T) {
		if err := claims.Delete(ctx, "node-1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		err := rig.Eventually(60*time.Second, func() error {
			if _, err := addresses.Get(ctx, "node-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("IPAddress still there (%v)", err)
			}
			if _, err := claims.Get(ctx, "node-1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("claim still there (%v)", err)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%v\nCCM log:\n%s", err, c.ccm.Log())
		}
		ips := c.waitIngress("default", pending[0], 1, 60*time.Second)
		if ips[0] != machine.String() {
			t.Fatalf("the waiting Service got %v, want the freed %s", ips, machine)
		}
	})
}
