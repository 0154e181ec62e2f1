package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const complete = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: lan, namespace: metallb-system}
spec: {addresses: [192.0.2.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: lan, namespace: metallb-system}
spec: {interfaces: [eth0]}
`

const partial = `apiVersion: metallb.io/v1beta2
kind: BGPPeer
metadata: {name: r, namespace: metallb-system}
spec: {myASN: 64513, peerASN: 64512, peerAddress: 192.0.2.1, vrf: red}
`

const wantPool = `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: lan
spec:
  addresses:
  - 192.0.2.0/28
  layer2:
    interfaces:
    - eth0
`

const wantPeer = `apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: r
spec:
  myASN: 64513
  peerASN: 64512
  peerAddress: 192.0.2.1
`

const frozenPool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lan
  namespace: metallb-system
spec:
  addresses:
  - 192.0.2.0/28
  autoAssign: false
`

const sideBySideTail = "note: side-by-side: run IronLB with the cloud config loadBalancerClass: {name: ironlb.dev/ironlb, only: true}: it then serves only Services of that class and leaves class-less Services to MetalLB\n" +
	"note: side-by-side: apply the MetalLB objects of the output (written first) before any Service moves; with kubectl apply --server-side, add --force-conflicts if another field manager set their autoAssign\n" +
	"note: side-by-side: a Service moves keeping its address with two patches: first spec.type: ClusterIP (MetalLB releases the address and withdraws it), then spec.type: LoadBalancer, spec.loadBalancerClass: ironlb.dev/ironlb and the annotation ironlb.dev/load-balancer-ips: <its old address>; new Services take the class from the start\n"

const sideBySideLines = "note: IPAddressPool metallb-system/lan: spec.autoAssign: side-by-side: written with autoAssign false for MetalLB: MetalLB keeps the addresses its Services have and hands out none from this pool unless a Service names an address or the pool; IronLB's IPPool lan hands out the same addresses to Services of class ironlb.dev/ironlb, never one a MetalLB Service holds\n" + sideBySideTail

const sideBySidePeerLine = "unsupported: BGPPeer metallb-system/r: spec.peerAddress: side-by-side: MetalLB's speakers hold a session with 192.0.2.1 from each node's address, and a router takes one session per neighbor address: do not apply the BGPPeer r of the output unchanged while they run (IronLB's sessions would contend with theirs); give it a peerAddress of its own on the router, or a sourceAddress that is a second address of the nodes, configured as a neighbor on the router; or move the BGP pools all at once (docs/migrating-from-metallb.md)\n"

const vrfLine = "unsupported: BGPPeer metallb-system/r: spec.vrf: peering from a VRF is not supported: IronLB opens sessions in the node's default routing table\n"

// TestConvertExitStatus: 0 when everything converts, 2 when something has
// no equivalent (output written all the same), 0 with --allow-partial, 1
// for unreadable input.
func TestConvertExitStatus(t *testing.T) {
	file := filepath.Join(t.TempDir(), "metallb.yaml")
	if err := os.WriteFile(file, []byte(complete), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, stdin string
		args        []string
		code        int
		out, errOut string
	}{
		{"complete from a file", "", []string{"convert", "metallb", "-f", file}, ExitOK, wantPool, ""},
		{"complete from stdin", complete, []string{"convert", "metallb", "-f", "-"}, ExitOK, wantPool, ""},
		{"partial", partial, []string{"convert", "metallb", "-f", "-"}, ExitPartial, wantPeer,
			vrfLine + "error: some of the input has no IronLB equivalent (the unsupported: lines above); review them, then use --allow-partial to accept\n"},
		{"partial allowed", partial, []string{"convert", "metallb", "--allow-partial", "-f", "-"}, ExitOK, wantPeer, vrfLine},
		// A want ending in a space is a prefix.
		{"not YAML", "{", []string{"convert", "metallb", "-f", "-"}, ExitError, "", "error: document 1: "},
		{"nothing of MetalLB", "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n", []string{"convert", "metallb", "-f", "-"}, ExitError, "",
			"note: Namespace x: v1 is not a MetalLB object: skipped\nerror: no MetalLB configuration in the input\n"},
		{"no file", "", []string{"convert", "metallb", "-f", filepath.Join(t.TempDir(), "none")}, ExitError, "", "error: open "},
		{"-f missing", "", []string{"convert", "metallb"}, ExitError, "", `error: required flag(s) "filename" not set` + "\n"},
		{"side-by-side", complete, []string{"convert", "metallb", "--side-by-side", "-f", "-"}, ExitOK, frozenPool + "---\n" + wantPool, sideBySideLines},
		{"side-by-side partial", partial, []string{"convert", "metallb", "--side-by-side", "-f", "-"}, ExitPartial, wantPeer,
			vrfLine + sideBySidePeerLine + sideBySideTail + "error: some of the input has no IronLB equivalent (the unsupported: lines above); review them, then use --allow-partial to accept\n"},
		{"side-by-side=false", complete, []string{"convert", "metallb", "--side-by-side=false", "-f", "-"}, ExitOK, wantPool, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(tc.args, strings.NewReader(tc.stdin), &out, &errOut)
			if code != tc.code {
				t.Errorf("exit status %d, want %d (stderr: %s)", code, tc.code, errOut.String())
			}
			if diff := cmp.Diff(tc.out, out.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			if got := errOut.String(); got != tc.errOut && !(strings.HasSuffix(tc.errOut, " ") && strings.HasPrefix(got, tc.errOut)) {
				t.Errorf("stderr (-want +got):\n%s", cmp.Diff(tc.errOut, got))
			}
		})
	}
}

// TestConvertDefaultUnchanged: without --side-by-side, the command's
// output for the side-by-side test input is byte for byte what the
// converter wrote before side-by-side mode existed (the golden file's
// part above "# stderr:").
func TestConvertDefaultUnchanged(t *testing.T) {
	dir := filepath.Join("..", "migrate", "metallb", "testdata")
	golden, err := os.ReadFile(filepath.Join(dir, "side-by-side.default.golden"))
	if err != nil {
		t.Fatal(err)
	}
	want, _, ok := strings.Cut(string(golden), "# stderr:\n")
	if !ok {
		t.Fatal("no # stderr: line in the golden file")
	}
	var out, errOut bytes.Buffer
	if code := Run([]string{"convert", "metallb", "-f", filepath.Join(dir, "side-by-side.yaml")}, nil, &out, &errOut); code != ExitOK {
		t.Fatalf("exit status %d: %s", code, errOut.String())
	}
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("stdout (-want +got):\n%s", diff)
	}
}
