package cli

import (
	"github.com/spf13/cobra"

	"github.com/ironlb/ironlb/cpvip"
)

func controlPlaneCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "control-plane",
		Short: "The kube-apiserver's own VIP for a kubeadm HA control plane",
		Args:  cobra.NoArgs,
	}
	cmd.AddCommand(controlPlaneManifestCommand())
	return cmd
}

func controlPlaneManifestCommand() *cobra.Command {
	var o cpvip.ManifestOptions
	cmd := &cobra.Command{
		Use:   "manifest --vip ADDRESS [flags]",
		Short: "Print the control-plane speaker's static pod for " + cpvip.ManifestPath,
		Long: `Prints the static pod that holds the kube-apiserver's VIP (ironlb-speaker
control-plane). Put the same file on every control-plane node at
` + cpvip.ManifestPath + `, before kubeadm init
--control-plane-endpoint <VIP>:6443 --upload-certs on the first node and
before kubeadm join --control-plane on the others:

  kubectl ironlb control-plane manifest --vip 192.0.2.250 --interface eth0 \
    > ` + cpvip.ManifestPath + `

Layer 2 (the default): the control-plane speakers elect one holder among the
nodes whose kube-apiserver is ready, over UDP messages on the LAN signed with
a key derived from --key-file (kubeadm's sa.key, which --upload-certs copies
to every control-plane node). BGP (--mode bgp): every node whose
kube-apiserver is ready advertises the VIP to --bgp-peer, with BFD.

It needs no cluster: nothing is read from or sent to an API server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			data, err := cpvip.StaticPod(o)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(data)
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.VIP, "vip", "", "the control-plane VIP, IPv4 or IPv6 (required)")
	f.StringVar(&o.Mode, "mode", cpvip.ModeL2, "l2 (one elected holder answers ARP/NDP) or bgp (every ready node advertises the VIP)")
	f.StringVar(&o.Interface, "interface", "", "the nodes' interface for the VIP (default: the one whose subnet holds the VIP in l2; the route to the first BGP peer in bgp)")
	f.StringArrayVar(&o.KeyFiles, "key-file", nil, "l2: a file on the nodes the election key is derived from, repeatable: the first signs, every one verifies (default /etc/kubernetes/pki/sa.key)")
	f.StringVar(&o.Image, "image", "", "the speaker's image, with registry and tag or digest (default "+cpvip.DefaultImage()+")")
	f.StringArrayVar(&o.BGPPeers, "bgp-peer", nil, "bgp: a router's address, repeatable")
	f.Uint32Var(&o.BGPPeerASN, "bgp-peer-asn", 0, "bgp: the routers' AS number")
	f.Uint32Var(&o.BGPASN, "bgp-asn", 0, "bgp: the control-plane nodes' AS number")
	f.StringVar(&o.BGPPasswordFile, "bgp-password-file", "", "bgp: a file on the nodes holding the sessions' TCP MD5 password")
	if err := cmd.MarkFlagRequired("vip"); err != nil {
		panic(err)
	}
	return cmd
}
