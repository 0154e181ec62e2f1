package metallb

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestReports: each thing without an IronLB equivalent is reported, one
// line naming the object and the field, and makes the result partial.
func TestReports(t *testing.T) {
	const l2 = "apiVersion: metallb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2, namespace: metallb-system}\nspec: {interfaces: [eth0]}\n---\n"
	peer := func(extra string) string {
		return obj("BGPPeer", "r", "myASN: 64513\npeerASN: 64512\npeerAddress: 192.0.2.1\n"+extra)
	}
	const P = "unsupported: IPAddressPool metallb-system/p1: "
	const R = "unsupported: BGPPeer metallb-system/r: "
	for _, tc := range []struct {
		name, input string
		want        []string
	}{
		{"pool no advertisement selects", pool1,
			[]string{P + "no L2Advertisement or BGPAdvertisement selects it, so MetalLB assigns its addresses but does not announce them; IronLB has no assign-only pool: it announces a pool with neither layer2 nor bgp over layer 2"}},
		{"namespaces and namespaceSelectors", obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28]\nserviceAllocation: {namespaces: [a], namespaceSelectors: [{matchLabels: {t: a}}]}") + l2,
			[]string{P + "spec.serviceAllocation.namespaceSelectors: MetalLB allows the namespaces listed OR those the selectors match; IronLB requires a Service to match namespaces AND namespaceSelector: only namespaces is kept"}},
		{"several namespaceSelectors", obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28]\nserviceAllocation: {namespaceSelectors: [{matchLabels: {t: a}}, {matchLabels: {t: b}}]}") + l2,
			[]string{P + "spec.serviceAllocation.namespaceSelectors: 2 selectors (any may match); IronLB has one namespaceSelector: only the first is kept"}},
		{"several serviceSelectors", obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28]\nserviceAllocation: {serviceSelectors: [{matchLabels: {t: a}}, {matchLabels: {t: b}}]}") + l2,
			[]string{P + "spec.serviceAllocation.serviceSelectors: 2 selectors (any may match); IronLB has one serviceSelector: only the first is kept"}},
		{"bad address", obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28, 192.0.2.9-192.0.2.1]") + l2,
			[]string{P + "spec.addresses[1]: \"192.0.2.9-192.0.2.1\" is neither a CIDR nor a range of two addresses of one family: left out"}},
		{"pool name not valid", obj("IPAddressPool", "My_Pool", "addresses: [192.0.2.0/28]") + l2,
			[]string{"unsupported: IPAddressPool metallb-system/My_Pool: metadata.name: \"My_Pool\" is not a valid object name; the IPPool is named \"my-pool\": Services that name the pool (metallb.universe.tf/address-pool, metallb.io/address-pool) must name \"my-pool\""}},
		{"L2 several nodeSelectors, serviceSelectors, preferredNodeSelectors", pool1 + obj("L2Advertisement", "a", "interfaces: [eth0]\nnodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {c: d}}]\nserviceSelectors: [{matchLabels: {s: t}}]\npreferredNodeSelectors: [{weight: 1, preference: {matchLabels: {a: b}}}]"),
			[]string{
				"unsupported: L2Advertisement metallb-system/a: spec.serviceSelectors: IronLB announces every Service of a pool: advertising only some Services of a pool is not supported",
				"unsupported: L2Advertisement metallb-system/a: spec.preferredNodeSelectors: IronLB has no node preference: it spreads VIPs over eligible nodes by rendezvous hashing",
				"unsupported: L2Advertisement metallb-system/a: spec.nodeSelectors: 2 selectors (any may match); IronLB's layer2.nodeSelector is one selector: only the first is kept",
			}},
		{"L2 advertisements disagree", pool1 + obj("L2Advertisement", "a", "interfaces: [eth0]") + obj("L2Advertisement", "b", "interfaces: [eth1]"),
			[]string{P + "L2Advertisements a, b announce it with different nodeSelectors or interfaces; IronLB has one layer2 setting per pool: only those of a are kept"}},
		{"L2 pool missing", obj("L2Advertisement", "a", "ipAddressPools: [nope]"),
			[]string{"unsupported: L2Advertisement metallb-system/a: spec.ipAddressPools[0]: pool \"nope\" is not in the input (convert it together with its IPAddressPool)"}},
		{"L2 every pool of none", obj("L2Advertisement", "a", ""),
			[]string{"unsupported: L2Advertisement metallb-system/a: selects every IPAddressPool, and the input has none: nothing converted (convert it together with its pools)"}},
		{"BGP serviceSelectors, asPathPrepend, several nodeSelectors, unknown community", pool1 + obj("BGPAdvertisement", "b", "serviceSelectors: [{matchLabels: {a: b}}]\nasPathPrepend: 2\nnodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {c: d}}]\ncommunities: [NOPE, \"70000:1\"]"),
			[]string{
				"unsupported: BGPAdvertisement metallb-system/b: spec.serviceSelectors: IronLB advertises every Service of a pool: advertising only some Services of a pool is not supported",
				"unsupported: BGPAdvertisement metallb-system/b: spec.asPathPrepend: AS-path prepending is not supported by IronLB",
				"unsupported: BGPAdvertisement metallb-system/b: spec.communities[0]: \"NOPE\" is neither a community (65000:100, large:1:2:3) nor an alias defined by a Community object of the input",
				"unsupported: BGPAdvertisement metallb-system/b: spec.communities[1]: \"70000:1\" is neither a community (65000:100, large:1:2:3) nor an alias defined by a Community object of the input",
				"unsupported: BGPAdvertisement metallb-system/b: spec.nodeSelectors: 2 selectors (any may match); IronLB's bgp.nodeSelector is one selector: only the first is kept",
			}},
		{"BGP advertisements of one pool with different nodeSelectors", pool1 + obj("BGPAdvertisement", "a", "nodeSelectors: [{matchLabels: {a: b}}]") + obj("BGPAdvertisement", "b", ""),
			[]string{"unsupported: BGPAdvertisement metallb-system/b: spec.nodeSelectors: pool p1: differs from the nodeSelectors of BGPAdvertisement a; IronLB has one bgp.nodeSelector per pool: that of a is kept"}},
		{"BGP peer missing", pool1 + obj("BGPAdvertisement", "a", "peers: [nope]"),
			[]string{
				"unsupported: BGPAdvertisement metallb-system/a: spec.peers[0]: BGPPeer \"nope\" is not in the input (convert it together with its BGPPeer)",
				"unsupported: BGPAdvertisement metallb-system/a: spec.peers: none of its peers is in the input: advertisement not converted",
				P + "no L2Advertisement or BGPAdvertisement selects it, so MetalLB assigns its addresses but does not announce them; IronLB has no assign-only pool: it announces a pool with neither layer2 nor bgp over layer 2",
			}},
		{"peer vrf, localASN, disableMP, several nodeSelectors", peer("vrf: red\nlocalASN: 65000\ndisableMP: true\nnodeSelectors: [{matchLabels: {a: b}}, {matchLabels: {c: d}}]"),
			[]string{
				R + "spec.localASN: local-as (advertising another ASN to this peer) is not supported: IronLB uses myASN",
				R + "spec.vrf: peering from a VRF is not supported: IronLB opens sessions in the node's default routing table",
				R + "spec.disableMP: IronLB always carries IPv4 and IPv6 routes over one session (MP-BGP); separate sessions per family are not supported",
				R + "spec.nodeSelectors: 2 selectors (any may match); IronLB's nodeSelector is one selector: only the first is kept",
			}},
		{"peer unnumbered", obj("BGPPeer", "r", "myASN: 1\npeerASN: 2\ninterface: eth0"),
			[]string{R + "spec.interface: unnumbered BGP (peering over an interface) is not supported: peer not converted"}},
		{"peer dynamicASN", obj("BGPPeer", "r", "myASN: 1\ndynamicASN: external\npeerAddress: 192.0.2.1"),
			[]string{R + "spec.dynamicASN: IronLB needs the peer's ASN (peerASN): peer not converted"}},
		{"peer holdTime 0s, keepalive too long", peer("holdTime: 0s\nkeepaliveTime: 120s"),
			[]string{
				R + "spec.holdTime: 0s (no keepalives) is not supported by IronLB's speakers: the default 90s is used",
				R + "spec.keepaliveTime: 2m0s is not shorter than the hold time 90s: left out (30s)",
			}},
		{"peer BFD profile missing", peer("bfdProfile: nope"),
			[]string{R + "spec.bfdProfile: BFDProfile \"nope\" is not in the input: BFD left off"}},
		{"peer password longer than a TCP MD5 key", peer("password: " + strings.Repeat("p", 81)),
			[]string{
				"note: BGPPeer metallb-system/r: spec.password: written to Secret ironlb-system/r-bgp-password of the output (the password is in clear there, as it was in the input)",
				R + "spec.password: the password is 81 bytes, more than the 80 a TCP MD5 key holds: IronLB will not use it (a BGP password is 1 to 80 printable ASCII characters); change it on the router and in Secret ironlb-system/r-bgp-password",
			}},
		{"BFD echo, passive, minimumTtl; iBGP multihop BFD", obj("BFDProfile", "f", "echoMode: true\npassiveMode: true\nminimumTtl: 10") +
			obj("BGPPeer", "r", "myASN: 64512\npeerASN: 64512\npeerAddress: 192.0.2.1\nbfdProfile: f\nebgpMultiHop: true"),
			[]string{
				"note: BGPPeer metallb-system/r: spec.ebgpMultiHop: applies to eBGP only; this is an iBGP session (FRR ignores it too)",
				"unsupported: BFDProfile metallb-system/f: spec.echoMode: BFD echo mode is not supported: IronLB runs asynchronous mode only",
				"unsupported: BFDProfile metallb-system/f: spec.passiveMode: passive BFD is not supported: IronLB's speakers always start the session",
				"unsupported: BFDProfile metallb-system/f: spec.minimumTtl: not configurable: IronLB accepts single-hop BFD with TTL 255 only, multihop from any TTL",
				R + "spec.bfdProfile: multihop BFD for an iBGP peer is not supported: IronLB runs single-hop BFD (the router must be directly connected)",
			}},
		{"unknown field and kind", obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28]\nfuture: 1\nserviceAllocation: {later: true}") + l2 + obj("Frobnicator", "x", ""),
			[]string{
				P + "spec.future: field not known to the converter: not converted",
				P + "spec.serviceAllocation.later: field not known to the converter: not converted",
				"unsupported: Frobnicator metallb-system/x: kind Frobnicator of metallb.io/v1beta1 is not known to the converter: not converted",
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, reps, partial := run(t, tc.input)
			var got []string
			for _, r := range reps {
				if r != l2Note("l2") {
					got = append(got, r)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if !partial {
				t.Errorf("not partial, want partial")
			}
		})
	}
}

func l2Note(ad string) string {
	return "note: L2Advertisement metallb-system/" + ad + ": spec.interfaces: pool p1: MetalLB answers ARP/NDP on every interface of a node; IronLB on the interface holding the node's InternalIP: list the interfaces in layer2.interfaces if the pool's subnet is on another one"
}
