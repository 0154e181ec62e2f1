package cli

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/status"
)

func statusCommand() *cobra.Command {
	loading := clientcmd.NewDefaultClientConfigLoadingRules()
	overrides := &clientcmd.ConfigOverrides{}
	var output, namespace, class string
	var onlyClass bool
	var metrics metricsOptions
	var cp status.ControlPlaneOptions
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Pools and their usage, VIPs and the nodes announcing them, speakers, BGP sessions",
		Long: `Shows what IronLB writes to the API: IPPools (usage, readiness), every
LoadBalancer VIP with the node(s) announcing it (the Services'
ironlb.dev/Announced condition; Services of IronLB's class, and class-less
ones unless --only-class), the speaker pods and their versions, and
each node's BGP session with each BGPPeer, and the control-plane VIP: its
holder (layer 2) or advertisers (BGP) and each control-plane node's
kube-apiserver health, read from every control-plane node's speaker
(/status on port 7476, through the API server's node proxy: this needs
get on nodes/proxy). A node whose speaker does not answer is shown as
unreachable; nodes that disagree about the holder are flagged (a
partition). The section is left out when no control-plane speaker answers
and kube-system/kubeadm-config names no VIP. With --metrics-url it also reads
the leading CCM's /metrics (which speakers the CCM is connected to); an
unreachable URL is reported and the rest is still shown.

--load-balancer-class and --only-class say which Services IronLB serves, as
its cloud config's loadBalancerClass name and only do: Services of that
class (default ironlb.dev/ironlb) are listed, and class-less ones unless
--only-class (IronLB then leaves them to another load balancer, such as
MetalLB during a migration). Services of other classes are never listed.

The kubeconfig's credentials go to the API server only, never to
--metrics-url. The CCM authorizes /metrics callers like the API server
does: give a token meant for metrics only, such as one of the ServiceAccount
ironlb-metrics-reader of deploy/monitoring (allowed GET /metrics and nothing
else), and reach the leader through a port-forward (the tunnel runs through
the API server):

  kubectl -n ironlb-system get lease ironlb-ccm -o jsonpath='{.spec.holderIdentity}'
  kubectl -n ironlb-system port-forward pod/<leader pod> 10258 &
  kubectl ironlb status --metrics-url https://127.0.0.1:10258/metrics \
    --metrics-token-file <(kubectl -n ironlb-system create token ironlb-metrics-reader --duration 10m) \
    --metrics-ca-file <CA of the CCM's serving certificate>

The token is sent only over HTTPS to the URL's host, never across a
redirect (none is followed). The CCM's default serving certificate is
self-signed: without --metrics-ca-file, --metrics-insecure-skip-tls-verify
skips the check, and the token then goes to a loopback address (a
port-forward) only.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("--output must be table or json, not %q", output)
			}
			if cp.Port < 1 || cp.Port > 65535 || cp.Timeout <= 0 || cp.Timeout > time.Minute {
				return fmt.Errorf("--control-plane-port must be 1-65535 and --control-plane-timeout more than 0 and at most 1m")
			}
			if errs := validation.IsQualifiedName(class); len(errs) > 0 {
				return fmt.Errorf("--load-balancer-class %q is not a class a Service can have: %s", class, strings.Join(errs, "; "))
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
			opts := status.Options{Namespace: namespace, LoadBalancerClass: class, OnlyClass: onlyClass, MetricsURL: metrics.url, ControlPlane: cp}
			if metrics.url != "" {
				if opts.HTTPClient, err = metricsClient(metrics); err != nil {
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
	f.StringVar(&class, "load-balancer-class", status.DefaultLoadBalancerClass, "the class IronLB serves (its cloud config's loadBalancerClass.name): Services of it are listed")
	f.BoolVar(&onlyClass, "only-class", false, "IronLB serves only that class (its cloud config's loadBalancerClass.only): class-less Services are not listed")
	f.StringVar(&metrics.url, "metrics-url", "", "the leading CCM's metrics endpoint, such as https://127.0.0.1:10258/metrics through a port-forward (optional)")
	f.StringVar(&metrics.tokenFile, "metrics-token-file", "", "file with a bearer token for --metrics-url only, such as one of the ServiceAccount ironlb-metrics-reader (never the kubeconfig's)")
	f.StringVar(&metrics.caFile, "metrics-ca-file", "", "CA certificates (PEM) to verify --metrics-url's certificate with (default: the system's)")
	f.BoolVar(&metrics.insecure, "metrics-insecure-skip-tls-verify", false, "do not verify --metrics-url's certificate; a token is then sent to a loopback address only")
	f.IntVar(&cp.Port, "control-plane-port", status.DefaultControlPlanePort, "the control-plane speakers' health port, which serves /status")
	f.DurationVar(&cp.Timeout, "control-plane-timeout", status.DefaultControlPlaneWait, "how long each control-plane node's speaker may take to answer")
	f.StringVar(&loading.ExplicitPath, "kubeconfig", "", "path to the kubeconfig file")
	clientcmd.BindOverrideFlags(overrides, f, clientcmd.RecommendedConfigOverrideFlags(""))
	return cmd
}
