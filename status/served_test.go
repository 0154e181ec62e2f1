package status

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// TestServed: a LoadBalancer Service of IronLB's class is listed, a
// class-less one unless IronLB serves only its class, one of another
// class or of another type never.
func TestServed(t *testing.T) {
	svc := func(typ corev1.ServiceType, class *string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: typ, LoadBalancerClass: class}}
	}
	lb := corev1.ServiceTypeLoadBalancer
	for _, tc := range []struct {
		name  string
		svc   *corev1.Service
		class string
		only  bool
		want  bool
	}{
		{"class-less", svc(lb, nil), DefaultLoadBalancerClass, false, true},
		{"class-less, only the class", svc(lb, nil), DefaultLoadBalancerClass, true, false},
		{"IronLB's class", svc(lb, ptr.To(DefaultLoadBalancerClass)), DefaultLoadBalancerClass, false, true},
		{"IronLB's class, only the class", svc(lb, ptr.To(DefaultLoadBalancerClass)), DefaultLoadBalancerClass, true, true},
		{"another class", svc(lb, ptr.To("example.com/other")), DefaultLoadBalancerClass, false, false},
		{"another class, only the class", svc(lb, ptr.To("example.com/other")), DefaultLoadBalancerClass, true, false},
		{"a configured class", svc(lb, ptr.To("example.com/mine")), "example.com/mine", true, true},
		{"the default class when another is configured", svc(lb, ptr.To(DefaultLoadBalancerClass)), "example.com/mine", false, false},
		{"ClusterIP of IronLB's class", svc(corev1.ServiceTypeClusterIP, ptr.To(DefaultLoadBalancerClass)), DefaultLoadBalancerClass, false, false},
		{"NodePort class-less", svc(corev1.ServiceTypeNodePort, nil), DefaultLoadBalancerClass, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := served(tc.svc, tc.class, tc.only); got != tc.want {
				t.Errorf("served = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestVIPClass: a VIP carries its Service's class, pending or not.
func TestVIPClass(t *testing.T) {
	s := &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To(DefaultLoadBalancerClass)}}
	s.Namespace, s.Name = "default", "moved"
	if diff := cmp.Diff([]VIP{{Service: "default/moved", Class: DefaultLoadBalancerClass, State: "Pending"}}, vips(s, nil)); diff != "" {
		t.Errorf("pending (-want +got):\n%s", diff)
	}
	s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "192.0.2.3"}}
	if diff := cmp.Diff([]VIP{{Service: "default/moved", Class: DefaultLoadBalancerClass, Address: "192.0.2.3", State: "Unknown"}}, vips(s, nil)); diff != "" {
		t.Errorf("with an address (-want +got):\n%s", diff)
	}
}
