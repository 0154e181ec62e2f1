package capiipam

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// Pools is what the controller needs of the IPPool controller.
type Pools interface {
	// Pool returns an IPPool as last seen.
	Pool(name string) (*v1alpha1.IPPool, bool)
	// OnChange registers fn, called after a pool changed.
	OnChange(fn func(pool string))
	// Touch refreshes pools' status after their usage changed.
	Touch(pools ...string)
	// Pools returns every pool's name.
	Pools() []string
}

// Options tune a Controller.
type Options struct {
	// RetryInterval is how soon a claim that could not be answered is
	// tried again (pool changes retry it at once). Default 30 s.
	RetryInterval time.Duration
	// DiscoveryInterval is how often the API server is asked whether
	// Cluster API's IPAM CRDs were installed, while they are not.
	// Default 1 min.
	DiscoveryInterval time.Duration
	// Workers answer claims in parallel. Default 2.
	Workers int
}

// Controller answers IPAddressClaims that name IronLB IPPools.
type Controller struct {
	dyn        dynamic.Interface
	disc       discovery.DiscoveryInterface
	alloc      *ipam.Allocator
	pools      Pools
	recorder   record.EventRecorder
	namespaces corelisters.NamespaceLister
	nsSynced   cache.InformerSynced
	opts       Options
	queue      workqueue.TypedRateLimitingInterface[string]
	log        klog.Logger

	// Set by Run once the CRDs are served.
	claims    cache.SharedIndexInformer
	addresses cache.SharedIndexInformer
	clusters  cache.SharedIndexInformer // nil: no Cluster CRD

	mu sync.Mutex
	// state is, per claim key, the last Ready reason (or pause) seen, so
	// that an Event is recorded once per change.
	state map[string]string
	// gateways are the pools' gateways reserved in the allocator.
	gateways map[string]bool
}

// New returns a Controller; SetInformers and Run start it. It talks to the
// API server only in Run and Restore.
func New(dyn dynamic.Interface, disc discovery.DiscoveryInterface, alloc *ipam.Allocator, pools Pools, recorder record.EventRecorder, opts Options) *Controller {
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = 30 * time.Second
	}
	if opts.DiscoveryInterval <= 0 {
		opts.DiscoveryInterval = time.Minute
	}
	if opts.Workers <= 0 {
		opts.Workers = 2
	}
	c := &Controller{
		dyn: dyn, disc: disc, alloc: alloc, pools: pools, recorder: recorder, opts: opts,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ipaddressclaims"}),
		log:      klog.Background().WithName("capiipam"),
		state:    map[string]string{},
		gateways: map[string]bool{},
	}
	pools.OnChange(func(pool string) { c.queue.Add(poolKey + pool) })
	claimMetrics.Set(c.collectMetrics)
	return c
}

// poolKey prefixes the queue keys of pools (claim keys are
// namespace/name, and a pool's name has no space).
const poolKey = "pool "

// SetInformers takes the Namespace informer of the shared factory: a
// pool's serviceAllocation selects claims by their namespace's labels.
func (c *Controller) SetInformers(factory informers.SharedInformerFactory) {
	ns := factory.Core().V1().Namespaces()
	c.namespaces, c.nsSynced = ns.Lister(), ns.Informer().HasSynced
}

// servedResource reports whether the API server serves resource in
// groupVersion; an error only when it cannot tell.
func servedResource(disc discovery.DiscoveryInterface, groupVersion string, resources ...string) (bool, error) {
	list, err := disc.ServerResourcesForGroupVersion(groupVersion)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("discovering %s: %w", groupVersion, err)
	}
	for _, want := range resources {
		found := false
		for _, r := range list.APIResources {
			found = found || r.Name == want
		}
		if !found {
			return false, nil
		}
	}
	return true, nil
}

// ipamServed reports whether IPAddressClaims and IPAddresses are served.
func (c *Controller) ipamServed() (bool, error) {
	return servedResource(c.disc, ClaimResource.GroupVersion().String(), ClaimResource.Resource, AddressResource.Resource)
}

// Run waits for ready (the Balancer's restore), then for Cluster API's
// IPAM CRDs, checking every DiscoveryInterval (a cluster without Cluster
// API is the common case: it logs once and waits), then answers claims
// until ctx ends.
func (c *Controller) Run(ctx context.Context, ready <-chan struct{}) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	select {
	case <-ready:
	case <-ctx.Done():
		return
	}
	logged := false
	err := wait.PollUntilContextCancel(ctx, c.opts.DiscoveryInterval, true, func(context.Context) (bool, error) {
		ok, err := c.ipamServed()
		if err != nil {
			c.log.Error(err, "Cannot tell whether Cluster API's IPAM CRDs are installed; asking again", "every", c.opts.DiscoveryInterval)
		} else if !ok && !logged {
			c.log.Info("Cluster API's IPAM CRDs (ipam.cluster.x-k8s.io/v1beta2) are not installed; IronLB answers IPAddressClaims once they are", "checkEvery", c.opts.DiscoveryInterval)
			logged = true
		}
		return ok, nil
	})
	if err != nil {
		return
	}
	if err := c.startInformers(ctx); err != nil {
		c.log.Error(err, "Cannot watch IPAddressClaims; Cluster API claims are not answered")
		return
	}
	c.log.Info("Answering Cluster API IPAddressClaims that name IronLB IPPools", "pausedByCluster", c.clusters != nil)
	c.reserveGateways()
	for range c.opts.Workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

// Indexes of the informers.
const (
	byPool    = "pool"
	byCluster = "cluster"
)

func (c *Controller) startInformers(ctx context.Context) error {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(c.dyn, 10*time.Minute)
	c.claims = factory.ForResource(ClaimResource).Informer()
	c.addresses = factory.ForResource(AddressResource).Informer()
	if err := c.claims.AddIndexers(cache.Indexers{byPool: indexByPool, byCluster: indexByCluster}); err != nil {
		return fmt.Errorf("indexing IPAddressClaims: %w", err)
	}
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			c.queue.Add(key)
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue}
	if _, err := c.claims.AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching IPAddressClaims: %w", err)
	}
	// An IPAddress has its claim's name and namespace.
	if _, err := c.addresses.AddEventHandler(handler); err != nil {
		return fmt.Errorf("watching IPAddresses: %w", err)
	}
	synced := []cache.InformerSynced{c.claims.HasSynced, c.addresses.HasSynced}
	if c.nsSynced != nil {
		synced = append(synced, c.nsSynced)
	}
	ok, err := servedResource(c.disc, ClusterResource.GroupVersion().String(), ClusterResource.Resource)
	if err != nil {
		return err
	}
	if ok {
		c.clusters = factory.ForResource(ClusterResource).Informer()
		byName := func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				c.enqueueIndexed(byCluster, u.GetNamespace()+"/"+u.GetName())
			}
		}
		if _, err := c.clusters.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: byName, UpdateFunc: func(_, obj any) { byName(obj) }, DeleteFunc: byName,
		}); err != nil {
			return fmt.Errorf("watching Clusters: %w", err)
		}
		synced = append(synced, c.clusters.HasSynced)
	}
	factory.Start(ctx.Done())
	if !cache.WaitForNamedCacheSyncWithContext(ctx, synced...) {
		return fmt.Errorf("waiting for the IPAddressClaim caches: %w", ctx.Err())
	}
	return nil
}

// enqueueIndexed queues the claims that index under value.
func (c *Controller) enqueueIndexed(index, value string) {
	if c.claims == nil {
		return
	}
	keys, err := c.claims.GetIndexer().IndexKeys(index, value)
	if err != nil {
		return
	}
	for _, k := range keys {
		c.queue.Add(k)
	}
}

func (c *Controller) worker(ctx context.Context) {
	for {
		key, quit := c.queue.Get()
		if quit {
			return
		}
		var err error
		if pool, ok := strings.CutPrefix(key, poolKey); ok {
			c.reserveGateways()
			c.enqueueIndexed(byPool, pool)
		} else {
			err = c.sync(ctx, key)
		}
		if err != nil {
			c.log.Error(err, "Answering IPAddressClaim", "claim", key)
			c.queue.AddRateLimited(key)
		} else {
			c.queue.Forget(key)
		}
		c.queue.Done(key)
	}
}
