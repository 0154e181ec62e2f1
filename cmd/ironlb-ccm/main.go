// Command ironlb-ccm is IronLB's cloud-controller-manager: the standard
// Kubernetes cloud-controller-manager with the "ironlb" provider, which
// initializes bare-metal nodes and serves Services of type LoadBalancer.
package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/app"
	"k8s.io/cloud-provider/app/config"
	"k8s.io/cloud-provider/names"
	"k8s.io/cloud-provider/options"
	"k8s.io/component-base/cli"
	cliflag "k8s.io/component-base/cli/flag"
	_ "k8s.io/component-base/logs/json/register"          // --logging-format=json
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric
	k8sversion "k8s.io/component-base/version"
	genericcontrollermanager "k8s.io/controller-manager/app"
	"k8s.io/controller-manager/controller"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/internal/version"
	"github.com/ironlb/ironlb/provider"
)

func main() {
	opts, err := options.NewCloudControllerManagerOptions()
	if err != nil {
		klog.Fatalf("Initializing options: %v", err)
	}
	// IronLB's defaults; every one can still be set by flag.
	opts.KubeCloudShared.CloudProvider.Name = provider.Name
	opts.Generic.LeaderElection.ResourceName = "ironlb-ccm"
	// Bulk creation (a GitOps sync, a restore) must not queue for minutes:
	// the service controller makes four API writes per Service (finalizer,
	// status, two Events) from one client, so 1000 Services need a few
	// hundred requests a second; the API server's priority and fairness
	// still protects it. (Framework defaults: 1 sync, 20 QPS: 1000 Services
	// took minutes.)
	opts.ServiceController.ConcurrentServiceSyncs = defaultServiceSyncs
	opts.Generic.ClientConnection.QPS = defaultQPS
	opts.Generic.ClientConnection.Burst = defaultBurst
	// A leader gap is time in which no failed node's VIPs move: take over
	// within seconds (framework default: 15 s lease, 10 s renew deadline,
	// 2 s retry).
	opts.Generic.LeaderElection.LeaseDuration.Duration = defaultLeaseDuration
	opts.Generic.LeaderElection.RenewDeadline.Duration = defaultRenewDeadline
	opts.Generic.LeaderElection.RetryPeriod.Duration = defaultRetryPeriod

	controllers := maps.Clone(app.DefaultInitFuncConstructors)
	controllers[provider.ControllerName] = app.ControllerInitFuncConstructor{
		InitContext: app.ControllerInitContext{ClientName: "ironlb"},
		Constructor: func(_ app.ControllerInitContext, _ *config.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
			return func(context.Context, genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
				c, ok := cloud.(*provider.Cloud)
				if !ok {
					return nil, false, nil
				}
				return c.Health(), true, nil
			}
		},
	}
	controllers[names.ServiceLBController] = classlessOnly(controllers[names.ServiceLBController])
	cmd := app.NewCloudControllerManagerCommand(opts, initCloud, controllers,
		names.CCMControllerAliases(), cliflag.NamedFlagSets{}, stopOnSignal())
	cmd.Use = "ironlb-ccm"
	// The framework registers --configure-cloud-routes with a literal
	// default of true, overwriting any value set before: set it on the
	// flag itself. Pod routes are the CNI's job.
	if err := setDefault(cmd.Flags(), "configure-cloud-routes", "false"); err != nil {
		klog.Fatalf("Setting IronLB's defaults: %v", err)
	}
	printVersion(cmd)
	os.Exit(cli.Run(cmd))
}

// classlessOnly wraps the service controller's constructor: the service
// controller serves only class-less Services, and does not start when the
// cloud config says IronLB serves only its loadBalancerClass (those
// Services belong to another implementation, which must not find IronLB's
// finalizer on them). IronLB's own controller serves its class either way.
func classlessOnly(c app.ControllerInitFuncConstructor) app.ControllerInitFuncConstructor {
	construct := c.Constructor
	c.Constructor = func(initContext app.ControllerInitContext, completed *config.CompletedConfig, cloud cloudprovider.Interface) app.InitFunc {
		start := construct(initContext, completed, cloud)
		return func(ctx context.Context, cctx genericcontrollermanager.ControllerContext) (controller.Interface, bool, error) {
			if c, ok := cloud.(*provider.Cloud); ok && !c.ServesClassless() {
				klog.InfoS("Not starting the service controller: IronLB serves only its loadBalancerClass (cloud config loadBalancerClass.only)")
				return nil, false, nil
			}
			return start(ctx, cctx)
		}
	}
	return c
}

// IronLB's defaults for the framework's throughput and leader-election
// flags (see main).
const (
	defaultServiceSyncs  = 10
	defaultQPS           = 200
	defaultBurst         = 400
	defaultLeaseDuration = 8 * time.Second
	defaultRenewDeadline = 6 * time.Second
	defaultRetryPeriod   = time.Second
)

// setDefault changes a registered flag's value and the default --help
// shows.
func setDefault(fs *pflag.FlagSet, name, value string) error {
	f := fs.Lookup(name)
	if f == nil {
		return fmt.Errorf("no flag --%s", name)
	}
	if err := f.Value.Set(value); err != nil {
		return fmt.Errorf("--%s=%s: %w", name, value, err)
	}
	f.DefValue = value
	return nil
}

// printVersion makes --version print IronLB's version and the Kubernetes
// version it is built from: the framework's --version prints only the
// latter ("Kubernetes v1.37.2"). --version=raw is the framework's.
func printVersion(cmd *cobra.Command) {
	run := cmd.RunE
	cmd.RunE = func(c *cobra.Command, args []string) error {
		if f := c.Flags().Lookup("version"); f != nil && f.Value.String() == "true" {
			fmt.Printf("ironlb-ccm %s (Kubernetes %s)\n", version.Version, k8sversion.Get().GitVersion)
			return nil
		}
		return run(c, args)
	}
}

// stepDown is the IronLB provider once initCloud made it: on SIGTERM
// it stops leading and releases the Lease first.
var stepDown atomic.Pointer[provider.Cloud]

// stepDownTimeout bounds releasing the Lease at shutdown.
const stepDownTimeout = 2 * time.Second

// stopOnSignal returns a channel closed on SIGTERM or SIGINT, so the
// controller manager stops and the process exits 0; a second signal exits at
// once. A leading IronLB first ends its term and releases its Lease.
func stopOnSignal() <-chan struct{} {
	stop := make(chan struct{})
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		sig := <-sigs
		klog.InfoS("Shutting down", "signal", sig.String())
		if c := stepDown.Load(); c != nil {
			ctx, cancel := context.WithTimeout(context.Background(), stepDownTimeout)
			if err := c.StepDown(ctx); err != nil {
				klog.ErrorS(err, "Cannot release the leader-election Lease; a standby takes over once it expires")
			}
			cancel()
		}
		close(stop)
		<-sigs
		os.Exit(1)
	}()
	return stop
}

// initCloud builds the provider named by --cloud-provider from the
// --cloud-config file; an invalid file stops the process with its error.
func initCloud(c *config.CompletedConfig) cloudprovider.Interface {
	shared := c.ComponentConfig.KubeCloudShared.CloudProvider
	klog.InfoS("Starting IronLB", "version", version.Version, "cloudProvider", shared.Name)
	cloud, err := cloudprovider.InitCloudProvider(shared.Name, shared.CloudConfigFile)
	if err == nil && cloud == nil {
		err = errNoProvider(shared.Name)
	}
	if err != nil {
		klog.ErrorS(err, "Cannot start the cloud provider", "cloudProvider", shared.Name, "cloudConfig", shared.CloudConfigFile)
		klog.FlushAndExit(klog.ExitFlushTimeout, 1)
	}
	if ironlb, ok := cloud.(*provider.Cloud); ok {
		stepDown.Store(ironlb)
		le := c.ComponentConfig.Generic.LeaderElection
		ironlb.SetLeaderElection(provider.LeaderElection{
			Enabled:       le.LeaderElect,
			Namespace:     le.ResourceNamespace,
			Name:          le.ResourceName,
			LeaseDuration: le.LeaseDuration.Duration,
			RetryPeriod:   le.RetryPeriod.Duration,
		})
		ironlb.SetServiceWorkers(int(c.ComponentConfig.ServiceController.ConcurrentServiceSyncs))
		// Standby replicas too: a new leader finds the speaker pods and
		// Nodes listed (its speakers keep their streams and VIPs).
		if c.Client != nil {
			ironlb.WatchSpeakers(c.Client)
		}
	}
	return cloud
}

type errNoProvider string

func (e errNoProvider) Error() string {
	return "unknown cloud provider " + string(e) + ": this binary provides only " + provider.Name
}
