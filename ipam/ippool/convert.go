package ippool

import (
	"fmt"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// ToLayer2 converts a pool's spec.layer2. A pool with spec.bgp and no
// spec.layer2 is not announced over layer 2 (Off).
func ToLayer2(p *v1alpha1.IPPool) (Layer2, error) {
	l2 := p.Spec.Layer2
	if l2 == nil && p.Spec.BGP != nil {
		return Layer2{Off: true, Nodes: labels.Nothing()}, nil
	}
	if l2 == nil {
		return AnyNode, nil
	}
	nodes, err := selector(l2.NodeSelector)
	if err != nil {
		return Layer2{}, fmt.Errorf("IPPool %s: spec.layer2.nodeSelector: %w", p.Name, err)
	}
	out := Layer2{Nodes: nodes}
	for _, i := range l2.Interfaces {
		out.Interfaces = append(out.Interfaces, string(i))
	}
	slices.Sort(out.Interfaces)
	return out, nil
}

// ToBGP converts a pool's spec.bgp; false when it has none.
func ToBGP(p *v1alpha1.IPPool) (BGP, bool, error) {
	b := p.Spec.BGP
	if b == nil {
		return BGP{}, false, nil
	}
	nodes, err := selector(b.NodeSelector)
	if err != nil {
		return BGP{}, false, fmt.Errorf("IPPool %s: spec.bgp.nodeSelector: %w", p.Name, err)
	}
	entries := make([]string, len(p.Spec.Addresses))
	for i, a := range p.Spec.Addresses {
		entries[i] = string(a)
	}
	ranges, err := ipam.ParseRanges(entries)
	if err != nil {
		return BGP{}, false, fmt.Errorf("IPPool %s: spec.addresses: %w", p.Name, err)
	}
	for i, a := range b.Advertisements {
		if _, err := selector(a.PeerSelector); err != nil {
			return BGP{}, false, fmt.Errorf("IPPool %s: spec.bgp.advertisements[%d].peerSelector: %w", p.Name, i, err)
		}
		for _, r := range ranges {
			l := a.AggregationLength
			if r.First.Is6() {
				l = a.AggregationLengthV6
			}
			if l == nil {
				continue
			}
			if err := aggregatable(r, int(*l)); err != nil {
				return BGP{}, false, fmt.Errorf("IPPool %s: spec.bgp.advertisements[%d]: %w", p.Name, i, err)
			}
		}
	}
	return BGP{Nodes: nodes, Spec: b.DeepCopy()}, true, nil
}

// aggregatable checks that advertising the addresses of r as their
// covering prefixes of length bits announces no address outside r: r must
// start and end on such a prefix's boundaries.
func aggregatable(r ipam.Range, bits int) error {
	if bits >= r.First.BitLen() {
		return nil
	}
	first, _ := r.First.Prefix(bits)
	last, _ := r.Last.Prefix(bits)
	lastEnd := lastAddr(last)
	if first.Addr() != r.First || lastEnd != r.Last {
		return fmt.Errorf("aggregation length %d would advertise %s..%s, beyond the pool's addresses %s-%s", bits, first.Addr(), lastEnd, r.First, r.Last)
	}
	return nil
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func fromUnstructured(obj any) (*v1alpha1.IPPool, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var pool v1alpha1.IPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pool); err != nil {
		return nil, fmt.Errorf("decoding IPPool %s: %w", u.GetName(), err)
	}
	return &pool, nil
}

// ToPool converts an IPPool into the allocator's pool.
func ToPool(p *v1alpha1.IPPool) (ipam.Pool, error) {
	entries := make([]string, len(p.Spec.Addresses))
	for i, a := range p.Spec.Addresses {
		entries[i] = string(a)
	}
	ranges, err := ipam.ParseRanges(entries)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("IPPool %s: spec.addresses: %w", p.Name, err)
	}
	allows, err := selectors(p.Spec.ServiceAllocation)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("IPPool %s: spec.serviceAllocation: %w", p.Name, err)
	}
	if _, err := ToLayer2(p); err != nil {
		return ipam.Pool{}, err
	}
	if _, _, err := ToBGP(p); err != nil {
		return ipam.Pool{}, err
	}
	return ipam.Pool{
		Name:          p.Name,
		Ranges:        ranges,
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Priority:      p.Spec.Priority,
		Allows:        allows,
	}, nil
}

func selectors(sa *v1alpha1.ServiceAllocation) (func(ipam.Subject) bool, error) {
	if sa == nil {
		return nil, nil
	}
	ns, err := selector(sa.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	svc, err := selector(sa.ServiceSelector)
	if err != nil {
		return nil, fmt.Errorf("serviceSelector: %w", err)
	}
	return func(s ipam.Subject) bool {
		return ns.Matches(labels.Set(s.NamespaceLabels)) && svc.Matches(labels.Set(s.Labels))
	}, nil
}

// selector converts ls; a missing selector matches everything.
func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}
