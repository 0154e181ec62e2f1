package cluster_test

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/test/cluster"
)

func applyYAML(t *testing.T, ctx context.Context, c *cluster.Cluster, yaml string) {
	t.Helper()
	if _, err := c.Kubectl(ctx, strings.NewReader(yaml), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// addrRange returns whether an address is in first-last.
func addrRange(first, last string) func(netip.Addr) bool {
	f, l := netip.MustParseAddr(first), netip.MustParseAddr(last)
	return func(a netip.Addr) bool { return a.Compare(f) >= 0 && a.Compare(l) <= 0 }
}

// newWebService is a LoadBalancer Service for the web pods.
func newWebService(name string, class *string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	s.Spec.LoadBalancerClass = class
	return s
}

func withClass(class string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class }
}

func withAnnotation(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations = map[string]string{k: v} }
}

// deleteClasslessServices deletes the LoadBalancer Services without a
// class of the namespace default and waits until they are gone (IronLB
// removed its finalizer).
func deleteClasslessServices(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	list, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil {
			if err := cs.CoreV1().Services("default").Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			names = append(names, s.Name)
		}
	}
	err = eventually(ctx, time.Minute, func() error {
		for _, n := range names {
			if _, err := cs.CoreV1().Services("default").Get(ctx, n, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("service %s still there", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func getService(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) *corev1.Service {
	t.Helper()
	s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serviceVIP is the Service's first status address (invalid if none).
func serviceVIP(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) netip.Addr {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if len(s.Status.LoadBalancer.Ingress) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
	return a
}

// waitServiceVIP waits until the Service has an address and returns it.
func waitServiceVIP(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) netip.Addr {
	t.Helper()
	var vip netip.Addr
	err := eventually(ctx, 2*time.Minute, func() error {
		if vip = serviceVIP(t, ctx, cs, name); !vip.IsValid() {
			return fmt.Errorf("service %s has no address", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vip
}

func patchService(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Services("default").Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching %s with %s: %v", name, patch, err)
	}
}

// serviceEvents are the Events about the Service name.
func serviceEvents(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) []corev1.Event {
	t.Helper()
	list, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// checkIronLBs checks that IronLB serves the Service: its finalizer, the
// status as the service controller writes it (ipMode VIP), its Events.
func checkIronLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if !slices.Contains(s.Finalizers, lbclass.Finalizer) {
		t.Errorf("%s: finalizers %v, want %s", name, s.Finalizers, lbclass.Finalizer)
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
			t.Errorf("%s: ingress %s has ipMode %v, want VIP", name, in.IP, in.IPMode)
		}
	}
	ensured := false
	for _, e := range serviceEvents(t, ctx, cs, name) {
		ensured = ensured || e.Reason == lbclass.ReasonEnsured && e.Source.Component == lbclass.Component
	}
	if !ensured {
		t.Errorf("%s: no EnsuredLoadBalancer Event from ironlb-ccm", name)
	}
}

// checkNotIronLBs checks that IronLB left the Service alone: no finalizer
// or condition of IronLB's, no Event from it.
func checkNotIronLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	for _, f := range s.Finalizers {
		if strings.HasPrefix(f, "ironlb.dev/") || f == lbclass.StandardFinalizer {
			t.Errorf("%s: finalizer %s: IronLB took it", name, f)
		}
	}
	for _, c := range s.Status.Conditions {
		if strings.HasPrefix(c.Type, "ironlb.dev/") {
			t.Errorf("%s: condition %s: IronLB took it", name, c.Type)
		}
	}
	for _, e := range serviceEvents(t, ctx, cs, name) {
		if e.Source.Component == lbclass.Component || e.Source.Component == "service-controller" {
			t.Errorf("%s: Event %s %q from %s", name, e.Reason, e.Message, e.Source.Component)
		}
	}
}

// checkMetalLBs checks that MetalLB's controller gave the Service its
// address (an IPAllocated Event from MetalLB).
func checkMetalLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	var seen []string
	for _, e := range serviceEvents(t, ctx, cs, name) {
		if e.Reason == "IPAllocated" && strings.HasPrefix(e.Source.Component, "metallb") {
			return
		}
		seen = append(seen, e.Source.Component+"/"+e.Reason)
	}
	t.Errorf("%s: no IPAllocated Event from MetalLB, only %v", name, seen)
}

// waitMetalLBAnnounces waits until MetalLB's speakers announce the
// Service (a ServiceL2Status names it) or, with want false, none does.
func waitMetalLBAnnounces(t *testing.T, ctx context.Context, c *cluster.Cluster, name string, want bool) {
	t.Helper()
	err := eventually(ctx, time.Minute, func() error {
		out, err := c.Kubectl(ctx, nil, "-n", "metallb-system", "get", "servicel2statuses", "-o", `jsonpath={range .items[*]}{.status.serviceNamespace}/{.status.serviceName} {.status.node}{"\n"}{end}`)
		if err != nil {
			return err
		}
		var on []string
		for _, line := range strings.Split(out, "\n") {
			if svc, node, ok := strings.Cut(line, " "); ok && svc == "default/"+name {
				on = append(on, node)
			}
		}
		if got := len(on) > 0; got != want {
			return fmt.Errorf("MetalLB announces %s on %v, want announced: %v", name, on, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkUntouched checks that nobody served the Service: pending, no
// finalizer, no status, no Event at all.
func checkUntouched(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if len(s.Finalizers) > 0 || len(s.Status.LoadBalancer.Ingress) > 0 || len(s.Status.Conditions) > 0 {
		t.Errorf("%s: finalizers %v, ingress %v, conditions %v: want none", name, s.Finalizers, s.Status.LoadBalancer.Ingress, s.Status.Conditions)
	}
	for _, e := range serviceEvents(t, ctx, cs, name) {
		t.Errorf("%s: Event %s %q from %s", name, e.Reason, e.Message, e.Source.Component)
	}
}
