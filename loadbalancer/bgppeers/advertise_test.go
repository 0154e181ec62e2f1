package bgppeers

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

func TestAdvertisements(t *testing.T) {
	torA := peer("tor-a", "192.0.2.1")
	torA.Labels = map[string]string{"tor": "a"}
	torB := peer("tor-b", "192.0.2.2")
	torB.Labels = map[string]string{"tor": "b"}
	peers := []*v1alpha1.BGPPeer{torA, torB}
	onlyA := &metav1.LabelSelector{MatchLabels: map[string]string{"tor": "a"}}
	v4 := netip.MustParseAddr("198.51.100.7")
	v6 := netip.MustParseAddr("2001:db8:5::7")
	tests := []struct {
		name string
		addr netip.Addr
		bgp  *v1alpha1.BGP
		want []*speakerv1.BGPAdvertisement
	}{
		{"no bgp", v4, nil, nil},
		{"default: every peer, host routes", v4, &v1alpha1.BGP{}, []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}, {Peer: "192.0.2.2"}}},
		{"selected peer with attributes", v4, &v1alpha1.BGP{Advertisements: []v1alpha1.BGPAdvertisement{{
			PeerSelector: onlyA, Communities: []v1alpha1.Community{"no-export", "65000:1"}, LargeCommunities: []v1alpha1.LargeCommunity{"1:2:3"}, LocalPref: ptr.To[int64](100),
		}}}, []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", Communities: []string{"65000:1", "no-export"}, LargeCommunities: []string{"1:2:3"}, LocalPref: ptr.To[uint32](100)}}},
		{"merged for one peer", v4, &v1alpha1.BGP{Advertisements: []v1alpha1.BGPAdvertisement{
			{PeerSelector: onlyA, Communities: []v1alpha1.Community{"65000:1"}, LocalPref: ptr.To[int64](100)},
			{Communities: []v1alpha1.Community{"65000:2", "65000:1"}, LocalPref: ptr.To[int64](50)},
		}}, []*speakerv1.BGPAdvertisement{
			{Peer: "192.0.2.1", Communities: []string{"65000:1", "65000:2"}, LocalPref: ptr.To[uint32](100)},
			{Peer: "192.0.2.2", Communities: []string{"65000:1", "65000:2"}, LocalPref: ptr.To[uint32](50)},
		}},
		{"aggregation by family", v6, &v1alpha1.BGP{Advertisements: []v1alpha1.BGPAdvertisement{
			{PeerSelector: onlyA, AggregationLength: ptr.To[int32](24), AggregationLengthV6: ptr.To[int32](64)},
		}}, []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", PrefixLength: 64}}},
		{"host aggregation is a host route", v4, &v1alpha1.BGP{Advertisements: []v1alpha1.BGPAdvertisement{
			{PeerSelector: onlyA, AggregationLength: ptr.To[int32](32)},
		}}, []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Advertisements(tc.addr, tc.bgp, peers)
			if err != nil {
				t.Fatal(err)
			}
			if tc.want == nil && len(got) == 0 {
				return
			}
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}
