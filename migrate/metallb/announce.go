package metallb

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// l2Use is what one L2Advertisement says of a pool.
type l2Use struct {
	ad   *l2Advertisement
	node *metav1.LabelSelector
	ifs  []string
}

// layer2 sets each pool's layer2 from the L2Advertisements selecting it.
// MetalLB announces a pool from the union of what its advertisements
// allow; IronLB has one layer2 setting per pool, so advertisements of one
// pool must agree, or one of them allow every node on every interface.
func (c *converter) layer2(announced map[string]bool) {
	uses := map[string][]l2Use{}
	var order []string
	for _, a := range c.in.l2Ads {
		if len(a.Spec.ServiceSelectors) > 0 {
			c.report(a.src, "spec.serviceSelectors", "IronLB announces every Service of a pool: advertising only some Services of a pool is not supported")
		}
		if len(a.Spec.PreferredNodeSelectors) > 0 {
			c.report(a.src, "spec.preferredNodeSelectors", "IronLB has no node preference: it spreads VIPs over eligible nodes by rendezvous hashing")
		}
		u := l2Use{ad: a, ifs: a.Spec.Interfaces}
		if len(a.Spec.NodeSelectors) > 1 {
			c.report(a.src, "spec.nodeSelectors", fmt.Sprintf("%d selectors (any may match); IronLB's layer2.nodeSelector is one selector: only the first is kept", len(a.Spec.NodeSelectors)))
		}
		if len(a.Spec.NodeSelectors) > 0 {
			u.node = &a.Spec.NodeSelectors[0]
		}
		for i, name := range a.Spec.Interfaces {
			if !validInterface(name) {
				c.report(a.src, fmt.Sprintf("spec.interfaces[%d]", i), fmt.Sprintf("%q is not an interface name IronLB accepts (1-15 characters, no space, /, : or %%)", name))
				u.ifs = nil
			}
		}
		for _, p := range c.selectedPools(a.src, a.Spec.IPAddressPools, a.Spec.IPAddressPoolSelectors) {
			if uses[p] == nil {
				order = append(order, p)
			}
			uses[p] = append(uses[p], u)
		}
	}
	for _, name := range order {
		us := uses[name]
		pool := c.byName[name]
		l2 := &v1alpha1.Layer2{}
		chosen := us[0]
		distinct := false
		for _, u := range us {
			if u.node == nil && len(u.ifs) == 0 {
				chosen, distinct = u, false // every node, every interface: covers the others
				break
			}
			if selectorKey(u.node) != selectorKey(us[0].node) || strings.Join(u.ifs, ",") != strings.Join(us[0].ifs, ",") {
				distinct = true
			}
		}
		if distinct {
			var ads []string
			for _, u := range us {
				ads = append(ads, u.ad.Name)
			}
			c.report(pool.src, "", fmt.Sprintf("L2Advertisements %s announce it with different nodeSelectors or interfaces; "+
				"IronLB has one layer2 setting per pool: only those of %s are kept", strings.Join(ads, ", "), us[0].ad.Name))
		}
		l2.NodeSelector = chosen.node
		for _, i := range chosen.ifs {
			l2.Interfaces = append(l2.Interfaces, v1alpha1.InterfaceName(i))
		}
		if len(l2.Interfaces) == 0 {
			c.note(chosen.ad.src, "spec.interfaces", fmt.Sprintf("pool %s: MetalLB answers ARP/NDP on every interface of a node; IronLB on the interface holding the node's InternalIP: "+
				"list the interfaces in layer2.interfaces if the pool's subnet is on another one", name))
		}
		c.ipPools[name].Spec.Layer2 = l2
		announced[name] = true
	}
}

var communityRE = regexp.MustCompile(`^[0-9]{1,5}:[0-9]{1,5}$`)
var largeRE = regexp.MustCompile(`^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$`)

// bgp adds an advertisement to each pool's bgp for every BGPAdvertisement
// selecting it.
func (c *converter) bgp(announced map[string]bool) {
	nodeSel := map[string]*metav1.LabelSelector{}
	nodeSelFrom := map[string]*bgpAdvertisement{}
	for _, a := range c.in.bgpAds {
		s := a.Spec
		if len(s.ServiceSelectors) > 0 {
			c.report(a.src, "spec.serviceSelectors", "IronLB advertises every Service of a pool: advertising only some Services of a pool is not supported")
		}
		if s.AsPathPrepend > 0 {
			c.report(a.src, "spec.asPathPrepend", "AS-path prepending is not supported by IronLB")
		}
		adv := v1alpha1.BGPAdvertisement{}
		if s.AggregationLength != nil && *s.AggregationLength != 32 {
			adv.AggregationLength = ptr.To(*s.AggregationLength)
		}
		if s.AggregationLengthV6 != nil && *s.AggregationLengthV6 != 128 {
			adv.AggregationLengthV6 = ptr.To(*s.AggregationLengthV6)
		}
		if s.LocalPref > 0 {
			adv.LocalPref = ptr.To(int64(s.LocalPref))
		}
		for i, cm := range s.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			std, large, ok := c.community(cm)
			switch {
			case !ok:
				c.report(a.src, field, fmt.Sprintf("%q is neither a community (65000:100, large:1:2:3) nor an alias defined by a Community object of the input", cm))
			case std != "":
				adv.Communities = append(adv.Communities, v1alpha1.Community(std))
			default:
				adv.LargeCommunities = append(adv.LargeCommunities, v1alpha1.LargeCommunity(large))
			}
		}
		pools := c.selectedPools(a.src, s.IPAddressPools, s.IPAddressPoolSelectors)
		var peerNames []string
		for i, p := range s.Peers {
			if !c.hasPeer(p) {
				c.report(a.src, fmt.Sprintf("spec.peers[%d]", i), fmt.Sprintf("BGPPeer %q is not in the input (convert it together with its BGPPeer)", p))
				continue
			}
			peerNames = append(peerNames, p)
			c.peerLabelled[p] = true
		}
		if len(s.Peers) > 0 {
			if len(peerNames) == 0 {
				if len(pools) > 0 {
					c.report(a.src, "spec.peers", "none of its peers is in the input: advertisement not converted")
				}
				continue
			}
			adv.PeerSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
				{Key: PeerLabel, Operator: metav1.LabelSelectorOpIn, Values: peerNames}}}
		}
		if len(s.NodeSelectors) > 1 {
			c.report(a.src, "spec.nodeSelectors", fmt.Sprintf("%d selectors (any may match); IronLB's bgp.nodeSelector is one selector: only the first is kept", len(s.NodeSelectors)))
		}
		var ns *metav1.LabelSelector
		if len(s.NodeSelectors) > 0 {
			ns = &s.NodeSelectors[0]
		}
		for _, name := range pools {
			ip := c.ipPools[name]
			if ip.Spec.BGP == nil {
				ip.Spec.BGP = &v1alpha1.BGP{NodeSelector: ns}
				nodeSel[name], nodeSelFrom[name] = ns, a
			} else if selectorKey(nodeSel[name]) != selectorKey(ns) {
				c.report(a.src, "spec.nodeSelectors", fmt.Sprintf("pool %s: differs from the nodeSelectors of BGPAdvertisement %s; IronLB has one bgp.nodeSelector per pool: that of %s is kept",
					name, nodeSelFrom[name].Name, nodeSelFrom[name].Name))
			}
			if hasAdv(ip.Spec.BGP.Advertisements, adv) {
				announced[name] = true
				continue // the same advertisement twice says nothing more
			}
			if len(ip.Spec.BGP.Advertisements) == 16 {
				c.report(a.src, "", fmt.Sprintf("pool %s: more than 16 advertisements; IronLB allows 16: not converted", name))
				continue
			}
			ip.Spec.BGP.Advertisements = append(ip.Spec.BGP.Advertisements, adv)
			announced[name] = true
		}
	}
	// One advertisement to every peer without attributes is what an empty
	// list means: write the short form.
	for _, ip := range c.ipPools {
		if b := ip.Spec.BGP; b != nil && len(b.Advertisements) == 1 && isEmptyAdv(b.Advertisements[0]) {
			b.Advertisements = nil
		}
	}
}

func hasAdv(l []v1alpha1.BGPAdvertisement, a v1alpha1.BGPAdvertisement) bool {
	want, _ := json.Marshal(a)
	for _, x := range l {
		if got, _ := json.Marshal(x); string(got) == string(want) {
			return true
		}
	}
	return false
}

func isEmptyAdv(a v1alpha1.BGPAdvertisement) bool {
	return a.PeerSelector == nil && len(a.Communities) == 0 && len(a.LargeCommunities) == 0 &&
		a.LocalPref == nil && a.AggregationLength == nil && a.AggregationLengthV6 == nil
}

// community resolves a MetalLB community: "a:b", "large:a:b:c" or an alias.
func (c *converter) community(s string) (std, large string, ok bool) {
	for range 2 {
		switch {
		case communityRE.MatchString(s) && fitsUint16(s):
			return s, "", true
		case strings.HasPrefix(s, "large:") && largeRE.MatchString(strings.TrimPrefix(s, "large:")):
			return "", strings.TrimPrefix(s, "large:"), true
		}
		alias, found := c.in.communities[s]
		if !found {
			return "", "", false
		}
		s = alias.Value
	}
	return "", "", false
}

func fitsUint16(s string) bool {
	a, b, _ := strings.Cut(s, ":")
	var x, y int
	_, err := fmt.Sscanf(a+" "+b, "%d %d", &x, &y)
	return err == nil && x <= 65535 && y <= 65535
}

func (c *converter) hasPeer(name string) bool {
	for _, p := range c.in.peers {
		if p.Name == name {
			return true
		}
	}
	return false
}

var interfaceRE = regexp.MustCompile(`^[^\s/:%]{1,15}$`)

func validInterface(s string) bool { return interfaceRE.MatchString(s) && s != "." && s != ".." }
