package metallb

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// The notes every side-by-side conversion ends with.
var sideBySideNotes = []string{
	"note: side-by-side: run IronLB with the cloud config loadBalancerClass: {name: ironlb.dev/ironlb, only: true}: it then serves only Services of that class and leaves class-less Services to MetalLB",
	"note: side-by-side: apply the MetalLB objects of the output (written first) before any Service moves; with kubectl apply --server-side, add --force-conflicts if another field manager set their autoAssign",
	"note: side-by-side: a Service moves keeping its address with two patches: first spec.type: ClusterIP (MetalLB releases the address and withdraws it), then spec.type: LoadBalancer, spec.loadBalancerClass: ironlb.dev/ironlb and the annotation ironlb.dev/load-balancer-ips: <its old address>; new Services take the class from the start",
}

// frozenNote is the note on a pool that side-by-side mode freezes.
func frozenNote(object, field, ipPool string) string {
	return "note: " + object + ": " + field + ": side-by-side: written with autoAssign false for MetalLB: MetalLB keeps the addresses its Services have and hands out none from this pool unless a Service names an address or the pool; IronLB's IPPool " + ipPool + " hands out the same addresses to Services of class ironlb.dev/ironlb, never one a MetalLB Service holds"
}

// bgpPoolReport is the report on a pool advertised over BGP.
func bgpPoolReport(object string) string {
	return "unsupported: " + object + ": side-by-side: advertised over BGP, and MetalLB's speakers hold the nodes' sessions with the routers: IronLB advertises the Services that move only over sessions of its own (see the BGPPeer lines); otherwise move this pool's Services all at once (docs/migrating-from-metallb.md)"
}

// peerReport is the report on a BGPPeer MetalLB's speakers hold sessions with.
func peerReport(object, field, addr, peer string) string {
	return "unsupported: " + object + ": " + field + ": side-by-side: MetalLB's speakers hold a session with " + addr + " from each node's address, and a router takes one session per neighbor address: do not apply the BGPPeer " + peer + " of the output unchanged while they run (IronLB's sessions would contend with theirs); give it a peerAddress of its own on the router, or a sourceAddress that is a second address of the nodes, configured as a neighbor on the router; or move the BGP pools all at once (docs/migrating-from-metallb.md)"
}

func runSideBySide(t *testing.T, input string) (string, []string, bool) {
	t.Helper()
	return runWith(t, input, ConvertSideBySide)
}

// TestSideBySide: the frozen MetalLB objects come first, the IronLB
// objects are those of an all-at-once conversion, and every pool, peer
// and the mode itself get their lines.
func TestSideBySide(t *testing.T) {
	const P1 = "IPAddressPool metallb-system/p1"
	for _, tc := range []struct {
		name, input, want string
		reports           []string
		partial           bool
	}{{
		name: "layer-2 pool: labels, annotations and fields the converter does not know are kept, kubectl's last-applied is not",
		input: "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\n" +
			"metadata: {name: p1, namespace: metallb-system, labels: {zone: a}, annotations: {team: net, kubectl.kubernetes.io/last-applied-configuration: \"{}\"}}\n" +
			"spec: {addresses: [192.0.2.0/28], avoidBuggyIPs: true, future: {x: 1}}\n---\n" + obj("L2Advertisement", "l2", "interfaces: [eth0]"),
		want: `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  annotations:
    team: net
  labels:
    zone: a
  name: p1
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.0/28
  autoAssign: false
  avoidBuggyIPs: true
  future:
    x: 1
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  labels:
    zone: a
  name: p1
spec:
  addresses:
  - 192.0.2.0/28
  avoidBuggyIPs: true
  layer2:
    interfaces:
    - eth0
`,
		reports: append([]string{"unsupported: " + P1 + ": spec.future: field not known to the converter: not converted",
			frozenNote(P1, "spec.autoAssign", "p1")}, sideBySideNotes...),
		partial: true, // by spec.future only
	}, {
		name:  "pool already autoAssign false: written unchanged",
		input: obj("IPAddressPool", "p1", "addresses: [192.0.2.0/28]\nautoAssign: false") + obj("L2Advertisement", "l2", "interfaces: [eth0]"),
		want: `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: p1
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.0/28
  autoAssign: false
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 192.0.2.0/28
  autoAssign: false
  layer2:
    interfaces:
    - eth0
`,
		reports: append([]string{"note: " + P1 + ": spec.autoAssign: side-by-side: already false: written unchanged for MetalLB, which hands out its addresses only to Services that name an address or the pool; IronLB's IPPool p1 covers the same addresses, autoAssign false too"},
			sideBySideNotes...),
	}, {
		name: "BGP pool and its peer with BFD: reported, written all the same",
		input: obj("IPAddressPool", "p1", "addresses: [198.51.100.0/28]") + obj("BGPAdvertisement", "b", "ipAddressPools: [p1]") +
			obj("BGPPeer", "tor", "myASN: 64513\npeerASN: 64512\npeerAddress: 192.0.2.254\nbfdProfile: fast") + obj("BFDProfile", "fast", ""),
		want: `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: p1
  namespace: metallb-system
spec:
  addresses:
  - 198.51.100.0/28
  autoAssign: false
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 198.51.100.0/28
  bgp: {}
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: tor
spec:
  bfd:
    enabled: true
  myASN: 64513
  peerASN: 64512
  peerAddress: 192.0.2.254
`,
		reports: append([]string{frozenNote(P1, "spec.autoAssign", "p1"), bgpPoolReport(P1),
			peerReport("BGPPeer metallb-system/tor", "spec.peerAddress", "192.0.2.254", "tor"),
			"unsupported: BGPPeer metallb-system/tor: spec.bfdProfile: side-by-side: MetalLB's FRR runs BFD on the nodes' UDP port 3784, where IronLB's speakers listen too: keep bfd off the BGPPeer tor until MetalLB is removed"},
			sideBySideNotes...),
		partial: true,
	}, {
		name: "several pools: frozen copies ordered by namespace and name; a second pool of one name is neither converted nor frozen; no namespace",
		input: obj("IPAddressPool", "zz", "addresses: [192.0.2.16/28]") + obj("IPAddressPool", "aa", "addresses: [192.0.2.0/28]") +
			"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: aa, namespace: other}\nspec: {addresses: [203.0.113.0/28]}\n---\n" +
			"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: nons}\nspec: {addresses: [192.0.2.32/28]}\n---\n" +
			obj("L2Advertisement", "l2", "interfaces: [eth0]"),
		want: `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: aa
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.0/28
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: nons
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.32/28
  autoAssign: false
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: zz
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.16/28
  autoAssign: false
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: aa
spec:
  addresses:
  - 192.0.2.0/28
  layer2:
    interfaces:
    - eth0
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: nons
spec:
  addresses:
  - 192.0.2.32/28
  layer2:
    interfaces:
    - eth0
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: zz
spec:
  addresses:
  - 192.0.2.16/28
  layer2:
    interfaces:
    - eth0
`,
		reports: append([]string{
			"unsupported: IPAddressPool other/aa: metadata.name: a second pool of this name: IPPools are cluster-scoped; only the first is converted",
			frozenNote("IPAddressPool metallb-system/zz", "spec.autoAssign", "zz"),
			frozenNote("IPAddressPool metallb-system/aa", "spec.autoAssign", "aa"),
			"note: IPAddressPool nons: metadata.namespace: side-by-side: none in the input: its frozen copy is written for metallb-system, MetalLB's namespace; change it if MetalLB runs in another",
			frozenNote("IPAddressPool nons", "spec.autoAssign", "nons"),
		}, sideBySideNotes...),
		partial: true, // by the second pool of a name only
	}, {
		name: "legacy ConfigMap: written back with auto-assign false, reported (MetalLB before 0.13 knows no class)",
		input: `apiVersion: v1
kind: ConfigMap
metadata: {name: config, namespace: metallb-system, labels: {app: metallb}}
data:
  config: |
    # a comment
    address-pools:
    - name: lan
      protocol: layer2
      addresses: [198.51.100.0/26]
    - name: public
      protocol: bgp
      auto-assign: false
      addresses: [203.0.113.0/27]
    peers:
    - {peer-address: 192.0.2.1, peer-asn: 64512, my-asn: 4200000000}
`,
		want: `apiVersion: v1
data:
  config: |
    address-pools:
    - addresses:
      - 198.51.100.0/26
      auto-assign: false
      name: lan
      protocol: layer2
    - addresses:
      - 203.0.113.0/27
      auto-assign: false
      name: public
      protocol: bgp
    peers:
    - my-asn: 4200000000
      peer-address: 192.0.2.1
      peer-asn: 64512
kind: ConfigMap
metadata:
  labels:
    app: metallb
  name: config
  namespace: metallb-system
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: lan
spec:
  addresses:
  - 198.51.100.0/26
  layer2: {}
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: public
spec:
  addresses:
  - 203.0.113.0/27
  autoAssign: false
  bgp: {}
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: peer1
spec:
  myASN: 4200000000
  peerASN: 64512
  peerAddress: 192.0.2.1
`,
		reports: append([]string{
			"note: ConfigMap metallb-system/config: address-pools[0].protocol: pool lan: MetalLB answers ARP/NDP on every interface of a node; IronLB on the interface holding the node's InternalIP: list the interfaces in layer2.interfaces if the pool's subnet is on another one",
			frozenNote("ConfigMap metallb-system/config", "address-pools[0].auto-assign", "lan"),
			"note: ConfigMap metallb-system/config: address-pools[1].auto-assign: side-by-side: already false: written unchanged for MetalLB, which hands out its addresses only to Services that name an address or the pool; IronLB's IPPool public covers the same addresses, autoAssign false too",
			bgpPoolReport("ConfigMap metallb-system/config: address-pools[1]"),
			"unsupported: ConfigMap metallb-system/config: side-by-side: MetalLB before 0.13, which this format is for, does not know spec.loadBalancerClass (0.13 added it) and takes Services of class ironlb.dev/ironlb for its own too: upgrade MetalLB to 0.13 or later first (its configuration becomes CRDs: convert those), or migrate all at once",
			"note: ConfigMap metallb-system/config: data.config: side-by-side: written back for MetalLB with auto-assign: false on each pool converted; the config's comments and key order are not kept",
			peerReport("ConfigMap metallb-system/config", "peers[0].peer-address", "192.0.2.1", "peer1"),
		}, sideBySideNotes...),
		partial: true,
	}, {
		name:  "legacy config text alone: written as metallb-system/config",
		input: "address-pools:\n- {name: lan, protocol: layer2, addresses: [198.51.100.0/26]}\n",
		want: `apiVersion: v1
data:
  config: |
    address-pools:
    - addresses:
      - 198.51.100.0/26
      auto-assign: false
      name: lan
      protocol: layer2
kind: ConfigMap
metadata:
  name: config
  namespace: metallb-system
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: lan
spec:
  addresses:
  - 198.51.100.0/26
  layer2: {}
`,
		reports: append([]string{
			"note: legacy config: address-pools[0].protocol: pool lan: MetalLB answers ARP/NDP on every interface of a node; IronLB on the interface holding the node's InternalIP: list the interfaces in layer2.interfaces if the pool's subnet is on another one",
			frozenNote("legacy config", "address-pools[0].auto-assign", "lan"),
			"unsupported: legacy config: side-by-side: MetalLB before 0.13, which this format is for, does not know spec.loadBalancerClass (0.13 added it) and takes Services of class ironlb.dev/ironlb for its own too: upgrade MetalLB to 0.13 or later first (its configuration becomes CRDs: convert those), or migrate all at once",
			"note: legacy config: side-by-side: the config text alone was read: its frozen copy is written as the ConfigMap metallb-system/config, MetalLB's default; change the name and namespace if yours differ",
			"note: legacy config: data.config: side-by-side: written back for MetalLB with auto-assign: false on each pool converted; the config's comments and key order are not kept",
		}, sideBySideNotes...),
		partial: true,
	}, {
		name:  "a pool without a usable address is neither converted nor frozen",
		input: obj("IPAddressPool", "p1", "addresses: [not-an-address]") + obj("L2Advertisement", "l2", "interfaces: [eth0]"),
		want:  "",
		reports: append([]string{"unsupported: " + P1 + ": spec.addresses[0]: \"not-an-address\" is neither a CIDR nor a range of two addresses of one family: left out",
			"unsupported: " + P1 + ": spec.addresses: no usable address: pool not converted",
			"unsupported: L2Advertisement metallb-system/l2: selects every IPAddressPool, and the input has none: nothing converted (convert it together with its pools)"}, sideBySideNotes...),
		partial: true,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			out, reps, partial := runSideBySide(t, tc.input)
			if diff := cmp.Diff(tc.want, out); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.reports, reps); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if partial != tc.partial {
				t.Errorf("partial %v, want %v", partial, tc.partial)
			}
			// The IronLB objects are those of an all-at-once conversion.
			all, _, _ := run(t, tc.input)
			if !strings.HasSuffix(out, all) {
				t.Errorf("the IronLB objects differ from Convert's:\n%s\nwant a suffix:\n%s", out, all)
			}
		})
	}
}

// TestSideBySideGolden: whole outputs of both modes. The default mode's
// files were written by the converter before side-by-side mode existed
// and are never rewritten by -update: without --side-by-side the output
// stays byte for byte what it was.
func TestSideBySideGolden(t *testing.T) {
	for _, tc := range []struct {
		input, golden string
		sideBySide    bool
	}{
		{"side-by-side.yaml", "side-by-side.default.golden", false},
		{"legacy-configmap.yaml", "legacy-configmap.golden", false},
		{"side-by-side.yaml", "side-by-side.golden", true},
		{"legacy-configmap.yaml", "legacy-configmap.side-by-side.golden", true},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			f, err := os.Open(filepath.Join("testdata", tc.input))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			in, err := Read(f)
			if err != nil {
				t.Fatal(err)
			}
			res := Convert(in)
			if tc.sideBySide {
				res = ConvertSideBySide(in)
			}
			var out bytes.Buffer
			if err := res.WriteYAML(&out); err != nil {
				t.Fatal(err)
			}
			got := out.String() + "# stderr:\n"
			for _, r := range res.Reports {
				got += "# " + r.String() + "\n"
			}
			path := filepath.Join("testdata", tc.golden)
			if *update && tc.sideBySide {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", path, diff)
			}
		})
	}
}
