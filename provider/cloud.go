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
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	controllerhealthz "k8s.io/controller-manager/pkg/healthz"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/instances"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
	"github.com/ironlb/ironlb/pki"
)

// Name is the provider name given to --cloud-provider.
const Name = "ironlb"

// component names IronLB's client and the source of its Events.
const component = "ironlb-ccm"

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
	config    Config
	ctx       context.Context
	instances *instances.Instances
	balancer  *loadbalancer.Balancer
	planner   *loadbalancer.Planner
}

var (
	_ cloudprovider.Interface    = (*Cloud)(nil)
	_ cloudprovider.InformerUser = (*Cloud)(nil)
)

// New returns a Cloud for cfg. It does nothing until Initialize.
func New(cfg Config) *Cloud { return &Cloud{config: cfg} }

// Initialize is called once this process leads (or right away without
// leader election), before any controller starts. It builds the clients and
// event recorder the implementations need; stop closes when leadership or
// the process ends.
func (c *Cloud) Initialize(clientBuilder cloudprovider.ControllerClientBuilder, stop <-chan struct{}) {
	ctx := wait.ContextForChannel(stop)
	client, err := clientBuilder.Client(component)
	if err != nil {
		klog.Fatalf("Building the %s client: %v", component, err)
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
	alloc := ipam.New()
	pools, err := ippool.New(dynamic.NewForConfigOrDie(clientBuilder.ConfigOrDie(component)), alloc, 10*time.Minute)
	if err != nil {
		klog.Fatalf("Starting the IPPool controller: %v", err)
	}
	go pools.Run(ctx)

	// The control channel to the speakers: certificates first (created on
	// the first start, reused after), then one session per node.
	ns := c.config.Speakers.SecretNamespace
	if ns == "" {
		ns = os.Getenv("POD_NAMESPACE")
	}
	if ns == "" {
		ns = "kube-system"
	}
	bundle, err := pki.Bootstrap(ctx, client, ns)
	if err != nil {
		klog.Fatalf("Preparing the speakers' certificates in namespace %s: %v", ns, err)
	}
	go bundle.Run(ctx)
	hostname, _ := os.Hostname()
	var planner *loadbalancer.Planner
	sp := speakers.New(klog.NewContext(ctx, klog.Background()), speakers.Options{
		Port:      c.config.Speakers.Port,
		Heartbeat: c.config.Speakers.HeartbeatInterval.Duration,
		Misses:    c.config.Speakers.HeartbeatMisses,
		TLS:       bundle.ClientTLSConfig(),
		Leader:    hostname,
		OnChange:  func(node string) { planner.SpeakerChanged(node) },
	})
	planner = loadbalancer.NewPlanner(alloc, pools, sp, recorder)
	planner.SetClient(client)
	c.planner = planner
	c.balancer = loadbalancer.New(alloc, pools, recorder, loadbalancer.WithOnChange(planner.ServiceChanged))
	c.ctx = ctx
}

// SetInformers hands the controller manager's shared informers to the load
// balancer, which then restores existing allocations. It runs right after
// Initialize.
func (c *Cloud) SetInformers(factory informers.SharedInformerFactory) {
	c.balancer.SetInformers(factory)
	c.planner.SetInformers(factory, c.balancer.Ready)
	go c.planner.Run(c.ctx)
	go func() {
		if err := c.balancer.Run(c.ctx); err != nil {
			klog.ErrorS(err, "Load balancer did not start")
		}
	}()
}

// LoadBalancer returns the Service load-balancer implementation.
func (c *Cloud) LoadBalancer() (cloudprovider.LoadBalancer, bool) {
	if c.balancer == nil {
		return nil, false
	}
	return c.balancer, true
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

// Health is the "ironlb" controller: its health check passes once the
// Service, Node, EndpointSlice and IPPool caches synced and allocations
// were restored from the Services' status.
type Health struct{ c *Cloud }

// Health returns the controller for the health check.
func (c *Cloud) Health() *Health { return &Health{c: c} }

// Name implements controller.Interface.
func (h *Health) Name() string { return ControllerName }

// HealthChecker implements controller.HealthCheckable.
func (h *Health) HealthChecker() controllerhealthz.UnnamedHealthChecker { return h }

// Check fails until IronLB can answer the service controller.
func (h *Health) Check(*http.Request) error {
	if h.c.balancer == nil {
		return errors.New("IronLB not initialized (not the leader yet?)")
	}
	if !h.c.balancer.Ready() {
		return errors.New("IronLB is waiting for its Service, Namespace and IPPool caches and restoring allocations")
	}
	return nil
}
