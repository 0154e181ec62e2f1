package main

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	logsapi "k8s.io/component-base/logs/api/v1"

	"github.com/ironlb/ironlb/cpvip"
)

// TestStaticPodArgs: the arguments the static pod of kubectl ironlb
// control-plane manifest runs ironlb-speaker with are the control-plane
// subcommand's, and mean what the manifest's mounts and ports assume.
func TestStaticPodArgs(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts cpvip.ManifestOptions
		want cpOptions
	}{{
		name: "layer 2, defaults",
		opts: cpvip.ManifestOptions{VIP: "192.0.2.250"},
		want: cpOptions{vip: "192.0.2.250", mode: "l2", keyFiles: []string{"/etc/kubernetes/pki/sa.key"}},
	}, {
		name: "layer 2, interface, key rotation",
		opts: cpvip.ManifestOptions{VIP: "2001:db8::fa", Interface: "eth0", KeyFiles: []string{"/etc/ironlb/new.key", "/etc/kubernetes/pki/sa.key"}},
		want: cpOptions{vip: "2001:db8::fa", mode: "l2", ifc: "eth0", keyFiles: []string{"/etc/ironlb/new.key", "/etc/kubernetes/pki/sa.key"}},
	}, {
		name: "BGP",
		opts: cpvip.ManifestOptions{VIP: "198.51.100.62", Mode: "bgp", BGPPeers: []string{"192.0.2.1"}, BGPPeerASN: 64512, BGPASN: 64513},
		want: cpOptions{vip: "198.51.100.62", mode: "bgp", keyFiles: []string{"/etc/kubernetes/pki/sa.key"},
			bgp: cpvip.BGPConfig{Peers: []netip.Addr{netip.MustParseAddr("192.0.2.1")}, PeerASN: 64512, ASN: 64513}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			args, err := cpvip.Args(tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if args[0] != controlPlaneCommand {
				t.Fatalf("the static pod runs %q, not the %s subcommand", args[0], controlPlaneCommand)
			}
			t.Setenv("NODE_NAME", "cp-1")
			var o cpOptions
			fs := controlPlaneFlags(&o, logsapi.NewLoggingConfiguration())
			if err := fs.Parse(args[1:]); err != nil {
				t.Fatalf("ironlb-speaker control-plane does not take the static pod's arguments %q: %v", args[1:], err)
			}
			if fs.NArg() != 0 {
				t.Errorf("arguments left over: %q", fs.Args())
			}
			want := tc.want
			want.node = "cp-1"
			want.readyzURL = "https://127.0.0.1:6443/readyz"
			want.serverName = "kubernetes"
			// What the pod mounts and declares.
			want.caFile = "/etc/kubernetes/pki/ca.crt"
			want.port, want.healthPort = 7477, 7476
			// BFD's defaults, which the manifest leaves alone.
			want.bgp.BFD, want.bgp.BFDInterval, want.bgp.BFDMultiplier = true, cpvip.DefaultBFDInterval, cpvip.DefaultBFDMultiplier
			if diff := cmp.Diff(want, o, cmp.AllowUnexported(cpOptions{}), cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("options (-want +got):\n%s", diff)
			}
		})
	}
}
