// Package provider registers IronLB with the cloud-controller-manager
// framework as the cloud provider "ironlb". It only wires the framework to
// the packages that do the work: instances (node initialization) and
// loadbalancer (Services of type LoadBalancer).
package provider

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	controllerhealthz "k8s.io/controller-manager/pkg/healthz"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/instances"
	"github.com/ironlb/ironlb/loadbalancer"
	"github.com/ironlb/ironlb/loadbalancer/planner"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/loadbalancer/term"
	"github.com/ironlb/ironlb/pki"
)

// Name is the provider name given to --cloud-provider.
const Name = "ironlb"

// component names IronLB's client and the source of its Events.
const component = "ironlb-ccm"

// classComponent names the client of IronLB's loadBalancerClass
// controller.
const classComponent = "ironlb-class-controller"

func init() {
	cloudprovider.RegisterCloudProvider(Name, func(config io.Reader) (cloudprovider.Interface, error) {
		cfg, err := ParseConfig(config)
		if err != nil {
			return nil, err
		}
		return New(cfg), nil
	})
}

// Cloud is IronLB's cloudprovider.Interface.
type Cloud struct {
	config   Config
	election LeaderElection
	// leading is components once this CCM leads, for StepDown (from the
	// signal handler's goroutine).
	leading atomic.Pointer[loadbalancer.Components]
	// serviceWorkers is --concurrent-service-syncs, for the Services of
	// IronLB's class too.
	serviceWorkers int
	live           *pki.Liveness // watches started before leading (WatchSpeakers)
	instances      *instances.Instances
	components     *loadbalancer.Components
}

// LeaderElection is the CCM's leader-election setting, from which the
// load balancer takes its term (see package term).
type LeaderElection struct {
	// Enabled is --leader-elect.
	Enabled bool
	// Namespace and Name locate the Lease.
	Namespace, Name string
	// LeaseDuration and RetryPeriod are the election's timings.
	LeaseDuration, RetryPeriod time.Duration
}

var (
	_ cloudprovider.Interface    = (*Cloud)(nil)
	_ cloudprovider.InformerUser = (*Cloud)(nil)
)

// New returns a Cloud for cfg. It does nothing until Initialize.
func New(cfg Config) *Cloud { return &Cloud{config: cfg} }

// SetLeaderElection tells the Cloud how this CCM elects its leader. Call it
// before the controller manager runs.
func (c *Cloud) SetLeaderElection(le LeaderElection) { c.election = le }

// SetServiceWorkers sets how many Services of IronLB's loadBalancerClass
// are synced at once (the service controller's --concurrent-service-syncs).
// Call it before the controller manager runs.
func (c *Cloud) SetServiceWorkers(n int) { c.serviceWorkers = n }

// ServesClassless reports whether IronLB serves Services without a
// loadBalancerClass, which the cloud-provider service controller hands it:
// false when the cloud config says loadBalancerClass.only, and the
// service controller must not run.
func (c *Cloud) ServesClassless() bool { return c.config.LoadBalancerClass.Policy().Classless() }

// WatchSpeakers starts watching the speaker pods and the Nodes with
// client, for the life of the process, before this replica leads (call it
// before the controller manager runs): a new leader then checks its
// speakers' certificates at once, and a leader change keeps every stream
// and every VIP where it is.
func (c *Cloud) WatchSpeakers(client kubernetes.Interface) {
	if client == nil {
		return
	}
	c.live = pki.StartLiveness(context.Background(), client, c.secretNamespace(), pki.DefaultSpeakerServiceAccount)
}

// Initialize is called once this process leads (or right away without
// leader election), before any controller starts. It builds the clients,
// the event recorder and the components; stop closes when leadership or
// the process ends.
func (c *Cloud) Initialize(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	ctx := wait.ContextForChannel(stop)
	client, err := clientBuilder.Client(component)
	if err != nil {
		klog.Fatalf("Building the %s client: %v", component, err)
	}
	// The loadBalancerClass controller gets a client of its own, as the
	// service controller does.
	classClient, err := clientBuilder.Client(classComponent)
	if err != nil {
		klog.Fatalf("Building the %s client: %v", classComponent, err)
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: component})
	go func() {
		<-stop
		broadcaster.Shutdown()
	}()

	c.instances = instances.New(recorder, instances.Defaults{
		InstanceType: c.config.Instances.DefaultInstanceType,
		Zone:         c.config.Instances.DefaultZone,
		Region:       c.config.Instances.DefaultRegion,
	})
	hostname, _ := os.Hostname()
	components, err := loadbalancer.NewComponents(ctx, loadbalancer.Config{
		Client:    client,
		Dynamic:   dynamic.NewForConfigOrDie(clientBuilder.ConfigOrDie(component)),
		Recorder:  recorder,
		Namespace: c.secretNamespace(),
		Lease:     c.lease(),
		Host:      hostname,
		Liveness:  c.live,
		Speakers: speakers.Options{
			Port:          c.config.Speakers.Port,
			Heartbeat:     c.config.Speakers.HeartbeatInterval.Duration,
			Misses:        c.config.Speakers.HeartbeatMisses,
			HeartbeatRate: c.config.Speakers.HeartbeatRate,
			RestartGrace:  c.config.Speakers.RestartGrace.Duration,
		},
		ControlPlaneVIPs: c.config.ControlPlane.Addresses(),
		Class:            c.config.LoadBalancerClass.Policy(),
		ClassWorkers:     c.serviceWorkers,
		ClassClient:      classClient,
		Planner:          planner.Options{SettleWindow: c.config.Speakers.SettleWindow.Duration, LocalRebalanceDelay: c.config.Speakers.LocalRebalanceDelay.Duration},
	})
	if err != nil {
		klog.Fatalf("Starting IronLB: %v", err)
	}
	c.components = components
	c.leading.Store(components)
}

// StepDown ends this CCM's term and releases its leader-election Lease
// when it leads (see term.Term.StepDown): called on SIGTERM, before the
// process stops, so that a standby takes over at once.
func (c *Cloud) StepDown(ctx context.Context) error {
	if l := c.leading.Load(); l != nil {
		return l.StepDown(ctx)
	}
	return nil
}

// secretNamespace is where the CA and the speakers' TLS Secret live.
func (c *Cloud) secretNamespace() string {
	if ns := c.config.Speakers.SecretNamespace; ns != "" {
		return ns
	}
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	return "ironlb-system"
}

func (c *Cloud) lease() term.Lease {
	if !c.election.Enabled {
		return term.Lease{}
	}
	return term.Lease{
		Namespace: c.election.Namespace, Name: c.election.Name,
		Duration: c.election.LeaseDuration, RetryPeriod: c.election.RetryPeriod,
	}
}

// SetInformers hands the controller manager's shared informers to the load
// balancer and starts it; it restores existing allocations first. It runs
// right after Initialize.
func (c *Cloud) SetInformers(factory informers.SharedInformerFactory) {
	c.components.SetInformers(factory)
	c.components.Run()
}

// LoadBalancer returns the Service load-balancer implementation.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) {
	if c.components == nil {
		return nil, false
	}
	return c.components.Balancer, true
}

// Instances is not implemented: IronLB implements InstancesV2.
func (c *Cloud) Instances() (cloudprovider.Instances, bool) { return nil, false }

// InstancesV2 returns the node initializer.
func (c *Cloud) InstancesV2() (cloudprovider.InstancesV2, bool) {
	if c.instances == nil {
		return nil, false
	}
	return c.instances, true
}

// Zones is not implemented: zones come from InstancesV2.
func (c *Cloud) Zones() (cloudprovider.Zones, bool) { return nil, false }

// Clusters is not implemented.
func (c *Cloud) Clusters() (cloudprovider.Clusters, bool) { return nil, false }

// Routes is not implemented: pod networking is the CNI's job.
func (c *Cloud) Routes() (cloudprovider.Routes, bool) { return nil, false }

// ProviderName returns "ironlb".
func (c *Cloud) ProviderName() string { return Name }

// HasClusterID returns true: IronLB tags nothing outside the cluster, so it
// needs no cluster ID.
func (c *Cloud) HasClusterID() bool { return true }

// ControllerName is the name of IronLB's own entry in --controllers: it
// runs nothing of its own but puts IronLB's readiness into /healthz.
const ControllerName = "ironlb"

// Health is the "ironlb" controller: it puts IronLB's readiness into the
// CCM's /healthz. Its Check does not wait for anything: each call answers
// at once from the state at that moment (see Check).
type Health struct{ c *Cloud }

// Health returns the controller for the health check.
func (c *Cloud) Health() *Health { return &Health{c: c} }

// Name implements controller.Interface.
func (h *Health) Name() string { return ControllerName }

// HealthChecker implements controller.HealthCheckable.
func (h *Health) HealthChecker() controllerhealthz.UnnamedHealthChecker { return h }

// Check answers at once, without waiting: it fails while this replica has
// built no components (it does not lead yet) and while the Balancer is not
// Ready, that is until Balancer.Run has seen the Service, Namespace, Node
// and IPPool caches synced and restored every allocation; then it passes.
func (h *Health) Check(*http.Request) error {
	if h.c.components == nil {
		return errors.New("IronLB not initialized (not the leader yet?)")
	}
	if !h.c.components.Balancer.Ready() {
		return errors.New("IronLB is waiting for its Service, Namespace and IPPool caches and restoring allocations")
	}
	return nil
}
