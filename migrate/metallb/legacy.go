package metallb

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// The ConfigMap format of MetalLB before 0.13 (its "config" key), with
// MetalLB's own names (configmaptocrs/types.go of MetalLB).
type legacyConfig struct {
	Peers          []legacyPeer      `json:"peers"`
	BGPCommunities map[string]string `json:"bgp-communities"`
	Pools          []legacyPool      `json:"address-pools"`
	BFDProfiles    []legacyBFD       `json:"bfd-profiles"`
}

type legacyPeer struct {
	MyASN         uint32           `json:"my-asn"`
	ASN           uint32           `json:"peer-asn"`
	Addr          string           `json:"peer-address"`
	SrcAddr       string           `json:"source-address"`
	Port          uint16           `json:"peer-port"`
	HoldTime      string           `json:"hold-time"`
	KeepaliveTime string           `json:"keepalive-time"`
	RouterID      string           `json:"router-id"`
	NodeSelectors []legacySelector `json:"node-selectors"`
	Password      string           `json:"password"`
	BFDProfile    string           `json:"bfd-profile"`
	EBGPMultiHop  bool             `json:"ebgp-multihop"`
}

type legacySelector struct {
	MatchLabels      map[string]string `json:"match-labels"`
	MatchExpressions []struct {
		Key      string   `json:"key"`
		Operator string   `json:"operator"`
		Values   []string `json:"values"`
	} `json:"match-expressions"`
}

type legacyPool struct {
	Protocol          string         `json:"protocol"`
	Name              string         `json:"name"`
	Addresses         []string       `json:"addresses"`
	AutoAssign        *bool          `json:"auto-assign"`
	AvoidBuggyIPs     *bool          `json:"avoid-buggy-ips"`
	BGPAdvertisements []legacyBGPAdv `json:"bgp-advertisements"`
}

type legacyBGPAdv struct {
	AggregationLength   *int32   `json:"aggregation-length"`
	AggregationLengthV6 *int32   `json:"aggregation-length-v6"`
	LocalPref           uint32   `json:"localpref"`
	Communities         []string `json:"communities"`
}

type legacyBFD struct {
	Name             string  `json:"name"`
	ReceiveInterval  *uint32 `json:"receive-interval"`
	TransmitInterval *uint32 `json:"transmit-interval"`
	DetectMultiplier *uint32 `json:"detect-multiplier"`
	EchoInterval     *uint32 `json:"echo-interval"`
	EchoMode         bool    `json:"echo-mode"`
	PassiveMode      bool    `json:"passive-mode"`
	MinimumTTL       *uint32 `json:"minimum-ttl"`
}

// legacyConfigMap is a legacy ConfigMap as read, for its frozen copy in
// side-by-side mode.
type legacyConfigMap struct {
	id string
	// name and namespace are "" for the config text alone.
	name, namespace     string
	labels, annotations map[string]string
	// data are the ConfigMap's keys as read; config is its config key
	// decoded as generic YAML.
	data   map[string]any
	config map[string]any
}

// Legacy spellings of the CRD fields the conversion reports on.
var (
	legacyPeerFields = map[string]string{
		"spec.nodeSelectors": "node-selectors", "spec.password": "password", "spec.bfdProfile": "bfd-profile",
		"spec.ebgpMultiHop": "ebgp-multihop", "spec.holdTime": "hold-time", "spec.keepaliveTime": "keepalive-time",
		"spec.peerAddress": "peer-address", "spec.routerID": "router-id", "spec.sourceAddress": "source-address",
		"spec.peerASN": "peer-asn", "spec.myASN": "my-asn", "spec.peerPort": "peer-port",
	}
	legacyPoolFields = map[string]string{
		"spec.addresses": "addresses", "spec.autoAssign": "auto-assign", "spec.avoidBuggyIPs": "avoid-buggy-ips",
		"spec.interfaces": "protocol", "metadata.name": "name",
	}
	legacyBGPAdvFields = map[string]string{
		"spec.communities": "communities", "spec.localPref": "localpref",
		"spec.aggregationLength": "aggregation-length", "spec.aggregationLengthV6": "aggregation-length-v6",
	}
	legacyBFDFields = map[string]string{
		"spec.echoMode": "echo-mode", "spec.passiveMode": "passive-mode", "spec.minimumTtl": "minimum-ttl",
		"spec.echoInterval": "echo-interval",
	}
)

// addLegacy reads the legacy format into the CRD model, as MetalLB's own
// configmaptocrs does: a layer2 pool gets an L2Advertisement, a bgp pool
// a BGPAdvertisement per bgp-advertisements entry (one with defaults when
// there is none), peers are named peer1, peer2...
func (in *Input) addLegacy(cm *legacyConfigMap, text string) error {
	id := cm.id
	var cfg legacyConfig
	if err := yaml.UnmarshalStrict([]byte(text), &cfg); err != nil {
		return fmt.Errorf("%s: key config: %w", id, err)
	}
	if err := yaml.Unmarshal([]byte(text), &cm.config); err != nil {
		return fmt.Errorf("%s: key config: %w", id, err)
	}
	in.legacyMaps = append(in.legacyMaps, cm)
	for alias, value := range cfg.BGPCommunities {
		in.communities[alias] = communityAlias{src: source{object: id + " (bgp-communities." + alias + ")"}, Value: value}
	}
	for i, b := range cfg.BFDProfiles {
		p := &bfdProfile{Name: b.Name, src: source{object: id, legacy: legacyBFDFields, prefix: fmt.Sprintf("bfd-profiles[%d].", i)}}
		p.Spec.ReceiveInterval, p.Spec.TransmitInterval, p.Spec.DetectMultiplier = b.ReceiveInterval, b.TransmitInterval, b.DetectMultiplier
		p.Spec.EchoInterval, p.Spec.EchoMode, p.Spec.PassiveMode, p.Spec.MinimumTTL = b.EchoInterval, &b.EchoMode, &b.PassiveMode, b.MinimumTTL
		in.bfdProfiles[b.Name] = p
	}
	for i, lp := range cfg.Peers {
		src := source{object: id, legacy: legacyPeerFields, prefix: fmt.Sprintf("peers[%d].", i)}
		p := &bgpPeer{Name: fmt.Sprintf("peer%d", i+1), src: src}
		s := &p.Spec
		s.MyASN, s.ASN, s.Address, s.SrcAddress, s.Port = lp.MyASN, lp.ASN, lp.Addr, lp.SrcAddr, lp.Port
		s.RouterID, s.Password, s.BFDProfile, s.EBGPMultiHop = lp.RouterID, lp.Password, lp.BFDProfile, lp.EBGPMultiHop
		var err error
		if s.HoldTime, err = legacyDuration(lp.HoldTime); err != nil {
			return fmt.Errorf("%s: peers[%d].hold-time: %w", id, i, err)
		}
		if s.KeepaliveTime, err = legacyDuration(lp.KeepaliveTime); err != nil {
			return fmt.Errorf("%s: peers[%d].keepalive-time: %w", id, i, err)
		}
		for _, ns := range lp.NodeSelectors {
			sel := metav1.LabelSelector{MatchLabels: ns.MatchLabels}
			for _, e := range ns.MatchExpressions {
				sel.MatchExpressions = append(sel.MatchExpressions, metav1.LabelSelectorRequirement{
					Key: e.Key, Operator: metav1.LabelSelectorOperator(e.Operator), Values: e.Values})
			}
			s.NodeSelectors = append(s.NodeSelectors, sel)
		}
		in.peers = append(in.peers, p)
	}
	for i, lp := range cfg.Pools {
		prefix := fmt.Sprintf("address-pools[%d].", i)
		p := &ipAddressPool{Name: lp.Name, src: source{object: id, legacy: legacyPoolFields, prefix: prefix}, legacy: cm, legacyIndex: i}
		p.Spec.Addresses, p.Spec.AutoAssign = lp.Addresses, lp.AutoAssign
		p.Spec.AvoidBuggyIPs = lp.AvoidBuggyIPs != nil && *lp.AvoidBuggyIPs
		in.pools = append(in.pools, p)
		switch lp.Protocol {
		case "layer2":
			a := &l2Advertisement{Name: lp.Name, src: p.src}
			a.Spec.IPAddressPools = []string{lp.Name}
			in.l2Ads = append(in.l2Ads, a)
		case "bgp":
			advs := lp.BGPAdvertisements
			if len(advs) == 0 {
				advs = []legacyBGPAdv{{}}
			}
			for j, la := range advs {
				a := &bgpAdvertisement{Name: lp.Name, src: source{object: id, legacy: legacyBGPAdvFields, prefix: fmt.Sprintf("%sbgp-advertisements[%d].", prefix, j)}}
				a.Spec.IPAddressPools = []string{lp.Name}
				a.Spec.AggregationLength, a.Spec.AggregationLengthV6 = la.AggregationLength, la.AggregationLengthV6
				a.Spec.LocalPref, a.Spec.Communities = la.LocalPref, la.Communities
				in.bgpAds = append(in.bgpAds, a)
			}
		default:
			// Not selected by any advertisement: reported as not announced.
			in.reports = append(in.reports, Report{Object: id, Field: prefix + "protocol",
				Message: fmt.Sprintf("protocol %q is neither layer2 nor bgp", lp.Protocol)})
		}
	}
	return nil
}

func legacyDuration(s string) (*metav1.Duration, error) {
	if s == "" {
		return nil, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return nil, err
	}
	return &metav1.Duration{Duration: d}, nil
}
