package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/test/rig"
)

func withClass(class string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To(class) }
}

// TestLoadBalancerClass: with the default cloud config IronLB serves
// class-less Services (through the service controller) and those of its
// class ironlb.dev/ironlb (its own controller, its own finalizer, status
// with ipMode VIP), side by side with a Service of another class, which it
// never touches. An address another load balancer wrote into that
// Service's status is never given to IronLB's Services (one that asks
// for it stays pending with a Warning) until the other lets go of it. A
// CCM restart changes nothing; a change of type and a deletion release
// the addresses of IronLB's class as they do a class-less Service's.
func TestLoadBalancerClass(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, metrics := newClusterWithMetrics(t, ctx)
	c.applyPool("lan", "addresses: [192.0.2.0/29]")
	svcs := c.cp.Client.CoreV1().Services("default")

	c.createService(lbService("default", "foreign", nil, withClass("example.com/other")))
	c.createService(lbService("default", "plain", nil))
	c.createService(lbService("default", "classy", nil, withClass(lbclass.DefaultName)))
	plainIP := c.waitIngress("default", "plain", 1, 30*time.Second)[0]
	classyIP := c.waitIngress("default", "classy", 1, 30*time.Second)[0]
	for name, want := range map[string][]string{"plain": {lbclass.StandardFinalizer}, "classy": {lbclass.Finalizer}} {
		s, err := svcs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Finalizers, want) {
			t.Errorf("%s has finalizers %v, want %v", name, s.Finalizers, want)
		}
		if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeVIP {
			t.Errorf("%s has ipMode %v, want VIP", name, m)
		}
	}
	c.waitEvent("default", "classy", corev1.EventTypeNormal, "EnsuredLoadBalancer", "Ensured load balancer")
	c.waitEvent("default", "classy", corev1.EventTypeNormal, "IPAllocated", "Assigned "+classyIP+" from IPPool lan")

	// Another load balancer gives "foreign" an address of IronLB's pool.
	const taken = "192.0.2.6"
	if slices.Contains([]string{plainIP, classyIP}, taken) {
		t.Fatalf("IronLB gave %s already (plain %s, classy %s): the test needs it free", taken, plainIP, classyIP)
	}
	setIngress(t, ctx, c, "foreign", taken)
	c.createService(lbService("default", "wants", map[string]string{"ironlb.dev/load-balancer-ips": taken}, withClass(lbclass.DefaultName)))
	c.waitEvent("default", "wants", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "in use by another load balancer")
	c.stillPending("default", "wants")
	waitMetricLines(t, metrics, "ironlb_other_load_balancer_addresses 1")
	c.noEventMentions("default", "example.com/other", "foreign")
	checkUntouched(t, ctx, c, "foreign", taken)

	// A restart changes nothing: the new CCM restores both, keeps the
	// other's address reserved, releases nothing.
	c.ccm.Stop(10 * time.Second)
	rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-2", Kubeconfig: c.kubeconfig, LeaderElect: true})
	failed := eventCount(t, ctx, c, "wants", "SyncLoadBalancerFailed")
	ensured := eventCount(t, ctx, c, "classy", "EnsuringLoadBalancer")
	annotate(t, ctx, c, "classy", "touch", "1")
	if err := rig.Eventually(30*time.Second, func() error {
		if eventCount(t, ctx, c, "classy", "EnsuringLoadBalancer") <= ensured {
			return fmt.Errorf("classy not synced by the new CCM after the touch")
		}
		if eventCount(t, ctx, c, "wants", "SyncLoadBalancerFailed") < failed+2 {
			return fmt.Errorf("wants not refused twice by the new CCM yet")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"plain": plainIP, "classy": classyIP} {
		if got := c.waitIngress("default", name, 1, time.Second)[0]; got != want {
			t.Errorf("%s changed from %s to %s after the CCM restarted", name, want, got)
		}
		if n := eventCount(t, ctx, c, name, "IPReleased"); n != 0 {
			t.Errorf("%s: %d IPReleased Events across the restart", name, n)
		}
	}
	if got := c.waitIngress("default", "wants", 0, time.Second); len(got) != 0 {
		t.Fatalf("wants got %v from the new CCM", got)
	}
	checkUntouched(t, ctx, c, "foreign", taken)

	// The other load balancer lets go: wants gets the address.
	setIngress(t, ctx, c, "foreign")
	if got := c.waitIngress("default", "wants", 1, 30*time.Second)[0]; got != taken {
		t.Fatalf("wants got %s, want %s", got, taken)
	}

	// A change of type releases a Service of IronLB's class: the API
	// server clears the class, IronLB clears the status and its finalizer.
	s, err := svcs.Get(ctx, "classy", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.Type = corev1.ServiceTypeClusterIP
	if _, err := svcs.Update(ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		s, err := svcs.Get(ctx, "classy", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Finalizers) > 0 || len(s.Status.LoadBalancer.Ingress) > 0 || s.Spec.LoadBalancerClass != nil {
			return fmt.Errorf("classy as ClusterIP: finalizers %v, ingress %v, class %v", s.Finalizers, ingress(s), s.Spec.LoadBalancerClass)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("default", "classy", corev1.EventTypeNormal, "IPReleased", "Released "+classyIP)
	c.waitEvent("default", "classy", corev1.EventTypeNormal, "DeletedLoadBalancer", "Deleted load balancer")

	// Its address is free again; a deleted Service of the class lets go
	// of its own.
	c.createService(lbService("default", "next", map[string]string{"ironlb.dev/load-balancer-ips": classyIP}, withClass(lbclass.DefaultName)))
	if got := c.waitIngress("default", "next", 1, 30*time.Second)[0]; got != classyIP {
		t.Fatalf("next got %s, want the released %s", got, classyIP)
	}
	if err := svcs.Delete(ctx, "next", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		_, err := svcs.Get(ctx, "next", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("next still exists (finalizer not removed?): %v", err)
	}); err != nil {
		t.Fatal(err)
	}
	c.createService(lbService("default", "after", map[string]string{"ironlb.dev/load-balancer-ips": classyIP}, withClass(lbclass.DefaultName)))
	if got := c.waitIngress("default", "after", 1, 30*time.Second)[0]; got != classyIP {
		t.Fatalf("after got %s, want %s, released by the deleted next", got, classyIP)
	}
	checkUntouched(t, ctx, c, "foreign", "")
}

// TestLoadBalancerClassOnly: with loadBalancerClass.only IronLB serves
// only its configured class: the service controller does not run, a
// class-less Service and one of ironlb.dev/ironlb (not the configured
// class) stay untouched, and the address the class-less one got from
// another load balancer is kept from IronLB's Services.
func TestLoadBalancerClassOnly(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cloudConfig := cloudConfigFlag(t, "loadBalancerClass:\n  name: example.net/lb\n  only: true\n")
	c := newCluster(t, ctx, cloudConfig)
	c.applyPool("lan", "addresses: [192.0.2.0/30]")

	c.createService(lbService("default", "plain", nil))
	c.createService(lbService("default", "default-class", nil, withClass(lbclass.DefaultName)))
	setIngress(t, ctx, c, "plain", "192.0.2.0") // as MetalLB would
	c.createService(lbService("default", "mine", nil, withClass("example.net/lb")))
	c.createService(lbService("default", "mine-too", nil, withClass("example.net/lb")))
	got := []string{c.waitIngress("default", "mine", 1, 30*time.Second)[0], c.waitIngress("default", "mine-too", 1, 30*time.Second)[0]}
	slices.Sort(got)
	if want := []string{"192.0.2.1", "192.0.2.2"}; !slices.Equal(got, want) {
		t.Errorf("IronLB's Services got %v, want %v (192.0.2.0 is the other load balancer's)", got, want)
	}
	checkUntouched(t, ctx, c, "plain", "192.0.2.0")
	checkUntouched(t, ctx, c, "default-class", "")
	if !strings.Contains(c.ccm.Log(), "Not starting the service controller") {
		t.Errorf("the CCM did not say it leaves the service controller off")
	}

	// A Service of the configured class that another load balancer served
	// (MetalLB run with --lb-class=example.net/lb, stopped) is taken over
	// unedited, keeping its address, when IronLB starts.
	c.ccm.Stop(10 * time.Second)
	c.createService(lbService("default", "handed-over", nil, withClass("example.net/lb")))
	setIngress(t, ctx, c, "handed-over", "192.0.2.3")
	rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-2", Kubeconfig: c.kubeconfig, LeaderElect: true, Args: []string{cloudConfig}})
	if err := rig.Eventually(30*time.Second, func() error {
		s, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "handed-over", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !slices.Equal(s.Finalizers, []string{lbclass.Finalizer}) || !slices.Equal(ingress(s), []string{"192.0.2.3"}) {
			return fmt.Errorf("handed-over: finalizers %v, ingress %v; want IronLB's finalizer and 192.0.2.3 kept", s.Finalizers, ingress(s))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("default", "handed-over", corev1.EventTypeNormal, "EnsuredLoadBalancer", "Ensured load balancer")
	if n := eventCount(t, ctx, c, "handed-over", "IPAllocated"); n != 0 {
		t.Errorf("handed-over: %d IPAllocated Events; its address was restored, not assigned", n)
	}
	checkUntouched(t, ctx, c, "plain", "192.0.2.0")
}

// setIngress writes a Service's status.loadBalancer as another load
// balancer would (no addresses: clears it).
func setIngress(t *testing.T, ctx context.Context, c *cluster, name string, addrs ...string) {
	t.Helper()
	ing := []map[string]any{}
	for _, a := range addrs {
		ing = append(ing, map[string]any{"ip": a})
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": map[string]any{"ingress": ing}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cp.Client.CoreV1().Services("default").Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{}, "status"); err != nil {
		t.Fatal(err)
	}
}

// annotate sets an annotation on a Service.
func annotate(t *testing.T, ctx context.Context, c *cluster, name, key, value string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.cp.Client.CoreV1().Services("default").Patch(ctx, name, types.MergePatchType, body, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkUntouched fails unless the Service (of a load balancer other than
// IronLB) has no finalizer, the status its own load balancer wrote (addr;
// "" for none), no condition and no Event at all.
func checkUntouched(t *testing.T, ctx context.Context, c *cluster, name, addr string) {
	t.Helper()
	s, err := c.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	if addr != "" {
		want = []string{addr}
	}
	if len(s.Finalizers) > 0 || !slices.Equal(ingress(s), want) || len(s.Status.Conditions) > 0 {
		t.Errorf("Service %s was touched: finalizers %v, ingress %+v, conditions %+v", name, s.Finalizers, s.Status.LoadBalancer.Ingress, s.Status.Conditions)
	}
	sel := fields.Set{"involvedObject.kind": "Service", "involvedObject.name": name}.AsSelector().String()
	evs, err := c.cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		t.Errorf("Event on %s, which is another load balancer's: %s %s: %s (from %s)", name, e.Type, e.Reason, e.Message, e.Source.Component)
	}
}

// TestLoadBalancerClassLegacy: an install switched to
// loadBalancerClass.only keeps serving the class-less Service it served
// before (announced by a real speaker; DESIGN invariant 3), tells so once
// with a Warning, takes no new class-less Service, and releases the old one
// (its address, the service controller's finalizer, its announcement) when
// it is deleted, although the service controller no longer runs.
func TestLoadBalancerClassLegacy(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	c.createService(lbService("default", "old", nil))
	vip := c.vip("default", "old")
	node := checkAnnouncer(t, ctx, r, vip)
	c.waitEvent("default", "old", corev1.EventTypeNormal, "VIPAnnounced", vip.String()+" announced from node "+node)

	if err := r.CCM.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	r.SetCloudConfig("loadBalancerClass:\n  only: true\n")
	if err := r.StartCCM("ccm-only", false); err != nil {
		t.Fatal(err)
	}
	c.ccm = r.CCM
	c.waitEvent("default", "old", corev1.EventTypeWarning, lbclass.ReasonLegacyService, "IronLB serves only loadBalancerClass ironlb.dev/ironlb now")
	c.createService(lbService("default", "new", nil))
	// The signal that the new CCM planned and sent its snapshots: a
	// Service of the class announced.
	c.createService(lbService("default", "fresh", nil, withClass(lbclass.DefaultName)))
	fresh := c.vip("default", "fresh")
	checkAnnouncer(t, ctx, r, fresh)
	if got := c.vip("default", "old"); got != vip {
		t.Fatalf("old changed from %s to %s", vip, got)
	}
	checkAnnouncer(t, ctx, r, vip)
	checkUntouched(t, ctx, c, "new", "")

	if err := c.cp.Client.CoreV1().Services("default").Delete(ctx, "old", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		_, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "old", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("old still exists (the service controller's finalizer not removed?): %v", err)
		}
		if err := r.Client.FlushNeighbors(); err != nil {
			return err
		}
		if n, err := r.Reach(ctx, vip, 500*time.Millisecond); err == nil {
			return fmt.Errorf("%s still answered by %s", vip, n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("default", "old", corev1.EventTypeNormal, "IPReleased", "Released "+vip.String())
}
