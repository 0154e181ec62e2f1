package bgppeers

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Advertisements returns how a node advertises addr, a VIP of a pool with
// spec.bgp, to its peers (those of BGPConfigFor's set-up, by object). An empty
// advertisements list means one to every peer. Two advertisements that
// send the same prefix to one peer are merged: the union of their
// communities and the highest local preference.
func Advertisements(addr netip.Addr, bgp *v1alpha1.BGP, peers []*v1alpha1.BGPPeer) ([]*speakerv1.BGPAdvertisement, error) {
	if bgp == nil {
		return nil, nil
	}
	advs := bgp.Advertisements
	if len(advs) == 0 {
		advs = []v1alpha1.BGPAdvertisement{{}}
	}
	type key struct {
		peer string
		bits uint32
	}
	merged := map[key]*speakerv1.BGPAdvertisement{}
	for i, a := range advs {
		sel, err := selector(a.PeerSelector)
		if err != nil {
			return nil, fmt.Errorf("spec.bgp.advertisements[%d].peerSelector: %w", i, err)
		}
		bits := uint32(0)
		switch {
		case addr.Is4() && a.AggregationLength != nil && *a.AggregationLength < 32:
			bits = uint32(*a.AggregationLength)
		case addr.Is6() && a.AggregationLengthV6 != nil && *a.AggregationLengthV6 < 128:
			bits = uint32(*a.AggregationLengthV6)
		}
		for _, p := range peers {
			if !sel.Matches(labels.Set(p.Labels)) {
				continue
			}
			k := key{p.Spec.PeerAddress, bits}
			m := merged[k]
			if m == nil {
				m = &speakerv1.BGPAdvertisement{Peer: p.Spec.PeerAddress, PrefixLength: bits}
				merged[k] = m
			}
			for _, c := range a.Communities {
				m.Communities = append(m.Communities, string(c))
			}
			for _, c := range a.LargeCommunities {
				m.LargeCommunities = append(m.LargeCommunities, string(c))
			}
			if a.LocalPref != nil {
				lp := uint32(*a.LocalPref)
				if m.LocalPref == nil || lp > *m.LocalPref {
					m.LocalPref = &lp
				}
			}
		}
	}
	out := make([]*speakerv1.BGPAdvertisement, 0, len(merged))
	for _, m := range merged {
		slices.Sort(m.Communities)
		m.Communities = slices.Compact(m.Communities)
		slices.Sort(m.LargeCommunities)
		m.LargeCommunities = slices.Compact(m.LargeCommunities)
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b *speakerv1.BGPAdvertisement) int {
		if c := strings.Compare(a.Peer, b.Peer); c != 0 {
			return c
		}
		return int(a.PrefixLength) - int(b.PrefixLength)
	})
	return out, nil
}
