package metallb

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// obj writes a MetalLB object of metallb-system.
func obj(kind, name, spec string) string {
	version := "v1beta1"
	if kind == "BGPPeer" {
		version = "v1beta2"
	}
	s := "apiVersion: metallb.io/" + version + "\nkind: " + kind + "\nmetadata:\n  name: " + name + "\n  namespace: metallb-system\n"
	if spec != "" {
		s += "spec:\n  " + strings.ReplaceAll(strings.TrimSpace(spec), "\n", "\n  ") + "\n"
	}
	return s + "---\n"
}

const pool1 = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p1, namespace: metallb-system}\nspec: {addresses: [192.0.2.0/28]}\n---\n"

func run(t *testing.T, input string) (string, []string, bool) {
	t.Helper()
	return runWith(t, input, Convert)
}

// runWith reads input, converts it with convert and returns the YAML, the
// report lines and whether the result is partial.
func runWith(t *testing.T, input string, convert func(*Input) *Result) (string, []string, bool) {
	t.Helper()
	in, err := Read(strings.NewReader(input))
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	res := convert(in)
	var out bytes.Buffer
	if err := res.WriteYAML(&out); err != nil {
		t.Fatal(err)
	}
	var reps []string
	for _, r := range res.Reports {
		reps = append(reps, r.String())
	}
	return out.String(), reps, res.Partial()
}

const l2note = "note: L2Advertisement metallb-system/l2: spec.interfaces: pool p1: MetalLB answers ARP/NDP on every interface of a node; IronLB on the interface holding the node's InternalIP: list the interfaces in layer2.interfaces if the pool's subnet is on another one"

// TestMappings: each MetalLB field that has an IronLB equivalent, with the
// exact output.
func TestMappings(t *testing.T) {
	for _, tc := range mappingCases {
		t.Run(tc.name, func(t *testing.T) {
			out, reps, partial := run(t, tc.input)
			if diff := cmp.Diff(tc.want, out); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.reports, reps); diff != "" {
				t.Errorf("reports (-want +got):\n%s", diff)
			}
			if partial {
				t.Errorf("partial, want complete")
			}
		})
	}
}

// mappingCases are also applied to a real API server (TestApplyDryRun).
var mappingCases = []struct {
	name, input, want string
	reports           []string
}{{
	name:  "pool announced over layer 2 from every node",
	input: pool1 + obj("L2Advertisement", "l2", ""),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 192.0.2.0/28
  layer2: {}
`,
	reports: []string{l2note},
}, {
	name: "addresses canonical, autoAssign false, avoidBuggyIPs, labels",
	input: obj("IPAddressPool", "p1", `addresses: [192.0.2.5/24, " 198.51.100.1 - 198.51.100.9", "2001:0db8::/64"]
autoAssign: false
avoidBuggyIPs: true`) + obj("L2Advertisement", "l2", "interfaces: [eth1]"),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 192.0.2.0/24
  - 198.51.100.1-198.51.100.9
  - 2001:db8::/64
  autoAssign: false
  avoidBuggyIPs: true
  layer2:
    interfaces:
    - eth1
`,
}, {
	name: "serviceAllocation: restricted pools first, lower MetalLB priority first",
	input: obj("IPAddressPool", "a", "addresses: [192.0.2.0/30]\nserviceAllocation: {priority: 10, namespaces: [web]}") +
		obj("IPAddressPool", "b", "addresses: [192.0.2.4/30]\nserviceAllocation: {priority: 5, serviceSelectors: [{matchLabels: {x: z}}]}") +
		obj("IPAddressPool", "c", "addresses: [192.0.2.8/30]\nserviceAllocation: {namespaceSelectors: [{matchLabels: {team: t}}]}") +
		obj("IPAddressPool", "d", "addresses: [192.0.2.12/30]") +
		obj("BGPAdvertisement", "all", ""),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: a
spec:
  addresses:
  - 192.0.2.0/30
  bgp: {}
  priority: 2
  serviceAllocation:
    namespaces:
    - web
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: b
spec:
  addresses:
  - 192.0.2.4/30
  bgp: {}
  priority: 3
  serviceAllocation:
    serviceSelector:
      matchLabels:
        x: z
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: c
spec:
  addresses:
  - 192.0.2.8/30
  bgp: {}
  priority: 1
  serviceAllocation:
    namespaceSelector:
      matchLabels:
        team: t
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: d
spec:
  addresses:
  - 192.0.2.12/30
  bgp: {}
`,
}, {
	name: "layer2 nodeSelector and interfaces; pool chosen by label",
	input: "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p1, labels: {zone: a}}\nspec: {addresses: [192.0.2.0/28]}\n---\n" +
		obj("IPAddressPool", "other", "addresses: [198.51.100.0/28]") + obj("BGPAdvertisement", "b", "ipAddressPools: [other]") +
		obj("L2Advertisement", "l2", "ipAddressPoolSelectors: [{matchLabels: {zone: a}}]\nnodeSelectors: [{matchLabels: {edge: \"true\"}}]\ninterfaces: [bond0, eth2]"),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: other
spec:
  addresses:
  - 198.51.100.0/28
  bgp: {}
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
  layer2:
    interfaces:
    - bond0
    - eth2
    nodeSelector:
      matchLabels:
        edge: "true"
`,
}, {
	name:  "one advertisement for every node on every interface covers a narrower one",
	input: pool1 + obj("L2Advertisement", "narrow", "nodeSelectors: [{matchLabels: {a: b}}]\ninterfaces: [eth1]") + obj("L2Advertisement", "l2", ""),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 192.0.2.0/28
  layer2: {}
`,
	reports: []string{l2note},
}, {
	name: "BGP advertisement: communities (plain, large, alias), localPref, aggregation, peers, nodeSelector; layer 2 too",
	input: pool1 + obj("L2Advertisement", "l2", "interfaces: [eth0]") +
		obj("Community", "aliases", "communities: [{name: NO_ADVERTISE, value: \"65535:65282\"}, {name: big, value: \"large:64512:1:2\"}]") +
		obj("BGPAdvertisement", "b", `ipAddressPools: [p1]
communities: ["64512:100", "large:64512:7:8", NO_ADVERTISE, big]
localPref: 150
aggregationLength: 28
aggregationLengthV6: 128
peers: [r1]
nodeSelectors: [{matchLabels: {rack: r1}}]`) +
		obj("BGPAdvertisement", "b2", "ipAddressPools: [p1]\nnodeSelectors: [{matchLabels: {rack: r1}}]") +
		obj("BGPPeer", "r1", "myASN: 64513\npeerASN: 64512\npeerAddress: 192.0.2.1") +
		obj("BGPPeer", "r2", "myASN: 64513\npeerASN: 64512\npeerAddress: 192.0.2.2"),
	want: `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: p1
spec:
  addresses:
  - 192.0.2.0/28
  bgp:
    advertisements:
    - aggregationLength: 28
      communities:
      - 64512:100
      - 65535:65282
      largeCommunities:
      - "64512:7:8"
      - "64512:1:2"
      localPref: 150
      peerSelector:
        matchExpressions:
        - key: ironlb.dev/metallb-peer
          operator: In
          values:
          - r1
    - {}
    nodeSelector:
      matchLabels:
        rack: r1
  layer2:
    interfaces:
    - eth0
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  labels:
    ironlb.dev/metallb-peer: r1
  name: r1
spec:
  myASN: 64513
  peerASN: 64512
  peerAddress: 192.0.2.1
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: r2
spec:
  myASN: 64513
  peerASN: 64512
  peerAddress: 192.0.2.2
`,
}, {
	name: "peer: every field with an equivalent; password in clear becomes a Secret",
	input: obj("BFDProfile", "fast", "receiveInterval: 100\ntransmitInterval: 300\ndetectMultiplier: 5\nechoMode: false\nminimumTtl: 254") +
		obj("BGPPeer", "tor", `myASN: 64513
peerASN: 64512
peerAddress: "2001:db8:0::1"
peerPort: 1179
sourceAddress: 2001:db8::10
routerID: 192.0.2.10
holdTime: 9s
keepaliveTime: 3s
connectTime: 10s
nodeSelectors: [{matchExpressions: [{key: rack, operator: In, values: [r1]}]}]
password: s3cret
bfdProfile: fast
enableGracefulRestart: true
ebgpMultiHop: true
dualStackAddressFamily: true`),
	want: `apiVersion: v1
kind: Secret
metadata:
  name: tor-bgp-password
  namespace: ironlb-system
stringData:
  password: s3cret
type: ironlb.dev/bgp-password
---
apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: tor
spec:
  bfd:
    detectMultiplier: 5
    enabled: true
    receiveInterval: 100ms
  connectRetryTime: 10s
  ebgpMultihop: 255
  gracefulRestart:
    enabled: true
  holdTime: 9s
  keepaliveTime: 3s
  myASN: 64513
  nodeSelector:
    matchExpressions:
    - key: rack
      operator: In
      values:
      - r1
  passwordSecretRef:
    key: password
    name: tor-bgp-password
  peerASN: 64512
  peerAddress: 2001:db8::1
  peerPort: 1179
  routerID: 192.0.2.10
  sourceAddress: 2001:db8::10
`,
	reports: []string{"note: BGPPeer metallb-system/tor: spec.password: written to Secret ironlb-system/tor-bgp-password of the output (the password is in clear there, as it was in the input)"},
}, {
	name: "BGPPeer v1beta1 in a List, passwordSecret",
	input: `apiVersion: v1
kind: List
items:
- apiVersion: metallb.io/v1beta1
  kind: BGPPeer
  metadata: {name: old, namespace: metallb-system}
  spec: {myASN: 64512, peerASN: 64512, peerAddress: 192.0.2.1, holdTime: 30s, passwordSecret: {name: pw}}
`,
	want: `apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: old
spec:
  holdTime: 30s
  myASN: 64512
  passwordSecretRef:
    key: password
    name: pw
  peerASN: 64512
  peerAddress: 192.0.2.1
`,
	reports: []string{"note: BGPPeer metallb-system/old: spec.passwordSecret: copy Secret metallb-system/pw (key password) into namespace ironlb-system as type ironlb.dev/bgp-password, the only Secrets IronLB reads BGP passwords from"},
}}

// TestSecondPoolOfAName: two IPAddressPools of one name (in two
// namespaces) make one IPPool, written once.
func TestSecondPoolOfAName(t *testing.T) {
	out, reps, _ := run(t, pool1+"apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p1, namespace: other}\nspec: {addresses: [203.0.113.0/28]}\n---\n"+
		obj("L2Advertisement", "l2", "interfaces: [eth0]"))
	want := "apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata:\n  name: p1\nspec:\n  addresses:\n  - 192.0.2.0/28\n  layer2:\n    interfaces:\n    - eth0\n"
	if diff := cmp.Diff(want, out); diff != "" {
		t.Errorf("output (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"unsupported: IPAddressPool other/p1: metadata.name: a second pool of this name: IPPools are cluster-scoped; only the first is converted"}, reps); diff != "" {
		t.Errorf("reports (-want +got):\n%s", diff)
	}
}
