package ippool

import (
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// allocationPolicy converts a pool's spec.serviceAllocation into the
// allocator's Pool.Refuses: nil when the pool allows every Service. A
// Service must be in one of the namespaces listed (by the namespace's
// kubernetes.io/metadata.name label) and match both selectors. Checks on
// the namespace fail closed: when its labels are unknown (the lookup
// failed), a pool with namespaces or a namespaceSelector refuses, so that
// NotIn and DoesNotExist do not pass on missing labels.
//
// A refusal becomes an Event in the refused Service's namespace, which
// another tenant may read: it names the rule that refuses, but not the
// namespaces the pool lists nor its namespaceSelector (both may name other
// tenants); the administrator reads those in the IPPool. It shows the
// serviceSelector, which the Service's owner needs to label the Service.
func allocationPolicy(sa *v1alpha1.ServiceAllocation) (func(ipam.Subject) error, error) {
	if sa == nil {
		return nil, nil
	}
	nsSel, err := selector(sa.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	svcSel, err := selector(sa.ServiceSelector)
	if err != nil {
		return nil, fmt.Errorf("serviceSelector: %w", err)
	}
	names := make([]string, len(sa.Namespaces))
	for i, n := range sa.Namespaces {
		names[i] = string(n)
	}
	slices.Sort(names)
	// An empty selector matches every namespace, known or not.
	byNamespace := len(names) > 0 || !nsSel.Empty()
	if !byNamespace && svcSel.Empty() {
		return nil, nil
	}
	return func(s ipam.Subject) error {
		if byNamespace && s.NamespaceErr != nil {
			return fmt.Errorf("%w: the pool selects by namespace and namespace %s cannot be looked up: %v", ipam.ErrUnknownNamespace, s.Namespace, s.NamespaceErr)
		}
		if len(names) > 0 {
			name, ok := s.NamespaceLabels[corev1.LabelMetadataName]
			switch {
			case !ok:
				return fmt.Errorf("namespace %s has no label %s to match spec.serviceAllocation.namespaces", s.Namespace, corev1.LabelMetadataName)
			case !slices.Contains(names, name):
				return fmt.Errorf("namespace %s is not among spec.serviceAllocation.namespaces", name)
			}
		}
		if !nsSel.Matches(labels.Set(s.NamespaceLabels)) {
			return fmt.Errorf("the labels of namespace %s do not match spec.serviceAllocation.namespaceSelector", s.Namespace)
		}
		if !svcSel.Matches(labels.Set(s.Labels)) {
			return fmt.Errorf("the Service's labels do not match spec.serviceAllocation.serviceSelector (%s)", svcSel)
		}
		return nil
	}, nil
}
