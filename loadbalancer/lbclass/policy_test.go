package lbclass_test

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/loadbalancer/planner"
)

func svc(typ v1.ServiceType, class *string, finalizers []string, announced bool) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns", Finalizers: finalizers},
		Spec:       v1.ServiceSpec{Type: typ, LoadBalancerClass: class},
	}
	if announced {
		s.Status.Conditions = []metav1.Condition{{Type: planner.ConditionAnnounced, Status: metav1.ConditionTrue}}
	}
	return s
}

func TestPolicy(t *testing.T) {
	lb, cip := v1.ServiceTypeLoadBalancer, v1.ServiceTypeClusterIP
	ours, other := ptr.To(lbclass.DefaultName), ptr.To("example.com/other")
	std, own := []string{lbclass.StandardFinalizer}, []string{lbclass.Finalizer}
	both := lbclass.Policy{}
	only := lbclass.Policy{Only: true}
	custom := lbclass.Policy{Name: "example.net/lb", Only: true}
	for _, tc := range []struct {
		name                 string
		policy               lbclass.Policy
		svc                  *v1.Service
		serves, owns, legacy bool
	}{
		{"class-less LoadBalancer", both, svc(lb, nil, nil, false), true, true, false},
		{"class-less, only", only, svc(lb, nil, nil, false), false, false, false},
		{"class-less with another cloud's finalizer, only", only, svc(lb, nil, std, false), false, false, false},
		{"class-less served before only (finalizer and Announced)", only, svc(lb, nil, std, true), false, true, true},
		{"class-less ClusterIP with the service controller's finalizer", both, svc(cip, nil, std, false), false, true, false},
		{"IronLB's class", both, svc(lb, ours, nil, false), true, true, false},
		{"IronLB's class, only", only, svc(lb, ours, nil, false), true, true, false},
		{"another class", both, svc(lb, other, nil, false), false, false, false},
		{"another class with the service controller's finalizer", both, svc(lb, other, std, true), false, false, false},
		{"ClusterIP with IronLB's finalizer (type changed)", only, svc(cip, nil, own, false), false, true, false},
		{"a configured class", custom, svc(lb, ptr.To("example.net/lb"), nil, false), true, true, false},
		{"the default class when another is configured", custom, svc(lb, ours, nil, false), false, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.policy.Serves(tc.svc); got != tc.serves {
				t.Errorf("Serves = %v, want %v", got, tc.serves)
			}
			if got := tc.policy.Owns(tc.svc); got != tc.owns {
				t.Errorf("Owns = %v, want %v", got, tc.owns)
			}
			if got := tc.policy.Legacy(tc.svc); got != tc.legacy {
				t.Errorf("Legacy = %v, want %v", got, tc.legacy)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name  string
		class string
		ok    bool
	}{
		{"default", "", true},
		{"qualified", "ironlb.dev/ironlb", true},
		{"no prefix", "ironlb", true},
		{"two slashes", "a/b/c", false},
		{"spaces", "ironlb dev", false},
		{"too long", "example.com/" + string(make([]byte, 64)), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := lbclass.Policy{Name: tc.class}.Validate()
			if (err == nil) != tc.ok {
				t.Errorf("Validate(%q) = %v, want ok=%v", tc.class, err, tc.ok)
			}
		})
	}
}
