package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/rig"
)

// TestMetalLBServiceAndExhaustion: a Service written for MetalLB (its
// address-pool annotation, a /30 pool) gets an address from the named pool;
// the fifth stays pending with an Event naming the pool and its usage, and
// gets the address freed when another Service is deleted.
func TestMetalLBServiceAndExhaustion(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("default", "addresses: [192.0.2.0/24]")
	c.applyPool("legacy", "addresses: [198.51.100.0/30]\nautoAssign: false")

	for i := 1; i <= 5; i++ {
		c.createService(lbService("default", fmt.Sprintf("metallb-%d", i), map[string]string{"metallb.universe.tf/address-pool": "legacy"}))
	}
	// The service controller syncs with 10 workers, so which four of the
	// five get the pool's four addresses is up to its scheduling: wait for
	// any four, and for the fifth to be refused.
	var got []string
	pending, holder := "", ""
	err := rig.Eventually(30*time.Second, func() error {
		got, pending, holder = nil, "", ""
		for i := 1; i <= 5; i++ {
			name := fmt.Sprintf("metallb-%d", i)
			svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			switch ips := ingress(svc); len(ips) {
			case 0:
				if pending != "" {
					return fmt.Errorf("%s and %s have no address yet", pending, name)
				}
				pending = name
			case 1:
				got = append(got, ips[0])
				holder = name
			default:
				return fmt.Errorf("%s has ingress %v, want 1 address", name, ips)
			}
		}
		if len(got) != 4 {
			return fmt.Errorf("%d of 5 Services have an address (%v), want 4", len(got), got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, ip := range got {
		if !inPrefix(t, ip, "198.51.100.0/30") {
			t.Errorf("got %s, outside the legacy pool", ip)
		}
	}
	slices.Sort(got)
	if diff := slices.Compact(slices.Clone(got)); len(diff) != 4 {
		t.Fatalf("addresses not distinct: %v", got)
	}
	c.waitEvent("default", pending, corev1.EventTypeWarning, "SyncLoadBalancerFailed", `pool "legacy": 4 of 4 IPv4 addresses in use`)
	c.stillPending("default", pending)
	c.waitEvent("default", holder, corev1.EventTypeNormal, "IPAllocated", "from IPPool legacy")

	// The pool's status counts the usage.
	err = rig.Eventually(10*time.Second, func() error {
		p := c.pool("legacy")
		if p.Status.IPv4 == nil || p.Status.IPv4.Used != 4 || p.Status.IPv4.Free != "0" || p.Status.Used != 4 {
			return fmt.Errorf("legacy status = %+v", p.Status)
		}
		if r := meta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); r == nil || r.Status != metav1.ConditionTrue {
			return fmt.Errorf("legacy Ready = %+v", r)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// Recovery: free one address; the pending Service gets it soon.
	freed := c.waitIngress("default", holder, 1, time.Second)[0]
	if err := c.cp.Client.CoreV1().Services("default").Delete(ctx, holder, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if ip := c.waitIngress("default", pending, 1, 30*time.Second)[0]; ip != freed {
		t.Errorf("%s got %s, want the freed %s", pending, ip, freed)
	}
	t.Logf("pending Service got the freed address %s after %s", freed, time.Since(start).Round(time.Millisecond))

	out, err := c.cp.Kubectl(ctx, "get", "ippools")
	if err != nil {
		t.Fatal(err)
	}
	for _, col := range []string{"ADDRESSES", "USED", "FREE IPV4", "READY", `["198.51.100.0/30"]`} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get ippools lacks %q:\n%s", col, out)
		}
	}
	t.Logf("kubectl get ippools:\n%s", out)
}

// TestAllocationRules covers pool choice, requests, dual-stack and sharing
// on the real API server.
func TestAllocationRules(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("low", "addresses: [203.0.113.0/28]\npriority: 1")
	c.applyPool("high", "addresses: [192.0.2.16/30, '2001:db8:1::/120']\npriority: 10\navoidBuggyIPs: true")
	c.applyPool("v6only", "addresses: ['2001:db8:6::/64']\npriority: 5")
	c.applyPool("team-a", `addresses: [198.51.100.0/28]
autoAssign: false
serviceAllocation:
  namespaceSelector:
    matchLabels: {team: a}`)
	c.createNamespace("team-a", map[string]string{"team": "a"})
	c.createNamespace("team-b", map[string]string{"team": "b"})

	t.Run("highest priority pool first", func(t *testing.T) {
		c.createService(lbService("default", "prio", nil))
		if ip := c.waitIngress("default", "prio", 1, 30*time.Second)[0]; !inPrefix(t, ip, "192.0.2.16/30") {
			t.Errorf("got %s, want it from pool high", ip)
		}
	})
	t.Run("requested address", func(t *testing.T) {
		c.createService(lbService("default", "wants-ip", map[string]string{"ironlb.dev/load-balancer-ips": "203.0.113.9"}))
		if ip := c.waitIngress("default", "wants-ip", 1, 30*time.Second)[0]; ip != "203.0.113.9" {
			t.Errorf("got %s, want 203.0.113.9", ip)
		}
	})
	t.Run("requested address in no pool", func(t *testing.T) {
		c.createService(lbService("default", "outside", map[string]string{"ironlb.dev/load-balancer-ips": "192.0.2.200"}))
		c.waitEvent("default", "outside", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "cannot use 192.0.2.200: it is in no IP pool")
	})
	t.Run("namespace selector", func(t *testing.T) {
		c.createService(lbService("team-a", "svc", map[string]string{"ironlb.dev/pool": "team-a"}))
		if ip := c.waitIngress("team-a", "svc", 1, 30*time.Second)[0]; !inPrefix(t, ip, "198.51.100.0/28") {
			t.Errorf("got %s, want it from pool team-a", ip)
		}
		c.createService(lbService("team-b", "svc", map[string]string{"ironlb.dev/pool": "team-a"}))
		c.waitEvent("team-b", "svc", corev1.EventTypeWarning, "SyncLoadBalancerFailed", `pool "team-a" does not allow team-b/svc`)
	})
	t.Run("dual-stack", func(t *testing.T) {
		prefer := corev1.IPFamilyPolicyPreferDualStack
		c.createService(lbService("default", "dual", nil, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &prefer
		}))
		got := c.waitIngress("default", "dual", 2, 30*time.Second)
		if !inPrefix(t, got[0], "192.0.2.16/30") || !inPrefix(t, got[1], "2001:db8:1::/120") {
			t.Errorf("dual-stack got %v, want IPv4 then IPv6 from pool high", got)
		}
		single6 := corev1.IPFamilyPolicySingleStack
		c.createService(lbService("default", "v6", nil, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &single6
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}))
		if ip := c.waitIngress("default", "v6", 1, 30*time.Second)[0]; !inPrefix(t, ip, "2001:db8:1::/120") {
			t.Errorf("single-stack IPv6 got %s", ip)
		}
		require := corev1.IPFamilyPolicyRequireDualStack
		c.createService(lbService("default", "require", map[string]string{"ironlb.dev/pool": "v6only"}, func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = &require
		}))
		c.waitEvent("default", "require", corev1.EventTypeWarning, "SyncLoadBalancerFailed", `pool "v6only" requested by default/require has no IPv4 addresses`)
		c.stillPending("default", "require")
	})
	t.Run("sharing", func(t *testing.T) {
		shared := map[string]string{"metallb.universe.tf/allow-shared-ip": "dns", "ironlb.dev/pool": "low"}
		c.createService(lbService("default", "dns-tcp", shared, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolTCP}}
		}))
		c.createService(lbService("default", "dns-udp", shared, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}
		}))
		tcp := c.waitIngress("default", "dns-tcp", 1, 30*time.Second)[0]
		udp := c.waitIngress("default", "dns-udp", 1, 30*time.Second)[0]
		if tcp != udp {
			t.Errorf("dns-tcp got %s and dns-udp %s; want one shared address", tcp, udp)
		}
		// Same key, same port: may not share, so it asks for the address
		// explicitly and gets a clear error.
		c.createService(lbService("default", "dns-clash", map[string]string{"ironlb.dev/allow-shared-ip": "dns", "ironlb.dev/load-balancer-ips": tcp}, func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolTCP}}
		}))
		c.waitEvent("default", "dns-clash", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "already uses TCP/53")
	})
	t.Run("type change releases", func(t *testing.T) {
		c.createService(lbService("default", "temp", map[string]string{"ironlb.dev/pool": "low"}))
		ip := c.waitIngress("default", "temp", 1, 30*time.Second)[0]
		svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "temp", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.Type = corev1.ServiceTypeClusterIP
		if _, err := c.cp.Client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.waitIngress("default", "temp", 0, 30*time.Second)
		c.createService(lbService("default", "reuse", map[string]string{"ironlb.dev/load-balancer-ips": ip}))
		if got := c.waitIngress("default", "reuse", 1, 30*time.Second)[0]; got != ip {
			t.Errorf("reuse got %s, want the released %s", got, ip)
		}
	})
	t.Run("overlapping pools conflict", func(t *testing.T) {
		c.applyPool("overlap", "addresses: [203.0.113.8-203.0.113.20]")
		err := rig.Eventually(10*time.Second, func() error {
			for _, name := range []string{"low", "overlap"} {
				cond := meta.FindStatusCondition(c.pool(name).Status.Conditions, v1alpha1.ConditionConflicting)
				if cond == nil || cond.Status != metav1.ConditionTrue {
					return fmt.Errorf("pool %s Conflicting = %+v", name, cond)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// Addresses of pool low held already are never handed out again
		// through pool overlap.
		for i := range 6 {
			c.createService(lbService("default", fmt.Sprintf("via-overlap-%d", i), map[string]string{"ironlb.dev/pool": "overlap"}))
		}
		for i := range 6 {
			c.waitIngress("default", fmt.Sprintf("via-overlap-%d", i), 1, 30*time.Second)
		}
		c.checkNoSharedAddresses(map[string]bool{"default/dns-tcp": true, "default/dns-udp": true})
	})
}

// TestPoolChangesKeepAddresses: shrinking or deleting a pool never takes an
// address from a Service, also across a CCM restart; the Service gets a
// Warning Event instead.
func TestPoolChangesKeepAddresses(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("p", "addresses: [192.0.2.0/29]")
	c.createService(lbService("default", "a", nil))
	ipA := c.waitIngress("default", "a", 1, 30*time.Second)[0]
	c.createService(lbService("default", "b", nil))
	ipB := c.waitIngress("default", "b", 1, 30*time.Second)[0]

	touch := func(name, value string) {
		t.Helper()
		svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Annotations = map[string]string{"example.com/touched": value}
		if _, err := c.cp.Client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	c.applyPool("p", "addresses: [192.0.2.4/30]") // shrink away from a and b
	// The Event comes when the pool changes, without a resync of a.
	c.waitEvent("default", "a", corev1.EventTypeWarning, "AddressOutsidePools", ipA+" is in no IPPool any more")
	touch("a", "1")
	if got := c.waitIngress("default", "a", 1, time.Second)[0]; got != ipA {
		t.Fatalf("a changed from %s to %s after the pool shrank", ipA, got)
	}

	if err := c.pools.Delete(ctx, "p", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.ccm.Stop(10 * time.Second)
	rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-2", Kubeconfig: c.kubeconfig, LeaderElect: true})
	c.waitEvent("default", "b", corev1.EventTypeWarning, "AddressOutsidePools", ipB+" is in no IPPool any more")
	// The signal: the new CCM synced b again after the touch.
	synced := eventCount(t, ctx, c, "b", "EnsuringLoadBalancer")
	touch("b", "2")
	if err := rig.Eventually(30*time.Second, func() error {
		if eventCount(t, ctx, c, "b", "EnsuringLoadBalancer") <= synced {
			return fmt.Errorf("b not synced after the touch")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"a": ipA, "b": ipB} {
		if got := c.waitIngress("default", name, 1, time.Second)[0]; got != want {
			t.Errorf("%s changed from %s to %s after the pool was deleted and the CCM restarted", name, want, got)
		}
	}
	c.createService(lbService("default", "late", nil))
	c.waitEvent("default", "late", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "no IP pools configured")
}
