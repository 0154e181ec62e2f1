package cli

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/status"
)

func statusCommand() *cobra.Command {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	var output, namespace, metricsURL string
	var metricsInsecure bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Pools and their usage, VIPs and the nodes announcing them, speakers, BGP sessions",
		Long: `Shows what IronLB writes to the API: IPPools (usage, readiness), every
LoadBalancer VIP with the node(s) announcing it (the Services'
ironlb.dev/Announced condition), the speaker pods and their versions, and
each node's BGP session with each BGPPeer. With --metrics-url it also reads
the CCM's /metrics (which speakers the CCM is connected to); an unreachable
URL is reported and the rest is still shown. The CCM serves /metrics on its
secure port with a self-signed certificate unless configured otherwise:

  kubectl -n ironlb-system port-forward deploy/ironlb-ccm 10258 &
  kubectl ironlb status --metrics-url https://127.0.0.1:10258/metrics --metrics-insecure-skip-tls-verify

(use the leading replica: only the leader has speaker connections).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output must be table or json, not %q", output)
			}
			cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(loading, overrides).ClientConfig()
			if err != nil {
				return err
			}
			kube, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return err
			}
			dyn, err := dynamic.NewForConfig(cfg)
			if err != nil {
				return err
			}
			opts := status.Options{Namespace: namespace, MetricsURL: metricsURL}
			if metricsURL != "" {
				if opts.HTTPClient, err = metricsClient(cfg, metricsInsecure); err != nil {
					return err
				}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			st, err := status.Gather(ctx, kube, dyn, opts)
			if err != nil {
				return err
			}
			if output == "json" {
				return st.WriteJSON(cmd.OutOrStdout())
			}
			return st.WriteTable(cmd.OutOrStdout(), time.Now())
		},
	}
	f := cmd.Flags()
	f.StringVarP(&output, "output", "o", "table", "table or json")
	f.StringVar(&namespace, "ironlb-namespace", "ironlb-system", "IronLB's namespace, where the speaker pods run")
	f.StringVar(&metricsURL, "metrics-url", "", "the CCM's metrics endpoint, such as https://127.0.0.1:10258/metrics (optional)")
	f.BoolVar(&metricsInsecure, "metrics-insecure-skip-tls-verify", false, "do not verify the metrics endpoint's certificate (the CCM's is self-signed by default)")
	f.StringVar(&loading.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(overrides, f, clientcmd.RecommendedConfigOverrideFlags(""))
	return cmd
}

// metricsClient sends the kubeconfig's credentials (the CCM authorizes
// /metrics like the API server does) but trusts the metrics endpoint's
// certificate only by the system roots, or not at all when insecure.
func metricsClient(cfg *rest.Config, insecure bool) (*http.Client, error) {
	c := rest.CopyConfig(cfg)
	c.TLSClientConfig.CAFile, c.TLSClientConfig.CAData = "", nil
	c.TLSClientConfig.ServerName = ""
	c.TLSClientConfig.Insecure = insecure
	rt, err := rest.TransportFor(c)
	if err != nil {
		return nil, err
	}
	return &http.Client{Transport: rt, Timeout: 5 * time.Second}, nil
}
