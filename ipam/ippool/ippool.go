// Package ippool keeps an ipam.Allocator's pools in step with the cluster's
// IPPool objects and writes each pool's status: address counts per family
// and the Ready and Conflicting conditions.
package ippool

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// statusDelay batches status writes: a burst of allocations in one pool
// becomes one write.
const statusDelay = 500 * time.Millisecond

// Controller watches IPPools.
type Controller struct {
	client   dynamic.NamespaceableResourceInterface
	informer cache.SharedIndexInformer
	handler  cache.ResourceEventHandlerRegistration
	alloc    *ipam.Allocator
	queue    workqueue.TypedRateLimitingInterface[string]
	log      klog.Logger

	mu       sync.Mutex
	layer2   map[string]Layer2
	bgp      map[string]BGP
	dhcp     map[string]v1alpha1.DHCP
	applied  map[string]applied // what each pool's spec last was, to skip status-only updates
	nodeIPs  map[netip.Addr]string
	cpVIPs   map[netip.Addr]string
	onChange []func(pool string)
	recorder record.EventRecorder
}

// ReasonControlPlaneVIPReserved is the Warning Event on an IPPool that
// covers the control-plane VIP.
const ReasonControlPlaneVIPReserved = "ControlPlaneVIPReserved"

// Option configures a Controller.
type Option func(*Controller)

// WithRecorder has the Controller record Events on IPPools.
func WithRecorder(r record.EventRecorder) Option { return func(c *Controller) { c.recorder = r } }

// applied identifies the spec of a pool the allocator has.
type applied struct {
	uid        string
	generation int64
}

// Layer2 says where a pool's addresses are announced.
type Layer2 struct {
	// Off: the pool is advertised over BGP only.
	Off bool
	// Nodes selects the nodes that may announce; never nil.
	Nodes labels.Selector
	// Interfaces to announce on; empty means the node IP's interface.
	Interfaces []string
}

// BGP says how a pool's addresses are advertised to BGP peers.
type BGP struct {
	// Nodes selects the nodes that advertise; never nil.
	Nodes labels.Selector
	// Spec is the pool's spec.bgp (its advertisements).
	Spec *v1alpha1.BGP
}

// BGP returns how pool's addresses are advertised over BGP; false when
// the pool has no spec.bgp (or does not exist).
func (c *Controller) BGP(pool string) (BGP, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.bgp[pool]
	return b, ok
}

// DHCP returns where the addresses of pool are leased from; false when
// the pool does not lease them from DHCP (or does not exist).
func (c *Controller) DHCP(pool string) (v1alpha1.DHCP, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.dhcp[pool]
	return d, ok
}

// AnyNode is the layer-2 setting of a pool that says nothing.
var AnyNode = Layer2{Nodes: labels.Everything()}

// Layer2 returns where pool's addresses are announced; false when the pool
// does not exist or never had a valid setting.
func (c *Controller) Layer2(pool string) (Layer2, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l2, ok := c.layer2[pool]
	return l2, ok
}

// OnChange registers fn to be called, outside any lock, after a pool's
// spec changed or the pool was deleted.
func (c *Controller) OnChange(fn func(pool string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
}

func (c *Controller) changed(pool string) {
	c.mu.Lock()
	fns := slices.Clone(c.onChange)
	c.mu.Unlock()
	for _, fn := range fns {
		fn(pool)
	}
}

// SetNodeAddresses tells the controller the Nodes' InternalIPs (address →
// node name): a pool containing one is marked Conflicting. The caller also
// reserves them in the allocator, so they are never handed out.
func (c *Controller) SetNodeAddresses(ips map[netip.Addr]string) {
	c.mu.Lock()
	same := maps.Equal(c.nodeIPs, ips)
	c.nodeIPs = maps.Clone(ips)
	c.mu.Unlock()
	if !same {
		c.touchAll()
	}
}

func (c *Controller) nodeAddresses() map[netip.Addr]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodeIPs
}

// SetControlPlaneVIPs tells the controller the control-plane VIPs
// (address → where IronLB learnt it): a pool covering one is marked
// Conflicting and gets a Warning Event. The caller also reserves them in
// the allocator, so they are never handed out.
func (c *Controller) SetControlPlaneVIPs(vips map[netip.Addr]string) {
	c.mu.Lock()
	same := maps.Equal(c.cpVIPs, vips)
	c.cpVIPs = maps.Clone(vips)
	c.mu.Unlock()
	if !same {
		c.touchAll()
	}
}

func (c *Controller) controlPlaneVIPs() map[netip.Addr]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cpVIPs
}

// New returns a Controller that feeds alloc. Call Run to start it.
func New(client dynamic.Interface, alloc *ipam.Allocator, resync time.Duration, opts ...Option) (*Controller, error) {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, resync)
	c := &Controller{
		client:   client.Resource(v1alpha1.IPPoolResource),
		informer: factory.ForResource(v1alpha1.IPPoolResource).Informer(),
		alloc:    alloc,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ippool"}),
		log:     klog.Background().WithName("ippool"),
		layer2:  map[string]Layer2{},
		dhcp:    map[string]v1alpha1.DHCP{},
		bgp:     map[string]BGP{},
		applied: map[string]applied{},
	}
	for _, o := range opts {
		o(c)
	}
	var err error
	c.handler, err = c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.apply(obj) },
		UpdateFunc: func(_, obj any) { c.apply(obj) },
		DeleteFunc: c.remove,
	})
	if err != nil {
		return nil, fmt.Errorf("watching IPPools: %w", err)
	}
	poolMetrics.Set(c.collectMetrics)
	return c, nil
}

// HasSynced reports whether every IPPool that existed at start has reached
// the allocator.
func (c *Controller) HasSynced() bool { return c.handler.HasSynced() }

// Run watches pools and writes their status until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	go c.informer.RunWithContext(ctx)
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.HasSynced) {
		return
	}
	go wait.UntilWithContext(ctx, c.worker, time.Second)
	<-ctx.Done()
}

// Touch asks for the status of pools to be refreshed soon, after their
// address usage changed.
func (c *Controller) Touch(pools ...string) {
	for _, p := range pools {
		if p != "" {
			c.queue.AddAfter(p, statusDelay)
		}
	}
}

// Pool returns the IPPool named name as last seen; false when it does not
// exist or cannot be decoded.
func (c *Controller) Pool(name string) (*v1alpha1.IPPool, bool) {
	obj, exists, err := c.informer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return nil, false
	}
	p, err := fromUnstructured(obj)
	if err != nil {
		return nil, false
	}
	return p, true
}

// Pools returns the names of all IPPools.
func (c *Controller) Pools() []string {
	return c.informer.GetStore().ListKeys()
}

// apply brings a pool's spec to the allocator. Updates that leave the spec
// as it was (the controller's own status writes, resyncs) change nothing.
func (c *Controller) apply(obj any) {
	pool, err := fromUnstructured(obj)
	if err != nil {
		c.log.Error(err, "Ignoring IPPool that cannot be decoded")
		return
	}
	id := applied{uid: string(pool.UID), generation: pool.Generation}
	c.mu.Lock()
	same := c.applied[pool.Name] == id
	c.applied[pool.Name] = id
	c.mu.Unlock()
	if same {
		return
	}
	p, err := ToPool(pool)
	if err != nil {
		// Keep what holds addresses; the status says what is wrong.
		c.log.Error(err, "IPPool is invalid; it hands out no addresses", "ippool", pool.Name)
		c.alloc.DeletePool(pool.Name)
	} else {
		c.alloc.SetPool(p)
	}
	l2, l2err := ToLayer2(pool)
	b, hasBGP, bgpErr := ToBGP(pool)
	if l2err == nil && bgpErr == nil {
		c.mu.Lock()
		c.layer2[pool.Name] = l2
		if pool.Spec.DHCP != nil {
			c.dhcp[pool.Name] = *pool.Spec.DHCP
		} else {
			delete(c.dhcp, pool.Name)
		}
		if hasBGP {
			c.bgp[pool.Name] = b
		} else {
			delete(c.bgp, pool.Name)
		}
		c.mu.Unlock()
	} // else addresses already announced stay where they are.
	c.changed(pool.Name)
	c.touchAll()
}

func (c *Controller) remove(obj any) {
	if tomb, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	c.log.Info("IPPool deleted; Services keep the addresses they hold", "ippool", u.GetName())
	c.alloc.DeletePool(u.GetName())
	c.mu.Lock()
	delete(c.layer2, u.GetName())
	delete(c.bgp, u.GetName())
	delete(c.dhcp, u.GetName())
	delete(c.applied, u.GetName())
	c.mu.Unlock()
	c.changed(u.GetName())
	c.touchAll()
}

// touchAll refreshes every pool: one pool's change can start or end an
// overlap with any other.
func (c *Controller) touchAll() { c.Touch(c.Pools()...) }

func (c *Controller) worker(ctx context.Context) {
	for {
		name, quit := c.queue.Get()
		if quit {
			return
		}
		err := c.writeStatus(ctx, name)
		if err != nil {
			c.log.Error(err, "Updating IPPool status", "ippool", name)
			c.queue.AddRateLimited(name)
		} else {
			c.queue.Forget(name)
		}
		c.queue.Done(name)
	}
}

func (c *Controller) writeStatus(ctx context.Context, name string) error {
	obj, exists, err := c.informer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	pool, err := fromUnstructured(obj)
	if err != nil {
		return err
	}
	var others []*v1alpha1.IPPool
	for _, o := range c.informer.GetStore().List() {
		if other, err := fromUnstructured(o); err == nil && other.Name != name {
			others = append(others, other)
		}
	}
	v4, v6, _ := c.alloc.Stats(name)
	cpVIPs := c.controlPlaneVIPs()
	status := Status(pool, others, c.nodeAddresses(), cpVIPs, v4, v6)
	if equality.Semantic.DeepEqual(status, pool.Status) {
		return nil
	}
	c.warnControlPlane(pool, cpVIPs)
	pool.Status = status
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(pool)
	if err != nil {
		return err
	}
	_, err = c.client.UpdateStatus(ctx, &unstructured.Unstructured{Object: u}, metav1.UpdateOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if apierrors.IsConflict(err) {
		c.queue.AddAfter(name, statusDelay) // the informer brings the newer object
		return nil
	}
	return err
}

// warnControlPlane records a Warning Event on pool when it covers a
// control-plane VIP its status (as written before) does not name yet:
// once per change, also across leader changes.
func (c *Controller) warnControlPlane(pool *v1alpha1.IPPool, cpVIPs map[netip.Addr]string) {
	p, err := ToPool(pool)
	if err != nil || c.recorder == nil {
		return
	}
	msg := ControlPlaneMessage(p, cpVIPs)
	if msg == "" {
		return
	}
	if old := meta.FindStatusCondition(pool.Status.Conditions, v1alpha1.ConditionConflicting); old != nil && strings.Contains(old.Message, msg) {
		return
	}
	c.log.Info("IPPool covers the control-plane VIP; it is never handed out", "ippool", pool.Name, "detail", msg)
	c.recorder.Event(pool, v1.EventTypeWarning, ReasonControlPlaneVIPReserved, "This pool "+msg)
}
