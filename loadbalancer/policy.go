package loadbalancer

import (
	"context"
	"fmt"
	"maps"
	"strings"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
)

// Event reasons for addresses kept outside their pool's serviceAllocation.
const (
	// ReasonAddressNoLongerAllowed: a Service keeps an address its pool's
	// serviceAllocation no longer allows it (the pool, the namespace's
	// labels or the Service's labels changed).
	ReasonAddressNoLongerAllowed = "AddressNoLongerAllowed"
	// ReasonAddressAllowedAgain: that ended.
	ReasonAddressAllowedAgain = "AddressAllowedAgain"
)

// Keys of the policy queue: what to recheck.
const (
	policyPool      = "pool:"      // + pool: the Services in it, before and after the edit
	policyNamespace = "namespace:" // + namespace: its Services
	policyService   = "service:"   // + namespace/name
)

// Addresses a Service keeps are never taken away when a pool's
// serviceAllocation stops allowing it (invariant 3); the Service gets a
// Warning Event and is counted in ironlb_services_outside_pool_policy
// instead, until it is allowed again or gives the address up. The work is
// proportional to the change: a pool edit rechecks the Services of that
// pool, a namespace's labels its Services, a Service's labels that
// Service.

func newPolicyQueue() workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-pool-policy"})
}

// recheck asks for a check of what key names, once allocations are
// restored (the restore checks every Service itself).
func (b *Balancer) recheck(key string) {
	if b.Ready() {
		b.policyQueue.Add(key)
	}
}

func (b *Balancer) recheckService(svc *v1.Service) {
	b.recheck(policyService + svc.Namespace + "/" + svc.Name)
}

// namespaceHandler rechecks a namespace's Services when its labels change
// or it appears (a Service checked while its namespace was missing from
// the cache was refused for want of it).
func (b *Balancer) namespaceHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if ns, ok := obj.(*v1.Namespace); ok {
				b.recheck(policyNamespace + ns.Name)
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Namespace)
			n, ok2 := cur.(*v1.Namespace)
			if ok1 && ok2 && !maps.Equal(o.Labels, n.Labels) {
				b.recheck(policyNamespace + n.Name)
			}
		},
	}
}

// serviceLabelsChanged rechecks a Service whose labels changed: the
// service controller does not sync it for that.
func (b *Balancer) serviceLabelsChanged(old, cur any) {
	o, ok1 := old.(*v1.Service)
	n, ok2 := cur.(*v1.Service)
	if ok1 && ok2 && !maps.Equal(o.Labels, n.Labels) {
		b.recheckService(n)
	}
}

// runPolicy works the policy queue until ctx ends.
func (b *Balancer) runPolicy(ctx context.Context) {
	defer utilruntime.HandleCrash()
	go func() {
		<-ctx.Done()
		b.policyQueue.ShutDown()
	}()
	for {
		key, quit := b.policyQueue.Get()
		if quit {
			return
		}
		if err := b.processPolicy(key); err != nil {
			b.log.Error(err, "Checking addresses against their pools' serviceAllocation", "key", key)
			b.policyQueue.AddRateLimited(key)
		} else {
			b.policyQueue.Forget(key)
		}
		b.policyQueue.Done(key)
	}
}

func (b *Balancer) processPolicy(key string) error {
	switch {
	case strings.HasPrefix(key, policyPool):
		pool := strings.TrimPrefix(key, policyPool)
		for _, o := range b.alloc.OwnersIn(pool) {
			if _, ok := b.serviceOf(o); ok {
				b.policyQueue.Add(policyService + o.Name)
			}
		}
		// The Services checked before, deleted ones included.
		for _, s := range b.policy.servicesIn(pool) {
			b.policyQueue.Add(policyService + s)
		}
		return nil
	case strings.HasPrefix(key, policyNamespace):
		ns := strings.TrimPrefix(key, policyNamespace)
		svcs, err := b.services.Services(ns).List(labels.Everything())
		if err != nil {
			return fmt.Errorf("listing the Services of namespace %s: %w", ns, err)
		}
		for _, s := range svcs {
			if _, ok := b.alloc.Lookup(string(s.UID)); ok {
				b.policyQueue.Add(policyService + ns + "/" + s.Name)
			}
		}
		return nil
	case strings.HasPrefix(key, policyService):
		return b.checkService(strings.TrimPrefix(key, policyService))
	}
	return fmt.Errorf("unknown policy queue key %q", key)
}

// checkService compares the addresses a Service holds with its pools'
// serviceAllocation and reports what changed.
func (b *Balancer) checkService(key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := b.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		b.policy.forget(key)
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading Service %s: %w", key, err)
	}
	al, ok := b.alloc.Lookup(string(svc.UID))
	if !ok {
		for _, r := range b.policy.forget(key) {
			b.log.Info("Service gave up an address its pool no longer allowed", "service", key, "address", r.Addr, "ippool", r.Pool)
		}
		return nil
	}
	refusals := b.alloc.Refusals(string(svc.UID), b.subjectOf(svc))
	ch := b.policy.update(key, string(svc.UID), al.Pools, refusals)
	for _, r := range ch.started {
		b.log.Info("Service keeps an address its pool no longer allows", "service", klog.KObj(svc), "address", r.Addr, "ippool", r.Pool, "reason", r.Reason)
		b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonAddressNoLongerAllowed,
			"Keeping %s, but IPPool %s no longer allows this Service: %v; it keeps the address until its request changes or it is deleted",
			r.Addr, r.Pool, r.Reason)
	}
	for _, r := range ch.ended {
		b.recorder.Eventf(svc, v1.EventTypeNormal, ReasonAddressAllowedAgain,
			"%s is no longer outside the serviceAllocation of IPPool %s", r.Addr, r.Pool)
	}
	return nil
}

// subjectOf is who svc is to pools' serviceAllocation.
func (b *Balancer) subjectOf(svc *v1.Service) ipam.Subject {
	nsLabels, nsErr := b.namespaceLabels(svc.Namespace)
	return ipam.Subject{Namespace: svc.Namespace, NamespaceLabels: nsLabels, NamespaceErr: nsErr, Labels: svc.Labels}
}

// namespaceLabels returns the labels of a namespace, or why they are
// unknown: pools that select by namespace then refuse its Services.
func (b *Balancer) namespaceLabels(name string) (map[string]string, error) {
	ns, err := b.namespaces.Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("namespace %s is not in the CCM's cache (yet)", name)
	case err != nil:
		return nil, fmt.Errorf("looking up namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}
