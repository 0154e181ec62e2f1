package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestSharingTenancy: sharing keys belong to their namespace. A tenant
// using another namespace's key, even asking for its address, gets a
// Warning Event and no address of it, and cannot keep the owner from
// adding ports; sharing across namespaces works when both sides name the
// other, and not when only one does; with externalTrafficPolicy Local,
// sharers must select the same pods. No Event of a refused tenant names
// the holder, its namespace or its key; the CCM's log does.
func TestSharingTenancy(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("shared", "addresses: [198.51.100.16/28]")
	for _, ns := range []string{"team-a", "team-b", "infra"} {
		c.createNamespace(ns, nil)
	}
	port := func(p int32) func(*corev1.Service) {
		return func(s *corev1.Service) {
			s.Spec.Ports = []corev1.ServicePort{{Name: "p", Port: p, Protocol: corev1.ProtocolTCP}}
		}
	}
	key := func(k string, kv ...string) map[string]string {
		m := map[string]string{"ironlb.dev/allow-shared-ip": k}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}

	// team-a shares an address between two of its Services.
	c.createService(lbService("team-a", "web", key("web"), port(80)))
	c.createService(lbService("team-a", "web-tls", key("web"), port(443)))
	addr := c.waitIngress("team-a", "web", 1, 30*time.Second)[0]
	if got := c.waitIngress("team-a", "web-tls", 1, 30*time.Second)[0]; got != addr {
		t.Fatalf("team-a's Services got %s and %s; want one shared address", addr, got)
	}

	t.Run("another namespace cannot join by key", func(t *testing.T) {
		c.createService(lbService("team-b", "intruder", key("web", "ironlb.dev/load-balancer-ips", addr), port(8080)))
		c.waitEvent("team-b", "intruder", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			"team-b/intruder cannot use "+addr+": it is in use and not shared with this Service")
		c.stillPending("team-b", "intruder")
		// A key team-b does not know, and no key: the same answer.
		c.createService(lbService("team-b", "guesser", key("guess", "ironlb.dev/load-balancer-ips", addr), port(8080)))
		c.waitEvent("team-b", "guesser", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			"team-b/guesser cannot use "+addr+": it is in use and not shared with this Service")
		c.createService(lbService("team-b", "keyless", map[string]string{"ironlb.dev/load-balancer-ips": addr}, port(8080)))
		c.waitEvent("team-b", "keyless", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
			"team-b/keyless cannot use "+addr+": it is in use, and this Service has no sharing key")
		c.noEventMentions("team-b", "team-a", "web-tls", "team-a/web")
		// The administrator reads who holds it in the CCM's log.
		if err := c.ccm.WaitForLog(`service="team-b/guesser" address="`+addr+`" reason="InUse" holders=["team-a/web","team-a/web-tls"] sharingKey="team-a/web"`, 30*time.Second); err != nil {
			t.Error(err)
		}
		// With the same key and no address asked for, it gets its own.
		c.createService(lbService("team-b", "same-key", key("web"), port(8080)))
		if got := c.waitIngress("team-b", "same-key", 1, 30*time.Second)[0]; got == addr {
			t.Errorf("team-b/same-key got team-a's address %s", got)
		}
		// team-a still adds ports to its address.
		c.createService(lbService("team-a", "web-alt", key("web"), port(8080)))
		if got := c.waitIngress("team-a", "web-alt", 1, 30*time.Second)[0]; got != addr {
			t.Errorf("team-a/web-alt got %s, want the shared %s", got, addr)
		}
	})

	t.Run("across namespaces only when both agree", func(t *testing.T) {
		c.createService(lbService("infra", "dns", key("dns", "ironlb.dev/sharing-cross-namespace", "team-a"), port(53)))
		dns := c.waitIngress("infra", "dns", 1, 30*time.Second)[0]
		// team-a agrees: it joins.
		c.createService(lbService("team-a", "dns-metrics", key("dns", "ironlb.dev/sharing-cross-namespace", "infra"), port(9153)))
		if got := c.waitIngress("team-a", "dns-metrics", 1, 30*time.Second)[0]; got != dns {
			t.Errorf("team-a/dns-metrics got %s, want infra's %s", got, dns)
		}
		// team-b names infra, but infra did not name team-b: refused.
		c.createService(lbService("team-b", "dns-too", key("dns", "ironlb.dev/sharing-cross-namespace", "infra", "ironlb.dev/load-balancer-ips", dns), port(5353)))
		c.waitEvent("team-b", "dns-too", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "sharing across namespaces needs both to allow the other's")
		c.stillPending("team-b", "dns-too")
		c.noEventMentions("team-b", "infra/dns", "team-a/dns-metrics")
	})

	t.Run("externalTrafficPolicy Local sharers select the same pods", func(t *testing.T) {
		local := func(app string, p int32) func(*corev1.Service) {
			return func(s *corev1.Service) {
				port(p)(s)
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.Selector = map[string]string{"app": app}
			}
		}
		c.createService(lbService("team-a", "api", key("api"), local("api", 80)))
		api := c.waitIngress("team-a", "api", 1, 30*time.Second)[0]
		c.createService(lbService("team-a", "api-tls", key("api"), local("api", 443)))
		if got := c.waitIngress("team-a", "api-tls", 1, 30*time.Second)[0]; got != api {
			t.Errorf("team-a/api-tls got %s, want the shared %s", got, api)
		}
		c.createService(lbService("team-a", "other", key("api", "ironlb.dev/load-balancer-ips", api), local("other", 8080)))
		c.waitEvent("team-a", "other", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "sharers must select the same pods")
	})

	// The refused never got the address.
	for _, n := range [][2]string{{"team-b", "intruder"}, {"team-b", "guesser"}, {"team-b", "keyless"}, {"team-b", "dns-too"}} {
		svc, err := c.cp.Client.CoreV1().Services(n[0]).Get(ctx, n[1], metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ingress(svc)) != 0 {
			t.Errorf("%s/%s holds %v", n[0], n[1], ingress(svc))
		}
	}
}
