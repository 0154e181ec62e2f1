// Package ippool keeps an ipam.Allocator's pools in step with the cluster's
// IPPool objects and writes each pool's status: address counts per family
// and the Ready and Conflicting conditions.
package ippool

import (
	"context"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync"
	"time"

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
	onLayer2 []func(pool string)
}

// Layer2 says where a pool's addresses are announced.
type Layer2 struct {
	// Nodes selects the nodes that may announce; never nil.
	Nodes labels.Selector
	// Interfaces to announce on; empty means the node IP's interface.
	Interfaces []string
}

// AnyNode is the layer-2 setting of a pool that says nothing.
var AnyNode = Layer2{Nodes: labels.Everything()}

// ToLayer2 converts a pool's spec.layer2.
func ToLayer2(p *v1alpha1.IPPool) (Layer2, error) {
	l2 := p.Spec.Layer2
	if l2 == nil {
		return AnyNode, nil
	}
	nodes, err := selector(l2.NodeSelector)
	if err != nil {
		return Layer2{}, fmt.Errorf("IPPool %s: spec.layer2.nodeSelector: %w", p.Name, err)
	}
	out := Layer2{Nodes: nodes}
	for _, i := range l2.Interfaces {
		out.Interfaces = append(out.Interfaces, string(i))
	}
	slices.Sort(out.Interfaces)
	return out, nil
}

// Layer2 returns where pool's addresses are announced. A pool that does not
// exist (any more) or never had a valid setting is announced anywhere.
func (c *Controller) Layer2(pool string) Layer2 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if l2, ok := c.layer2[pool]; ok {
		return l2
	}
	return AnyNode
}

// OnLayer2Change registers fn to be called, outside any lock, after a
// pool's layer-2 setting changed.
func (c *Controller) OnLayer2Change(fn func(pool string)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onLayer2 = append(c.onLayer2, fn)
}

// setLayer2 records pool's setting (deleted when l2 is nil) and tells
// the listeners if it changed.
func (c *Controller) setLayer2(pool string, l2 *Layer2) {
	c.mu.Lock()
	old, had := c.layer2[pool]
	switch {
	case l2 == nil:
		delete(c.layer2, pool)
	default:
		c.layer2[pool] = *l2
	}
	changed := had != (l2 != nil) || (l2 != nil && (old.Nodes.String() != l2.Nodes.String() || !slices.Equal(old.Interfaces, l2.Interfaces)))
	fns := slices.Clone(c.onLayer2)
	c.mu.Unlock()
	if changed {
		for _, fn := range fns {
			fn(pool)
		}
	}
}

// New returns a Controller that feeds alloc. Call Run to start it.
func New(client dynamic.Interface, alloc *ipam.Allocator, resync time.Duration) (*Controller, error) {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, resync)
	c := &Controller{
		client:   client.Resource(v1alpha1.IPPoolResource),
		informer: factory.ForResource(v1alpha1.IPPoolResource).Informer(),
		alloc:    alloc,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ippool"}),
		log:    klog.Background().WithName("ippool"),
		layer2: map[string]Layer2{},
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

// Pools returns the names of all IPPools.
func (c *Controller) Pools() []string {
	return c.informer.GetStore().ListKeys()
}

func (c *Controller) apply(obj any) {
	pool, err := fromUnstructured(obj)
	if err != nil {
		c.log.Error(err, "Ignoring IPPool that cannot be decoded")
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
	if l2, err := ToLayer2(pool); err == nil {
		c.setLayer2(pool.Name, &l2)
	} // else addresses already announced stay where they are.
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
	c.setLayer2(u.GetName(), nil)
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
	status := Status(pool, others, v4, v6)
	if equality.Semantic.DeepEqual(status, pool.Status) {
		return nil
	}
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

func fromUnstructured(obj any) (*v1alpha1.IPPool, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var pool v1alpha1.IPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &pool); err != nil {
		return nil, fmt.Errorf("decoding IPPool %s: %w", u.GetName(), err)
	}
	return &pool, nil
}

// ToPool converts an IPPool into the allocator's pool.
func ToPool(p *v1alpha1.IPPool) (ipam.Pool, error) {
	entries := make([]string, len(p.Spec.Addresses))
	for i, a := range p.Spec.Addresses {
		entries[i] = string(a)
	}
	ranges, err := ipam.ParseRanges(entries)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("IPPool %s: spec.addresses: %w", p.Name, err)
	}
	allows, err := selectors(p.Spec.ServiceAllocation)
	if err != nil {
		return ipam.Pool{}, fmt.Errorf("IPPool %s: spec.serviceAllocation: %w", p.Name, err)
	}
	if _, err := ToLayer2(p); err != nil {
		return ipam.Pool{}, err
	}
	return ipam.Pool{
		Name:          p.Name,
		Ranges:        ranges,
		AutoAssign:    p.Spec.AutoAssign == nil || *p.Spec.AutoAssign,
		AvoidBuggyIPs: p.Spec.AvoidBuggyIPs,
		Priority:      p.Spec.Priority,
		Allows:        allows,
	}, nil
}

func selectors(sa *v1alpha1.ServiceAllocation) (func(ipam.Subject) bool, error) {
	if sa == nil {
		return nil, nil
	}
	ns, err := selector(sa.NamespaceSelector)
	if err != nil {
		return nil, fmt.Errorf("namespaceSelector: %w", err)
	}
	svc, err := selector(sa.ServiceSelector)
	if err != nil {
		return nil, fmt.Errorf("serviceSelector: %w", err)
	}
	return func(s ipam.Subject) bool {
		return ns.Matches(labels.Set(s.NamespaceLabels)) && svc.Matches(labels.Set(s.Labels))
	}, nil
}

// selector converts ls; a missing selector matches everything.
func selector(ls *metav1.LabelSelector) (labels.Selector, error) {
	if ls == nil {
		return labels.Everything(), nil
	}
	return metav1.LabelSelectorAsSelector(ls)
}

// Status computes a pool's status from the allocator's counts and the other
// pools.
func Status(p *v1alpha1.IPPool, others []*v1alpha1.IPPool, v4, v6 ipam.PoolStats) v1alpha1.IPPoolStatus {
	status := v1alpha1.IPPoolStatus{
		ObservedGeneration: p.Generation,
		Conditions:         slices.Clone(p.Status.Conditions),
	}
	set := func(typ string, ok bool, reason, msg string) {
		cs := metav1.ConditionFalse
		if ok {
			cs = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&status.Conditions, metav1.Condition{
			Type: typ, Status: cs, Reason: reason, Message: msg, ObservedGeneration: p.Generation,
		})
	}
	pool, err := ToPool(p)
	if err != nil {
		set(v1alpha1.ConditionReady, false, v1alpha1.ReasonInvalid, err.Error()+"; the pool hands out no addresses, Services keep those they hold")
		meta.RemoveStatusCondition(&status.Conditions, v1alpha1.ConditionConflicting)
		return status
	}
	if v4.Total != nil {
		status.IPv4 = counts(v4)
		status.Used += int64(v4.Used)
	}
	if v6.Total != nil {
		status.IPv6 = counts(v6)
		status.Used += int64(v6.Used)
	}
	set(v1alpha1.ConditionReady, true, v1alpha1.ReasonValid, fmt.Sprintf("%s IPv4 and %s IPv6 addresses to hand out", total(v4), total(v6)))

	var overlaps []string
	for _, o := range others {
		other, err := ToPool(o)
		if err != nil {
			continue
		}
		if common := ipam.Overlap(pool.Ranges, other.Ranges); len(common) > 0 {
			var rs []string
			for _, r := range common {
				rs = append(rs, r.String())
			}
			overlaps = append(overlaps, fmt.Sprintf("%s (%s)", o.Name, strings.Join(rs, ", ")))
		}
	}
	slices.Sort(overlaps)
	if len(overlaps) > 0 {
		set(v1alpha1.ConditionConflicting, true, v1alpha1.ReasonOverlap,
			"overlaps IPPool "+strings.Join(overlaps, "; ")+"; each shared address is still handed out at most once")
	} else {
		set(v1alpha1.ConditionConflicting, false, v1alpha1.ReasonNoOverlap, "no overlap with other IPPools")
	}
	return status
}

func counts(s ipam.PoolStats) *v1alpha1.AddressCounts {
	if s.Total.Sign() == 0 {
		return nil
	}
	return &v1alpha1.AddressCounts{Total: s.Total.String(), Used: int64(s.Used), Free: s.Free.String()}
}

func total(s ipam.PoolStats) string {
	if s.Total == nil {
		return "0"
	}
	return new(big.Int).Set(s.Total).String()
}
