// Package loadbalancer turns Services of type LoadBalancer into virtual IPs:
// it answers the service controller's EnsureLoadBalancer, UpdateLoadBalancer
// and EnsureLoadBalancerDeleted calls with addresses from the ipam
// allocator.
package loadbalancer

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/dhcplease"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

// The Balancer's files, one idea each: this one holds the type, its
// options and the cloud-provider calls, which only wait for the restore
// and delegate; allocate.go what those calls do to the allocator; run.go
// the start-up (Run) and readiness; restore.go the rebuilding of
// allocations from the Services' status; informers.go the Service,
// Namespace and Node handlers; and the queues with their loops in the file
// of their idea: dualstack.go (completing PreferDualStack Services),
// policy.go (addresses kept outside their pool's serviceAllocation),
// controlplane.go (Services that lost the control-plane VIP), dhcp.go
// (DHCP leases and declines).

// Event reasons on Services.
const (
	ReasonIPAllocated     = "IPAllocated"
	ReasonIPReleased      = "IPReleased"
	ReasonFamilyNotServed = "IPFamilyNotAssigned"
	ReasonAddressConflict = "AddressConflict"
	ReasonSharingConflict = "SharingConflict"
)

// ErrNoPools is returned while no address pool exists to allocate from.
var ErrNoPools = errors.New("no IP pools configured: IronLB has no addresses to assign; create an IPPool (ironlb.dev/v1alpha1) listing the addresses LoadBalancer Services may use")

// PoolWatcher is told when a pool's usage changed and when the Nodes'
// addresses did; it tells when a pool changed.
type PoolWatcher interface {
	Touch(pools ...string)
	HasSynced() bool
	SetNodeAddresses(map[netip.Addr]string)
	// SetControlPlaneVIPs tells the control-plane VIPs (address → where
	// IronLB learnt it), which a pool must not cover.
	SetControlPlaneVIPs(map[netip.Addr]string)
	OnChange(fn func(pool string))
	// Pools returns the names of all pools.
	Pools() []string
}

// Balancer implements cloudprovider.LoadBalancer.
type Balancer struct {
	alloc      *ipam.Allocator
	pools      PoolWatcher
	recorder   record.EventRecorder
	client     kubernetes.Interface
	services   corelisters.ServiceLister
	namespaces corelisters.NamespaceLister
	nodes      corelisters.NodeLister
	synced     []cache.InformerSynced
	ready      chan struct{}
	retry      time.Duration
	log        klog.Logger
	onChange   []func(*v1.Service)
	dualStack  workqueue.TypedDelayingInterface[string]
	// policy and policyQueue follow addresses kept outside their pool's
	// serviceAllocation (policy.go).
	policy      *policyState
	policyQueue workqueue.TypedRateLimitingInterface[string]
	// cpQueue holds the Services that lost the control-plane VIP, to be
	// given another address (controlplane.go); cpSynced are the sources
	// of control-plane VIPs Run waits for.
	cpQueue  workqueue.TypedRateLimitingInterface[string]
	cpSynced []cache.InformerSynced
	// class says which Services are IronLB's; the others' addresses are
	// kept from IronLB's (foreign.go).
	class lbclass.Policy
	// leases keeps the leases of DHCP-backed pools' addresses, and
	// leaseQueue the Services that lost theirs (dhcp.go).
	leases       *dhcplease.Manager
	leaseQueue   workqueue.TypedDelayingInterface[string]
	declineQueue workqueue.TypedInterface[netip.Addr]
	// restorers rebuild other owners' allocations (Cluster API claims)
	// after the Services' and before any call is answered.
	restorers []Restorer

	mu sync.Mutex
	// cpVIPs are the control-plane VIPs by source (controlplane.go).
	cpVIPs   map[string][]netip.Addr
	reserved map[string]bool // Nodes whose addresses are reserved
	// unreserved is, per Node, the addresses inside pools that it lists
	// but IronLB does not reserve (see nodeaddrs.go), as last reported in
	// an Event.
	unreserved map[string]string
	// duplicated is, per Node, the other Nodes that list its reserved
	// addresses (duplicates in nodeaddrs.go), as last reported.
	duplicated map[string]string
	// foreign is, per Service UID, the addresses it reserves for another
	// load balancer (foreign.go).
	foreign map[string][]netip.Addr
}

var _ cloudprovider.LoadBalancer = (*Balancer)(nil)

// Option configures a Balancer.
type Option func(*Balancer)

// WithRetry sets how soon a Service that could not get an address (pool
// exhausted, address taken, no pool yet) is tried again. The service
// controller would otherwise back off exponentially, up to minutes.
func WithRetry(d time.Duration) Option { return func(b *Balancer) { b.retry = d } }

// WithClient lets the Balancer write a Service's status itself, when a new
// pool completes a PreferDualStack Service that got one family only.
func WithClient(c kubernetes.Interface) Option { return func(b *Balancer) { b.client = c } }

// WithClass sets which Services are IronLB's by their loadBalancerClass
// (default: class-less ones and ironlb.dev/ironlb).
func WithClass(p lbclass.Policy) Option { return func(b *Balancer) { b.class = p } }

// Restorer rebuilds, from the API server, the allocations of owners that
// are not Services (Cluster API IPAddressClaims). It runs once in Run,
// after the Services' allocations are restored (a Service keeps its
// address over any other owner) and before the Balancer answers any call.
// It returns only when the allocations are rebuilt, or with an error
// that stops Run: the Balancer then answers nothing rather than hand out
// an address another owner holds.
type Restorer func(ctx context.Context) error

// WithRestorer adds r to the restorers Run calls before it lets calls
// through.
func WithRestorer(r Restorer) Option {
	return func(b *Balancer) { b.restorers = append(b.restorers, r) }
}

// New returns a Balancer handing out addresses from alloc. It answers no
// call before Run has restored existing allocations.
func New(alloc *ipam.Allocator, pools PoolWatcher, recorder record.EventRecorder, opts ...Option) *Balancer {
	b := &Balancer{
		alloc:        alloc,
		pools:        pools,
		recorder:     recorder,
		ready:        make(chan struct{}),
		retry:        3 * time.Second,
		log:          klog.Background().WithName("loadbalancer"),
		dualStack:    workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "ironlb-dualstack"}),
		policy:       newPolicyState(),
		policyQueue:  newPolicyQueue(),
		cpQueue:      newControlPlaneQueue(),
		leaseQueue:   newLeaseQueue(),
		declineQueue: newDeclineQueue(),
		cpVIPs:       map[string][]netip.Addr{},
		foreign:      map[string][]netip.Addr{},
	}
	for _, o := range opts {
		o(b)
	}
	if b.leases != nil {
		b.leases.OnLost(b.leaseLost)
		b.leases.InUse(func(l dhcplease.Lease) bool { return b.alloc.Holds(l.Addr) })
	}
	pools.OnChange(func(pool string) {
		b.dualStack.Add(dualStackKey)
		b.recheck(policyPool + pool)
	})
	balancerMetrics.Set(b.collectMetrics)
	return b
}

// OnChange registers fn to be called after a Service's allocation was
// ensured or released, so announcements follow without waiting for the
// status write to come back through the informer.
func (b *Balancer) OnChange(fn func(*v1.Service)) { b.onChange = append(b.onChange, fn) }

// GetLoadBalancer reports whether the Service holds addresses.
func (b *Balancer) GetLoadBalancer(ctx context.Context, clusterName string, service *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if err := b.waitReady(ctx); err != nil {
		return nil, false, err
	}
	st, ok := b.lookup(service)
	return st, ok, nil
}

// GetLoadBalancerName returns the name the service controller logs.
func (b *Balancer) GetLoadBalancerName(ctx context.Context, clusterName string, service *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(service)
}

// EnsureLoadBalancer gives the Service its addresses, or keeps those it
// has, and returns them as its status.
func (b *Balancer) EnsureLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	return b.ensure(ctx, service)
}

// UpdateLoadBalancer is called when the cluster's nodes change. Addresses do
// not depend on nodes.
func (b *Balancer) UpdateLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) error {
	return b.waitReady(ctx)
}

// EnsureLoadBalancerDeleted releases the Service's addresses: it was deleted
// or is no longer of type LoadBalancer.
func (b *Balancer) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, service *v1.Service) error {
	if err := b.waitReady(ctx); err != nil {
		return err
	}
	b.release(service)
	return nil
}
