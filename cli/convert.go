package cli

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/ironlb/ironlb/migrate/metallb"
)

func convertCommand() *cobra.Command {
	conv := &cobra.Command{
		Use:   "convert",
		Short: "Convert another load balancer's configuration to IronLB objects",
	}
	var file string
	var allowPartial, sideBySide bool
	m := &cobra.Command{
		Use:   "metallb -f FILE|-",
		Short: "Convert MetalLB's CRDs or legacy ConfigMap to IPPools and BGPPeers (YAML on stdout)",
		Long: `Reads MetalLB's configuration (metallb.io IPAddressPool, L2Advertisement,
BGPAdvertisement, BGPPeer, BFDProfile, Community, as multi-document YAML or a
List, or the ConfigMap of MetalLB before 0.13) and writes the equivalent
IronLB objects to stdout. Whatever has no equivalent is reported on stderr,
one line per item ("unsupported: <object>: <field>: ..."), and makes the exit
status 2 unless --allow-partial; "note:" lines need no decision.

--side-by-side is for moving one Service at a time with MetalLB still
running: the IPPools cover MetalLB's ranges (IronLB never hands out an
address a MetalLB Service holds), and the output starts with each
converted IPAddressPool (or the legacy ConfigMap) "frozen" with autoAssign
false, to apply to MetalLB: it keeps the addresses it gave and hands out no
new ones. IronLB then runs with the cloud config loadBalancerClass:
{name: ironlb.dev/ironlb, only: true}, and a Service moves with two patches
(type: ClusterIP, then type: LoadBalancer with loadBalancerClass
ironlb.dev/ironlb and ironlb.dev/load-balancer-ips: <its address>). BGP
peers are reported: MetalLB's speakers already hold the nodes' sessions.

  kubectl get -n metallb-system ipaddresspools,l2advertisements,bgpadvertisements,bgppeers,bfdprofiles,communities -o yaml \
    | kubectl ironlb convert metallb -f - > ironlb.yaml

  kubectl ironlb convert metallb --side-by-side -f metallb.yaml > side-by-side.yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runConvert(cmd.InOrStdin(), cmd.OutOrStdout(), cmd.ErrOrStderr(), file, allowPartial, sideBySide)
		},
	}
	m.Flags().StringVarP(&file, "filename", "f", "", "file to read, - for stdin")
	m.Flags().BoolVar(&allowPartial, "allow-partial", false, "exit 0 even when some of the input has no IronLB equivalent")
	m.Flags().BoolVar(&sideBySide, "side-by-side", false, "for moving one Service at a time with MetalLB running: also write MetalLB's pools with autoAssign false, to apply to MetalLB")
	_ = m.MarkFlagRequired("filename")
	conv.AddCommand(m)
	return conv
}

func runConvert(stdin io.Reader, stdout, stderr io.Writer, file string, allowPartial, sideBySide bool) error {
	r := stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return err
		}
		defer f.Close()
		r = f
	}
	in, err := metallb.Read(r)
	if err != nil {
		return err
	}
	convert := metallb.Convert
	if sideBySide {
		convert = metallb.ConvertSideBySide
	}
	res := convert(in)
	if in.Empty() {
		for _, rep := range res.Reports {
			fmt.Fprintln(stderr, rep)
		}
		return fmt.Errorf("no MetalLB configuration in the input")
	}
	if err := res.WriteYAML(stdout); err != nil {
		return err
	}
	for _, rep := range res.Reports {
		fmt.Fprintln(stderr, rep)
	}
	if res.Partial() && !allowPartial {
		return &exitError{code: ExitPartial, msg: "some of the input has no IronLB equivalent (the unsupported: lines above); review them, then use --allow-partial to accept"}
	}
	return nil
}
