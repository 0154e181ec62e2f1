package ippool

import (
	"errors"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// nsSubject is a Service in namespace ns whose Namespace object carries
// labels (plus the kubernetes.io/metadata.name label the API server sets).
func nsSubject(ns string, labels map[string]string, svcLabels map[string]string) ipam.Subject {
	l := map[string]string{"kubernetes.io/metadata.name": ns}
	for k, v := range labels {
		l[k] = v
	}
	return ipam.Subject{Namespace: ns, NamespaceLabels: l, Labels: svcLabels}
}

// lostNS is a Service in namespace ns whose Namespace could not be looked
// up: its labels are unknown.
func lostNS(ns string, svcLabels map[string]string) ipam.Subject {
	return ipam.Subject{Namespace: ns, NamespaceErr: errors.New(`namespace "` + ns + `" not found`), Labels: svcLabels}
}

func expr(key string, op metav1.LabelSelectorOperator, values ...string) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: key, Operator: op, Values: values}}}
}

func TestAllocationPolicy(t *testing.T) {
	public := map[string]string{"exposure": "public"}
	type result struct {
		Allowed bool
		Unknown bool   // the refusal wraps ipam.ErrUnknownNamespace
		Msg     string // the refusal's message, when checked
	}
	allowed := result{Allowed: true}
	for _, tc := range []struct {
		name    string
		sa      *v1alpha1.ServiceAllocation
		subject ipam.Subject
		want    result
	}{
		{"no serviceAllocation", nil, lostNS("team-b", nil), allowed},
		{"empty serviceAllocation, namespace unknown", &v1alpha1.ServiceAllocation{}, lostNS("team-b", nil), allowed},
		{"empty namespaceSelector, namespace unknown", &v1alpha1.ServiceAllocation{NamespaceSelector: &metav1.LabelSelector{}}, lostNS("team-b", nil), allowed},

		{"namespaces: listed", &v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{"team-a", "team-c"}}, nsSubject("team-a", nil, nil), allowed},
		{"namespaces: not listed", &v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{"team-c", "team-a"}}, nsSubject("team-b", nil, nil),
			result{Msg: "namespace team-b is not among spec.serviceAllocation.namespaces"}},
		{"namespaces: Service labels cannot get it in", &v1alpha1.ServiceAllocation{
			Namespaces:      []v1alpha1.NamespaceName{"team-a"},
			ServiceSelector: &metav1.LabelSelector{MatchLabels: public},
		}, nsSubject("team-b", nil, public), result{Msg: "namespace team-b is not among spec.serviceAllocation.namespaces"}},
		{"namespaces: ANDed with serviceSelector", &v1alpha1.ServiceAllocation{
			Namespaces:      []v1alpha1.NamespaceName{"team-a"},
			ServiceSelector: &metav1.LabelSelector{MatchLabels: public},
		}, nsSubject("team-a", nil, nil), result{Msg: "the Service's labels do not match spec.serviceAllocation.serviceSelector (exposure=public)"}},
		{"namespaces: ANDed with namespaceSelector", &v1alpha1.ServiceAllocation{
			Namespaces:        []v1alpha1.NamespaceName{"team-a"},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "gold"}},
		}, nsSubject("team-a", map[string]string{"tier": "bronze"}, nil),
			result{Msg: "the labels of namespace team-a do not match spec.serviceAllocation.namespaceSelector"}},
		{"namespaces: matched on the label, not on Subject.Namespace", &v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{"team-a"}},
			ipam.Subject{Namespace: "team-a", NamespaceLabels: map[string]string{}},
			result{Msg: "namespace team-a has no label kubernetes.io/metadata.name to match spec.serviceAllocation.namespaces"}},
		{"namespaces: namespace unknown", &v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{"team-a"}}, lostNS("team-a", nil),
			result{Unknown: true, Msg: `namespace unknown: the pool selects by namespace and namespace team-a cannot be looked up: namespace "team-a" not found`}},

		// Fail closed: these selectors would match a namespace without labels.
		{"NotIn: known namespace without the label", &v1alpha1.ServiceAllocation{NamespaceSelector: expr("tenant", metav1.LabelSelectorOpNotIn, "evil")}, nsSubject("team-b", nil, nil), allowed},
		{"NotIn: known namespace with the label", &v1alpha1.ServiceAllocation{NamespaceSelector: expr("tenant", metav1.LabelSelectorOpNotIn, "evil")}, nsSubject("team-b", map[string]string{"tenant": "evil"}, nil), result{}},
		{"NotIn: namespace unknown", &v1alpha1.ServiceAllocation{NamespaceSelector: expr("tenant", metav1.LabelSelectorOpNotIn, "evil")}, lostNS("team-b", nil), result{Unknown: true}},
		{"DoesNotExist: known namespace without the label", &v1alpha1.ServiceAllocation{NamespaceSelector: expr("quarantined", metav1.LabelSelectorOpDoesNotExist)}, nsSubject("team-b", nil, nil), allowed},
		{"DoesNotExist: namespace unknown", &v1alpha1.ServiceAllocation{NamespaceSelector: expr("quarantined", metav1.LabelSelectorOpDoesNotExist)}, lostNS("team-b", nil), result{Unknown: true}},
		{"serviceSelector only: namespace unknown does not matter", &v1alpha1.ServiceAllocation{ServiceSelector: &metav1.LabelSelector{MatchLabels: public}}, lostNS("team-b", public), allowed},
		{"serviceSelector DoesNotExist only: namespace unknown does not matter", &v1alpha1.ServiceAllocation{ServiceSelector: expr("internal", metav1.LabelSelectorOpDoesNotExist)}, lostNS("team-b", nil), allowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			refuses, err := allocationPolicy(tc.sa)
			if err != nil {
				t.Fatal(err)
			}
			var got result
			if refuses == nil {
				got.Allowed = true
			} else if err := refuses(tc.subject); err == nil {
				got.Allowed = true
			} else {
				got.Unknown = errors.Is(err, ipam.ErrUnknownNamespace)
				if tc.want.Msg != "" {
					got.Msg = err.Error()
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("refusal of %+v (-want +got):\n%s", tc.subject, diff)
			}
		})
	}
}
