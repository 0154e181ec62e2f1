package cli

import (
	"bytes"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/cpvip"
)

// TestControlPlaneManifest: the command prints what cpvip.StaticPod makes
// of its flags, and fails with a usage error and no output otherwise.
func TestControlPlaneManifest(t *testing.T) {
	for _, tc := range []struct {
		name     string
		args     []string
		want     cpvip.ManifestOptions
		wantCode int
		wantErr  string
	}{{
		name: "layer 2",
		args: []string{"--vip", "192.0.2.250", "--interface", "eth0"},
		want: cpvip.ManifestOptions{VIP: "192.0.2.250", Mode: "l2", Interface: "eth0"},
	}, {
		name: "layer 2, key rotation, own image",
		args: []string{"--vip=2001:db8::fa", "--key-file=/etc/ironlb/new.key", "--key-file", "/etc/kubernetes/pki/sa.key",
			"--image", "registry.example/ironlb-speaker:dev"},
		want: cpvip.ManifestOptions{VIP: "2001:db8::fa", Mode: "l2", KeyFiles: []string{"/etc/ironlb/new.key", "/etc/kubernetes/pki/sa.key"},
			Image: "registry.example/ironlb-speaker:dev"},
	}, {
		name: "BGP",
		args: []string{"--vip", "198.51.100.62", "--mode", "bgp", "--bgp-peer", "192.0.2.1", "--bgp-peer", "192.0.2.2",
			"--bgp-peer-asn", "64512", "--bgp-asn", "64513", "--bgp-password-file", "/etc/ironlb/bgp-password"},
		want: cpvip.ManifestOptions{VIP: "198.51.100.62", Mode: "bgp", BGPPeers: []string{"192.0.2.1", "192.0.2.2"},
			BGPPeerASN: 64512, BGPASN: 64513, BGPPasswordFile: "/etc/ironlb/bgp-password"},
	}, {
		name:     "no VIP",
		args:     []string{"--interface", "eth0"},
		wantCode: ExitError,
		wantErr:  `required flag(s) "vip" not set`,
	}, {
		name:     "bad VIP",
		args:     []string{"--vip", "192.0.2.250/32"},
		wantCode: ExitError,
		wantErr:  `--vip "192.0.2.250/32"`,
	}, {
		name:     "ASN out of range",
		args:     []string{"--vip", "192.0.2.250", "--mode", "bgp", "--bgp-peer", "192.0.2.1", "--bgp-peer-asn", "4294967296", "--bgp-asn", "1"},
		wantCode: ExitError,
		wantErr:  "--bgp-peer-asn",
	}, {
		name:     "an argument",
		args:     []string{"--vip", "192.0.2.250", "eth0"},
		wantCode: ExitError,
		wantErr:  "unknown command",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := Run(append([]string{"control-plane", "manifest"}, tc.args...), nil, &out, &errOut)
			if code != tc.wantCode {
				t.Fatalf("exit status %d, want %d; stderr: %s", code, tc.wantCode, errOut.String())
			}
			if tc.wantCode != ExitOK {
				if out.Len() != 0 {
					t.Errorf("output on failure: %s", out.String())
				}
				if !strings.Contains(errOut.String(), tc.wantErr) {
					t.Errorf("stderr %q does not say %q", errOut.String(), tc.wantErr)
				}
				return
			}
			want, err := cpvip.StaticPod(tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(string(want), out.String()); diff != "" {
				t.Errorf("output (-want +got):\n%s", diff)
			}
			if errOut.Len() != 0 {
				t.Errorf("stderr: %s", errOut.String())
			}
		})
	}
}
