package lbclass

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestNeedsSync(t *testing.T) {
	base := func() *v1.Service {
		return &v1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", ResourceVersion: "1", Generation: 1, UID: "u",
			Annotations: map[string]string{"a": "1"}, Finalizers: []string{Finalizer}}}
	}
	now := metav1.Now()
	for _, tc := range []struct {
		name   string
		change func(*v1.Service)
		want   bool
	}{
		{"resync", func(*v1.Service) {}, false},
		{"spec", func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }, true},
		{"annotation", func(s *v1.Service) { s.Annotations = map[string]string{"a": "2"} }, true},
		{"label", func(s *v1.Service) { s.Labels = map[string]string{"l": "x"} }, true},
		{"deleted", func(s *v1.Service) { s.DeletionTimestamp = &now }, true},
		{"finalizer removed by someone", func(s *v1.Service) { s.Finalizers = nil }, true},
		{"another finalizer added", func(s *v1.Service) { s.Finalizers = append(s.Finalizers, "x") }, false},
		{"own status written", func(s *v1.Service) {
			s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.1"}}
		}, false},
		{"a condition", func(s *v1.Service) { s.Status.Conditions = []metav1.Condition{{Type: "x"}} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			old, cur := base(), base()
			tc.change(cur)
			if tc.name != "resync" {
				cur.ResourceVersion = "2"
			}
			if got := needsSync(old, cur); got != tc.want {
				t.Errorf("needsSync = %v, want %v", got, tc.want)
			}
		})
	}
	// The controller's own finalizer, added: no second sync.
	old, cur := base(), base()
	old.Finalizers, cur.ResourceVersion = nil, "2"
	if needsSync(old, cur) {
		t.Errorf("adding the finalizer triggers a sync")
	}
}
