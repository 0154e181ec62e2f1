// Package metallb converts MetalLB's configuration into IronLB's API: the
// metallb.io CRDs (IPAddressPool, L2Advertisement, BGPAdvertisement,
// BGPPeer v1beta1 and v1beta2, BFDProfile, Community) and the ConfigMap of
// MetalLB before 0.13. It reads and writes YAML only and talks to no API
// server: `kubectl ironlb convert metallb` is a thin wrapper around it.
//
// What has no IronLB equivalent is reported (Report), naming the source
// object and field; nothing is dropped silently.
package metallb

import (
	"fmt"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Report is one thing of the input the output does not reproduce exactly.
type Report struct {
	// Object names the source object, "IPAddressPool metallb-system/lan"
	// or, for the legacy format, "ConfigMap metallb-system/config".
	Object string
	// Field is the source field, "spec.nodeSelectors" or
	// "address-pools[0].bgp-advertisements[1].communities".
	Field string
	// Message says what differs and what IronLB does instead.
	Message string
	// Note is true for information that needs no decision, such as an
	// action to take (copy a Secret) or an object of another kind that
	// was skipped. Notes do not make a conversion partial.
	Note bool
}

func (r Report) String() string {
	kind := "unsupported"
	if r.Note {
		kind = "note"
	}
	if r.Field == "" {
		return fmt.Sprintf("%s: %s: %s", kind, r.Object, r.Message)
	}
	return fmt.Sprintf("%s: %s: %s: %s", kind, r.Object, r.Field, r.Message)
}

// source is where an object of the input came from, for reports.
type source struct {
	object string
	// legacy maps CRD field paths to the legacy ConfigMap's spelling;
	// nil for CRDs.
	legacy map[string]string
	// prefix goes before legacy field names ("address-pools[0].").
	prefix string
}

func (s source) field(path string) string {
	if s.legacy == nil {
		return path
	}
	if path == "" {
		return strings.TrimSuffix(s.prefix, ".")
	}
	for crd, l := range s.legacy {
		if path == crd || strings.HasPrefix(path, crd+"[") || strings.HasPrefix(path, crd+".") {
			return s.prefix + l + path[len(crd):]
		}
	}
	return s.prefix + path
}

// The MetalLB objects, reduced to what the conversion reads. JSON names
// are MetalLB's; BGPPeer v1beta1 decodes into the v1beta2 shape (its
// fields are a subset with the same names).

type ipAddressPool struct {
	src    source
	Name   string
	Labels map[string]string
	// Namespace, Annotations and rawSpec are the object as read, for the
	// frozen copy of side-by-side mode (rawSpec keeps fields the
	// converter does not know); legacy is the ConfigMap a pool of the
	// legacy format comes from, at index legacyIndex of address-pools.
	Namespace   string
	Annotations map[string]string
	rawSpec     map[string]any
	legacy      *legacyConfigMap
	legacyIndex int
	Spec        struct {
		Addresses         []string           `json:"addresses"`
		AutoAssign        *bool              `json:"autoAssign,omitempty"`
		AvoidBuggyIPs     bool               `json:"avoidBuggyIPs,omitempty"`
		ServiceAllocation *serviceAllocation `json:"serviceAllocation,omitempty"`
	}
}

type serviceAllocation struct {
	Priority           int                    `json:"priority,omitempty"`
	Namespaces         []string               `json:"namespaces,omitempty"`
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	ServiceSelectors   []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

type l2Advertisement struct {
	src  source
	Name string
	Spec struct {
		IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
		IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
		NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
		Interfaces             []string               `json:"interfaces,omitempty"`
		ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
		PreferredNodeSelectors []any                  `json:"preferredNodeSelectors,omitempty"`
	}
}

type bgpAdvertisement struct {
	src  source
	Name string
	Spec struct {
		AggregationLength      *int32                 `json:"aggregationLength,omitempty"`
		AggregationLengthV6    *int32                 `json:"aggregationLengthV6,omitempty"`
		LocalPref              uint32                 `json:"localPref,omitempty"`
		AsPathPrepend          uint8                  `json:"asPathPrepend,omitempty"`
		Communities            []string               `json:"communities,omitempty"`
		IPAddressPools         []string               `json:"ipAddressPools,omitempty"`
		IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
		NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
		Peers                  []string               `json:"peers,omitempty"`
		ServiceSelectors       []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
	}
}

type bgpPeer struct {
	src  source
	Name string
	Spec struct {
		MyASN                  uint32                 `json:"myASN"`
		ASN                    uint32                 `json:"peerASN,omitempty"`
		LocalASN               uint32                 `json:"localASN,omitempty"`
		DynamicASN             string                 `json:"dynamicASN,omitempty"`
		Address                string                 `json:"peerAddress,omitempty"`
		Interface              string                 `json:"interface,omitempty"`
		SrcAddress             string                 `json:"sourceAddress,omitempty"`
		Port                   uint16                 `json:"peerPort,omitempty"`
		HoldTime               *metav1.Duration       `json:"holdTime,omitempty"`
		KeepaliveTime          *metav1.Duration       `json:"keepaliveTime,omitempty"`
		ConnectTime            *metav1.Duration       `json:"connectTime,omitempty"`
		RouterID               string                 `json:"routerID,omitempty"`
		NodeSelectors          []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
		Password               string                 `json:"password,omitempty"`
		PasswordSecret         secretReference        `json:"passwordSecret,omitempty"`
		BFDProfile             string                 `json:"bfdProfile,omitempty"`
		EnableGracefulRestart  bool                   `json:"enableGracefulRestart,omitempty"`
		EBGPMultiHop           bool                   `json:"ebgpMultiHop,omitempty"`
		VRFName                string                 `json:"vrf,omitempty"`
		DisableMP              bool                   `json:"disableMP,omitempty"`
		DualStackAddressFamily bool                   `json:"dualStackAddressFamily,omitempty"`
	}
}

type secretReference struct {
	Name      string `json:"name,omitempty"`
	Namespace string `json:"namespace,omitempty"`
}

type bfdProfile struct {
	src  source
	Name string
	Spec struct {
		ReceiveInterval  *uint32 `json:"receiveInterval,omitempty"`
		TransmitInterval *uint32 `json:"transmitInterval,omitempty"`
		DetectMultiplier *uint32 `json:"detectMultiplier,omitempty"`
		EchoInterval     *uint32 `json:"echoInterval,omitempty"`
		EchoMode         *bool   `json:"echoMode,omitempty"`
		PassiveMode      *bool   `json:"passiveMode,omitempty"`
		MinimumTTL       *uint32 `json:"minimumTtl,omitempty"`
	}
}

type communityAlias struct {
	src   source
	Value string
}

// Input is MetalLB's configuration as read from files.
type Input struct {
	pools       []*ipAddressPool
	l2Ads       []*l2Advertisement
	bgpAds      []*bgpAdvertisement
	peers       []*bgpPeer
	bfdProfiles map[string]*bfdProfile
	communities map[string]communityAlias
	// legacyMaps are the legacy ConfigMaps (or config texts) read.
	legacyMaps []*legacyConfigMap
	// reports are made while reading (skipped objects, unknown fields).
	reports []Report
}

// Empty is true when the input held no MetalLB configuration.
func (in *Input) Empty() bool {
	return len(in.pools)+len(in.l2Ads)+len(in.bgpAds)+len(in.peers)+len(in.bfdProfiles)+len(in.communities) == 0
}
