package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
)

// TestPoolNamespaceBoundary: spec.serviceAllocation.namespaces is a
// boundary that Service labels cannot cross. A Service of team-b labelled
// to match the pool's serviceSelector gets no address of team-a's pool and
// a Warning Event saying why; team-a's Service gets one. Editing the pool
// to drop team-a leaves team-a its address, with a Warning Event
// AddressNoLongerAllowed and ironlb_services_outside_pool_policy at 1;
// restoring the pool ends both. A team-b Service asking for an address
// team-a holds (spec.loadBalancerIP, the ironlb.dev/load-balancer-ips
// annotation) is refused, and team-a keeps it. Relabelling a namespace out
// of a pool's namespaceSelector is reported like a pool edit.
func TestPoolNamespaceBoundary(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, metrics := newClusterWithMetrics(t, ctx)
	for _, ns := range []string{"team-a", "team-b"} {
		c.createNamespace(ns, nil)
	}
	const tenantPool = `addresses: [198.51.100.32/29]
serviceAllocation:
  namespaces: [%s]
  serviceSelector:
    matchLabels: {exposure: public}`
	c.applyPool("tenant-a", fmt.Sprintf(tenantPool, "team-a"))
	public := func(s *corev1.Service) { s.Labels = map[string]string{"exposure": "public"} }
	outside := func(n int) string { return fmt.Sprintf(`ironlb_services_outside_pool_policy{pool="tenant-a"} %d`, n) }

	var addrA string
	t.Run("labels do not cross the namespace boundary", func(t *testing.T) {
		c.createService(lbService("team-b", "posing", nil, public))
		c.waitEvent("team-b", "posing", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			`no auto-assign pool with IPv4 addresses allows team-b/posing (pool "tenant-a": namespace team-b is not among spec.serviceAllocation.namespaces)`)
		c.stillPending("team-b", "posing")
	})
	t.Run("the named namespace gets an address", func(t *testing.T) {
		c.createService(lbService("team-a", "web", nil, public))
		addrA = c.waitIngress("team-a", "web", 1, 30*time.Second)[0]
		if !inPrefix(t, addrA, "198.51.100.32/29") {
			t.Fatalf("team-a/web got %s, want an address of pool tenant-a", addrA)
		}
		waitMetricLines(t, metrics, outside(0))
	})
	if addrA == "" {
		t.FailNow()
	}

	t.Run("a pool edit keeps the address and says so", func(t *testing.T) {
		c.applyPool("tenant-a", fmt.Sprintf(tenantPool, "team-z"))
		c.waitEvent("team-a", "web", corev1.EventTypeWarning, "AddressNoLongerAllowed",
			"Keeping "+addrA+", but IPPool tenant-a no longer allows this Service: namespace team-a is not among spec.serviceAllocation.namespaces")
		waitMetricLines(t, metrics, outside(1))
		// A sync of the Service (the signal: its EnsuredLoadBalancer Event
		// counts one more) keeps the address.
		synced := eventCountIn(t, ctx, c, "team-a", "web", "EnsuredLoadBalancer")
		touchService(t, ctx, c, "team-a", "web", "1")
		if err := rig.Eventually(30*time.Second, func() error {
			if n := eventCountIn(t, ctx, c, "team-a", "web", "EnsuredLoadBalancer"); n <= synced {
				return fmt.Errorf("team-a/web not synced after the touch (%d EnsuredLoadBalancer Events)", n)
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if got := c.waitIngress("team-a", "web", 1, time.Second)[0]; got != addrA {
			t.Fatalf("team-a/web changed from %s to %s after the pool stopped allowing it", addrA, got)
		}
		waitMetricLines(t, metrics, outside(1))

		c.applyPool("tenant-a", fmt.Sprintf(tenantPool, "team-a"))
		c.waitEvent("team-a", "web", corev1.EventTypeNormal, "AddressAllowedAgain", addrA+" is no longer outside the serviceAllocation of IPPool tenant-a")
		waitMetricLines(t, metrics, outside(0))
	})

	t.Run("another tenant's held address stays refused", func(t *testing.T) {
		// Through spec.loadBalancerIP, for an address of team-a's pool.
		c.createService(lbService("team-b", "thief", nil, public, func(s *corev1.Service) { s.Spec.LoadBalancerIP = addrA }))
		c.waitEvent("team-b", "thief", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			`team-b/thief cannot use `+addrA+`: pool "tenant-a" does not allow team-b/thief: namespace team-b is not among spec.serviceAllocation.namespaces`)
		c.stillPending("team-b", "thief")

		// Through the annotation, for an address of a pool open to both:
		// the holder decides.
		c.applyPool("open", "addresses: [203.0.113.40/30]\nautoAssign: false")
		c.createService(lbService("team-a", "api", map[string]string{"ironlb.dev/pool": "open"}))
		addrOpen := c.waitIngress("team-a", "api", 1, 30*time.Second)[0]
		c.createService(lbService("team-b", "thief-too", map[string]string{"ironlb.dev/load-balancer-ips": addrOpen}))
		c.waitEvent("team-b", "thief-too", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			"team-b/thief-too cannot use "+addrOpen+": it is in use, and this Service has no sharing key")
		c.stillPending("team-b", "thief-too")
		c.noEventMentions("team-b", "team-a")

		for name, want := range map[string]string{"web": addrA, "api": addrOpen} {
			if got := c.waitIngress("team-a", name, 1, time.Second)[0]; got != want {
				t.Errorf("team-a/%s holds %s, want %s", name, got, want)
			}
		}
		c.checkNoSharedAddresses(nil)
	})

	t.Run("an open pool overlapping the restricted one does not open it", func(t *testing.T) {
		// wide covers tenant-a's /29 and the next one, for everyone.
		c.applyPool("wide", "addresses: [198.51.100.32/28]")
		restricted := "198.51.100.33"
		if restricted == addrA {
			restricted = "198.51.100.34"
		}
		c.createService(lbService("team-b", "overlap-ip", nil, func(s *corev1.Service) { s.Spec.LoadBalancerIP = restricted }))
		c.waitEvent("team-b", "overlap-ip", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			`team-b/overlap-ip cannot use `+restricted+`: pool "tenant-a" does not allow team-b/overlap-ip`)
		c.stillPending("team-b", "overlap-ip")
		// Candidate search, from the open pool by name and by auto-assign
		// (team-b/posing, pending so far, gets one too).
		c.createService(lbService("team-b", "overlap-named", map[string]string{"ironlb.dev/pool": "wide"}))
		c.createService(lbService("team-b", "overlap-auto", nil))
		for _, name := range []string{"overlap-named", "overlap-auto", "posing"} {
			if got := c.waitIngress("team-b", name, 1, 30*time.Second)[0]; !inPrefix(t, got, "198.51.100.40/29") {
				t.Errorf("team-b/%s got %s, want one of the open pool outside tenant-a's 198.51.100.32/29", name, got)
			}
		}
		// team-a still gets the overlap from its own pool.
		c.createService(lbService("team-a", "overlap-a", nil, public, func(s *corev1.Service) { s.Spec.LoadBalancerIP = restricted }))
		if got := c.waitIngress("team-a", "overlap-a", 1, 30*time.Second)[0]; got != restricted {
			t.Errorf("team-a/overlap-a got %s, want %s", got, restricted)
		}
		if err := rig.Eventually(30*time.Second, func() error {
			if cond := meta.FindStatusCondition(c.pool("wide").Status.Conditions, v1alpha1.ConditionConflicting); cond == nil || cond.Status != metav1.ConditionTrue {
				return fmt.Errorf("IPPool wide Conflicting = %+v, want True", cond)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
		for _, name := range []string{"overlap-ip", "overlap-named", "overlap-auto", "posing"} {
			if err := c.cp.Client.CoreV1().Services("team-b").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}
	})

	t.Run("a namespace relabelled out of a pool keeps its address and says so", func(t *testing.T) {
		c.createNamespace("team-c", map[string]string{"tier": "gold"})
		c.applyPool("gold", "addresses: [203.0.113.48/30]\nautoAssign: false\nserviceAllocation:\n  namespaceSelector: {matchLabels: {tier: gold}}")
		c.createService(lbService("team-c", "shop", map[string]string{"ironlb.dev/pool": "gold"}))
		addr := c.waitIngress("team-c", "shop", 1, 30*time.Second)[0]
		gold := func(n int) string { return fmt.Sprintf(`ironlb_services_outside_pool_policy{pool="gold"} %d`, n) }
		waitMetricLines(t, metrics, gold(0))

		relabel := func(tier string) {
			t.Helper()
			ns, err := c.cp.Client.CoreV1().Namespaces().Get(ctx, "team-c", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ns.Labels["tier"] = tier
			if _, err := c.cp.Client.CoreV1().Namespaces().Update(ctx, ns, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		relabel("bronze")
		c.waitEvent("team-c", "shop", corev1.EventTypeWarning, "AddressNoLongerAllowed",
			"Keeping "+addr+", but IPPool gold no longer allows this Service: the labels of namespace team-c do not match spec.serviceAllocation.namespaceSelector")
		waitMetricLines(t, metrics, gold(1), outside(0))
		relabel("gold")
		c.waitEvent("team-c", "shop", corev1.EventTypeNormal, "AddressAllowedAgain", addr+" is no longer outside the serviceAllocation of IPPool gold")
		waitMetricLines(t, metrics, gold(0))
		if got := c.waitIngress("team-c", "shop", 1, time.Second)[0]; got != addr {
			t.Errorf("team-c/shop holds %s, want %s", got, addr)
		}
	})
}

// newClusterWithMetrics is newCluster with the CCM's /metrics readable
// without a token; the second result fetches it.
func newClusterWithMetrics(t *testing.T, ctx context.Context) (*cluster, func() (string, error)) {
	t.Helper()
	cp := controlplane.ForTest(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	c := &cluster{t: t, ctx: ctx, cp: cp, kubeconfig: installDeploy(t, ctx, cp)}
	c.pools = dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)
	c.ccm = rig.StartCCMForTest(t, rig.CCMOptions{
		Kubeconfig: c.kubeconfig, LeaderElect: true, SecurePort: port,
		Args: []string{
			"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
			// This test measures no failover: a slow API server on a
			// loaded machine must not cost the CCM its lease.
			"--leader-elect-lease-duration=20s", "--leader-elect-renew-deadline=15s",
		},
	})
	return c, func() (string, error) {
		return rig.Get(ctx, nil, fmt.Sprintf("https://127.0.0.1:%d/metrics", port))
	}
}

// waitMetricLines waits until /metrics has every line.
func waitMetricLines(t *testing.T, metrics func() (string, error), lines ...string) {
	t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		m, err := metrics()
		if err != nil {
			return err
		}
		for _, l := range lines {
			if !strings.Contains(m, l+"\n") {
				return fmt.Errorf("CCM /metrics lacks %q", l)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// eventCountIn sums the counts of the Events of the reason on a Service.
func eventCountIn(t *testing.T, ctx context.Context, c *cluster, namespace, name, reason string) int32 {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": "Service", "involvedObject.name": name}.AsSelector().String()
	evs, err := c.cp.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, e := range evs.Items {
		if e.Reason == reason {
			n += max(e.Count, 1)
		}
	}
	return n
}

// touchService sets an annotation, which makes the service controller sync
// the Service.
func touchService(t *testing.T, ctx context.Context, c *cluster, namespace, name, value string) {
	t.Helper()
	svcs := c.cp.Client.CoreV1().Services(namespace)
	svc, err := svcs.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Annotations == nil {
		svc.Annotations = map[string]string{}
	}
	svc.Annotations["example.com/touched"] = value
	if _, err := svcs.Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}
