package ippool

import (
	"fmt"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

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
	ranges, err := poolRanges(p)
	if err != nil {
		return BGP{}, false, err
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
			if !r.Aligned(int(*l)) {
				return BGP{}, false, fmt.Errorf("IPPool %s: spec.bgp.advertisements[%d]: aggregation length %d would advertise addresses beyond the pool's range %s", p.Name, i, *l, r)
			}
		}
	}
	return BGP{Nodes: nodes, Spec: b.DeepCopy()}, true, nil
}

// poolRanges parses the pool's spec.addresses.
func poolRanges(p *v1alpha1.IPPool) ([]ipam.Range, error) {
	entries := make([]string, len(p.Spec.Addresses))
	for i, a := range p.Spec.Addresses {
		entries[i] = string(a)
	}
	ranges, err := ipam.ParseRanges(entries)
	if err != nil {
		return nil, fmt.Errorf("IPPool %s: spec.addresses: %w", p.Name, err)
	}
	return ranges, nil
}

func fromUnstructured(obj any) (*v1alpha1.IPPool, error) {
	return v1alpha1.FromUnstructured[v1alpha1.IPPool](obj)
}

// ToPool converts an IPPool into the allocator's pool.
func ToPool(p *v1alpha1.IPPool) (ipam.Pool, error) {
	ranges, err := poolRanges(p)
	if err != nil {
		return ipam.Pool{}, err
	}
	refuses, err := allocationPolicy(p.Spec.ServiceAllocation)
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
		Refuses:       refuses,
		Leased:        p.Spec.DHCP != nil,
	}, nil
}

// selector converts ls; a missing selector matches everything.
func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}
