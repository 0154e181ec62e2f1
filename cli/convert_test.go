package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(tc.args, strings.NewReader(tc.stdin), &out, &errOut)
			if code != tc.code {
				t.Errorf("exit status %d, want %d (stderr: %s)", code, tc.code, errOut.String())
			}
			if out.String() != tc.out {
				t.Errorf("stdout:\n%s\nwant:\n%s", out.String(), tc.out)
			}
			if got := errOut.String(); got != tc.errOut && !(strings.HasSuffix(tc.errOut, " ") && strings.HasPrefix(got, tc.errOut)) {
				t.Errorf("stderr:\n%q\nwant:\n%q", got, tc.errOut)
			}
		})
	}
}
