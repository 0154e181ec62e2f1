package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// BGP configures how a pool's addresses are advertised to BGPPeers. Every
// eligible node advertises each address, so the routers spread traffic
// over them (ECMP).
//
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="nodeSelector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="nodeSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
type BGP struct {
	// NodeSelector limits the nodes that advertise the pool's addresses.
	// Empty means every node that has a session with a selected peer.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Advertisements say to which peers, and with which attributes, the
	// addresses are advertised. Empty means one advertisement to every
	// peer, with no attributes.
	//
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Advertisements []BGPAdvertisement `json:"advertisements,omitempty"`
}

// BGPAdvertisement is how a pool's addresses are advertised to a set of
// peers. (Its peerSelector is checked by the CCM, which marks the pool
// Ready=False/InvalidSelector: CEL rules on selectors inside a list exceed
// the API server's cost budget.)
type BGPAdvertisement struct {
	// PeerSelector matches the labels of the BGPPeers this advertisement
	// goes to. Empty means every peer.
	//
	// +optional
	PeerSelector *metav1.LabelSelector `json:"peerSelector,omitempty"`

	// Communities are standard BGP communities attached to the routes:
	// "65000:100" or a well-known name such as "no-export".
	//
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	Communities []Community `json:"communities,omitempty"`

	// LargeCommunities are large BGP communities attached to the routes,
	// "65000:1:2".
	//
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	// +optional
	LargeCommunities []LargeCommunity `json:"largeCommunities,omitempty"`

	// LocalPref is the LOCAL_PREF attribute of the routes. It only reaches
	// iBGP peers (myASN equal to peerASN); eBGP peers never see it.
	//
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalPref *int64 `json:"localPref,omitempty"`

	// AggregationLength advertises each IPv4 address as the covering
	// prefix of this length instead of a /32. It may not be shorter than
	// the prefix of any of the pool's IPv4 CIDRs.
	//
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`

	// AggregationLengthV6 advertises each IPv6 address as the covering
	// prefix of this length instead of a /128. It may not be shorter than
	// the prefix of any of the pool's IPv6 CIDRs.
	//
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
}

// Community is a standard BGP community: two 16-bit numbers, "65000:100",
// or a well-known name.
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{1,5}:[0-9]{1,5}$') || self in ['no-export', 'no-advertise', 'no-export-subconfed', 'no-peer', 'blackhole', 'graceful-shutdown', 'accept-own', 'llgr-stale', 'no-llgr']",messageExpression="'community ' + self + ' must be two numbers, 65000:100, or one of no-export, no-advertise, no-export-subconfed, no-peer, blackhole, graceful-shutdown, accept-own, llgr-stale, no-llgr'"
// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]{1,5}:[0-9]{1,5}$') || self.split(':').all(p, int(p) <= 65535)",messageExpression="'community ' + self + ': each number must be at most 65535 (use largeCommunities for 32-bit ASNs)'"
type Community string

// LargeCommunity is a large BGP community (RFC 8092): three 32-bit
// numbers, "65000:1:2".
//
// +kubebuilder:validation:MaxLength=32
// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$')",messageExpression="'large community ' + self + ' must be three numbers, 65000:1:2'"
// +kubebuilder:validation:XValidation:rule="!self.matches('^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$') || self.split(':').all(p, int(p) <= 4294967295)",messageExpression="'large community ' + self + ': each number must be at most 4294967295'"
type LargeCommunity string
