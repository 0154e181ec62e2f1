// Package loadbalancer turns Services of type LoadBalancer into virtual IPs:
// it answers the service controller's EnsureLoadBalancer, UpdateLoadBalancer
// and EnsureLoadBalancerDeleted calls with addresses from the ipam
// allocator.
package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/loadbalancer/dhcplease"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

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

func (b *Balancer) changed(svc *v1.Service) {
	for _, fn := range b.onChange {
		fn(svc)
	}
}

// SetInformers takes the Service, Namespace and Node informers from the
// controller manager's shared factory, so that they are cached once.
func (b *Balancer) SetInformers(factory informers.SharedInformerFactory) {
	svc := factory.Core().V1().Services()
	ns := factory.Core().V1().Namespaces()
	nodes := factory.Core().V1().Nodes()
	b.services, b.namespaces, b.nodes = svc.Lister(), ns.Lister(), nodes.Lister()
	b.synced = []cache.InformerSynced{svc.Informer().HasSynced, ns.Informer().HasSynced, nodes.Informer().HasSynced, b.pools.HasSynced}
	// A Service that lost an address at the restore still lists it in its
	// status until it is synced; the address is kept from others until then.
	_, _ = svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if s, ok := obj.(*v1.Service); ok && b.Ready() {
				b.reserveForeign(s)
			}
		},
		UpdateFunc: func(old, cur any) {
			b.statusChanged(cur)
			b.serviceLabelsChanged(old, cur)
			if s, ok := cur.(*v1.Service); ok && b.Ready() {
				b.reserveForeign(s)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if s, ok := obj.(*v1.Service); ok {
				b.deleted(s)
			}
		},
	})
	_, _ = ns.Informer().AddEventHandler(b.namespaceHandler())
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { b.nodesChanged() },
		UpdateFunc: func(old, cur any) { b.nodeUpdated(old, cur) },
		DeleteFunc: func(any) { b.nodesChanged() },
	})
}

// deleted releases what a deleted Service held. The service controller
// does so through its cleanup finalizer first; this covers a Service whose
// finalizer is gone before its addresses were released (removed by hand,
// or a dual-stack completion written just before the deletion).
func (b *Balancer) deleted(svc *v1.Service) {
	if !b.Ready() {
		return
	}
	b.unreserveForeign(svc)
	if before, ok := b.alloc.Lookup(string(svc.UID)); ok {
		b.alloc.Release(string(svc.UID))
		b.report(svc, before, ipam.Allocation{})
		b.changed(svc)
	}
	b.alloc.Unclaim(string(svc.UID), nil)
	b.recheckService(svc)
}

// statusChanged ends the stale claims of a Service on the addresses its
// status no longer lists (ipam: claims).
func (b *Balancer) statusChanged(obj any) {
	svc, ok := obj.(*v1.Service)
	if !ok || !b.alloc.HasClaims(string(svc.UID)) {
		return
	}
	b.alloc.Unclaim(string(svc.UID), statusAddrs(svc))
}

// statusAddrs returns the addresses in a Service's status.
func statusAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a)
		}
	}
	return out
}

// Run waits for the caches, rebuilds every allocation from the Services'
// status, reserves the Nodes' addresses and the control-plane VIPs (taking
// those from Services that held them) and then lets calls through; it
// then completes PreferDualStack Services when pools change, until ctx
// ends.
func (b *Balancer) Run(ctx context.Context) error {
	defer b.dualStack.ShutDown()
	defer b.policyQueue.ShutDown()
	defer b.leaseQueue.ShutDown()
	defer b.declineQueue.ShutDown()
	if !cache.WaitForNamedCacheSyncWithContext(ctx, b.synced...) {
		return fmt.Errorf("waiting for caches: %w", ctx.Err())
	}
	start := time.Now()
	n, err := b.restore()
	if err != nil {
		return err
	}
	for _, r := range b.restorers {
		if err := r(ctx); err != nil {
			return fmt.Errorf("restoring allocations besides the Services': %w", err)
		}
	}
	b.reserveNodeAddresses()
	b.waitControlPlaneSources(ctx)
	b.reserveControlPlane()
	foreign := b.reserveAllForeign()
	b.adoptLeases()
	b.log.Info("Restored allocations from Service status", "services", n, "otherLoadBalancers", foreign, "duration", time.Since(start))
	close(b.ready)
	// A control-plane VIP source that synced between reserveControlPlane
	// and close(b.ready) saw the balancer not ready and reserved nothing;
	// so did a Service of another load balancer that changed meanwhile.
	b.reserveControlPlane()
	b.reserveAllForeign()
	go b.runPolicy(ctx)
	go b.runControlPlane(ctx)
	go b.runLeaseQueue(ctx)
	go b.runDeclines()
	go func() {
		<-ctx.Done()
		b.dualStack.ShutDown()
		b.leaseQueue.ShutDown()
		b.declineQueue.ShutDown()
	}()
	b.completeDualStack(ctx)
	return nil
}

// Restored is closed once allocations have been restored and the
// Balancer answers calls: other allocators of addresses (Cluster API
// claims) wait for it too.
func (b *Balancer) Restored() <-chan struct{} { return b.ready }

// Ready reports whether allocations have been restored.
func (b *Balancer) Ready() bool {
	select {
	case <-b.ready:
		return true
	default:
		return false
	}
}

// notReadyWait bounds how long a call waits for Run, so that a missing CRD
// or an unreachable API server shows up as an error on the Service instead
// of a hung worker.
const notReadyWait = 30 * time.Second

func (b *Balancer) waitReady(ctx context.Context) error {
	select {
	case <-b.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("IronLB is still restoring allocations: %w", ctx.Err())
	case <-time.After(notReadyWait):
		return api.NewRetryError("IronLB is not ready: its Service, Namespace and IPPool caches have not synced "+
			"(is the IPPool CRD installed? kubectl apply -k deploy/)", b.retry)
	}
}

// restore rebuilds the allocator from the addresses Services hold in their
// status. One rule: a Service keeps every address its status holds unless
// other Services hold it without a sharing key in common (ipam.RestoreAll:
// the ones whose key is the one the address was recorded as shared under
// keep it, else those still sharing a key, else the oldest). Sharers whose
// ports or traffic policies clash keep it too, and get a Warning Event; a
// Service whose annotations no longer parse keeps its addresses, and the
// next sync reports the error.
func (b *Balancer) restore() (int, error) {
	all, err := b.services.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	var svcs []*v1.Service
	for _, s := range all {
		if b.class.Owns(s) && len(s.Status.LoadBalancer.Ingress) > 0 {
			svcs = append(svcs, s)
		}
	}
	slices.SortFunc(svcs, func(x, y *v1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	rs := make([]ipam.Restoration, len(svcs))
	for i, svc := range svcs {
		addrs := statusAddrs(svc)
		shared := map[netip.Addr]string{}
		for a, r := range announced.Records(svc) {
			shared[a] = r.SharedAs
		}
		req := RestoreRequestFor(svc, nil)
		req.Subject = b.subjectOf(svc)
		rs[i] = ipam.Restoration{Req: req, Addrs: addrs, SharedAs: shared}
	}
	for i, err := range b.alloc.RestoreAll(rs) {
		svc := svcs[i]
		if err != nil {
			restoreConflictsTotal.Inc()
			b.log.Error(err, "Cannot restore address of Service", "service", klog.KObj(svc))
			b.logTaken(svc, err)
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonAddressConflict, "IronLB could not keep every address in this Service's status: %v", err)
		}
		for _, c := range b.alloc.SharingConflicts(string(svc.UID)) {
			b.log.Info("Service keeps a shared address although its sharers clash", "service", klog.KObj(svc), "address", c.Addr, "reason", c.Reason, "conflict", c.Detail)
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonSharingConflict,
				"Keeping %s, but its sharers clash: %s; change the ports or externalTrafficPolicy so that they can share it", c.Addr, c.Message)
		}
		if al, ok := b.alloc.Lookup(string(svc.UID)); ok {
			b.pools.Touch(al.Pools...)
			b.policyQueue.Add(policyService + svc.Namespace + "/" + svc.Name)
		}
	}
	return len(svcs), nil
}

// GetLoadBalancer reports whether the Service holds addresses.
func (b *Balancer) GetLoadBalancer(ctx context.Context, clusterName string, service *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if err := b.waitReady(ctx); err != nil {
		return nil, false, err
	}
	al, ok := b.alloc.Lookup(string(service.UID))
	if !ok {
		return nil, len(service.Status.LoadBalancer.Ingress) > 0, nil
	}
	return statusFor(al), true, nil
}

// GetLoadBalancerName returns the name the service controller logs.
func (b *Balancer) GetLoadBalancerName(ctx context.Context, clusterName string, service *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(service)
}

// EnsureLoadBalancer gives the Service its addresses, or keeps those it
// has, and returns them as its status.
func (b *Balancer) EnsureLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	if !b.class.Serves(service) {
		// Another implementation's (a class IronLB does not serve, or
		// class-less while IronLB serves only its class).
		return nil, cloudprovider.ImplementedElsewhere
	}
	if err := b.waitReady(ctx); err != nil {
		return nil, err
	}
	req, err := RequestFor(service, nil)
	if err != nil {
		allocationFailuresTotal.WithLabelValues("invalid").Inc()
		return nil, err
	}
	req.Subject = b.subjectOf(service)
	// A Service that became IronLB's (e.g. moved from another load
	// balancer keeping its address) no longer reserves it for the other.
	b.reserveForeign(service)
	if err := b.lease(ctx, service, &req); err != nil {
		allocationFailuresTotal.WithLabelValues("dhcp").Inc()
		return nil, api.NewRetryError(err.Error(), b.retry)
	}
	before, _ := b.alloc.Lookup(req.Owner)
	al, err := b.alloc.Ensure(req)
	if err != nil {
		b.unusableLease(service, req, err)
		allocationFailuresTotal.WithLabelValues(failureReason(err)).Inc()
		b.logTaken(service, err)
		b.warnControlPlaneRequest(service, err)
		switch {
		case errors.Is(err, ipam.ErrNoPools):
			return nil, api.NewRetryError(ErrNoPools.Error(), b.retry)
		case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrConflict), errors.Is(err, ipam.ErrNoPool):
			// Retry at a fixed, short interval: the Service gets its
			// address soon after one is freed or a pool appears.
			return nil, api.NewRetryError(err.Error(), b.retry)
		}
		return nil, err
	}
	for _, te := range al.Taken {
		b.logTaken(service, te)
	}
	b.report(service, before, al)
	b.changed(service)
	b.recheckService(service)
	return statusFor(al), nil
}

// logTaken logs, for the administrator, who holds the addresses err says
// svc cannot have. The error itself, which becomes an Event in svc's
// namespace, names none of them (ipam.TakenError).
func (b *Balancer) logTaken(svc *v1.Service, err error) {
	for _, te := range ipam.TakenErrors(err) {
		b.log.Info("Service refused an address others hold", "service", klog.KObj(svc), "address", te.Addr,
			"reason", te.Reason, "holders", te.Holders, "sharingKey", te.SharingKey, "detail", te.Detail)
	}
}

// report records Events and refreshes pool status after an Ensure.
func (b *Balancer) report(svc *v1.Service, before, after ipam.Allocation) {
	for i, a := range after.Addresses {
		if !slices.Contains(before.Addresses, a) {
			pool := after.Pools[i]
			b.log.Info("Assigned address", "service", klog.KObj(svc), "address", a, "pool", pool)
			b.recorder.Eventf(svc, v1.EventTypeNormal, ReasonIPAllocated, "Assigned %s from IPPool %s", a, pool)
			allocationsTotal.WithLabelValues(pool).Inc()
			b.pools.Touch(pool)
		}
	}
	for i, a := range before.Addresses {
		if !slices.Contains(after.Addresses, a) {
			b.log.Info("Released address", "service", klog.KObj(svc), "address", a)
			b.recorder.Eventf(svc, v1.EventTypeNormal, ReasonIPReleased, "Released %s", a)
			b.pools.Touch(before.Pools[i])
		}
	}
	for _, w := range after.Warnings {
		b.recorder.Event(svc, v1.EventTypeWarning, ReasonFamilyNotServed, w+"; IronLB adds it as soon as a pool can serve it")
	}
	b.releaseLeases(before, after)
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
	before, ok := b.alloc.Lookup(string(service.UID))
	if !ok {
		return nil
	}
	b.alloc.Release(string(service.UID))
	b.report(service, before, ipam.Allocation{})
	b.changed(service)
	b.recheckService(service)
	return nil
}

func statusFor(al ipam.Allocation) *v1.LoadBalancerStatus {
	vip := v1.LoadBalancerIPModeVIP
	st := &v1.LoadBalancerStatus{}
	for _, a := range al.Addresses {
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: a.String(), IPMode: &vip})
	}
	return st
}
