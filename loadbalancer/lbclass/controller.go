package lbclass

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/klog/v2"
)

// Event reasons on Services, the service controller's.
const (
	ReasonEnsuring      = "EnsuringLoadBalancer"
	ReasonEnsured       = "EnsuredLoadBalancer"
	ReasonSyncFailed    = "SyncLoadBalancerFailed"
	ReasonDeleting      = "DeletingLoadBalancer"
	ReasonDeleted       = "DeletedLoadBalancer"
	ReasonLegacyService = "ClasslessServiceKept"
)

// Controller serves the Services of IronLB's loadBalancerClass as the
// cloud-provider service controller serves class-less ones, through the
// same cloudprovider.LoadBalancer: it puts Finalizer on a Service before
// it gives it addresses, writes status.loadBalancer, and on deletion or a
// change of type releases the addresses, clears the status and removes
// the finalizer. With Policy.Only it also releases Legacy Services when
// they go (the service controller does not run then).
type Controller struct {
	policy   Policy
	balancer cloudprovider.LoadBalancer
	client   kubernetes.Interface
	recorder record.EventRecorder
	services corelisters.ServiceLister
	synced   cache.InformerSynced
	queue    workqueue.TypedRateLimitingInterface[string]
	workers  int
	log      klog.Logger

	mu sync.Mutex
	// warned are the Legacy Services told once (by UID) that they are
	// kept; bounded by the Services that exist.
	warned map[string]bool
}

// New returns a Controller for the Services of policy's class, served by
// balancer; Run starts it. Like the service controller it should have a
// client of its own: its writes and its Events (sent by a broadcaster of
// its own, which drops Events beyond a queue of 1,000) must not wait
// behind the rest of IronLB's.
func New(policy Policy, balancer cloudprovider.LoadBalancer, client kubernetes.Interface, factory informers.SharedInformerFactory, workers int) *Controller {
	inf := factory.Core().V1().Services()
	c := &Controller{
		policy: policy, balancer: balancer, client: client,
		services: inf.Lister(), synced: inf.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-class"}),
		workers: max(workers, 1),
		log:     klog.Background().WithName("lbclass"),
		warned:  map[string]bool{},
	}
	_, _ = inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if svc, ok := obj.(*v1.Service); ok && c.handles(svc) {
				c.enqueue(svc)
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Service)
			n, ok2 := cur.(*v1.Service)
			if ok1 && ok2 && (c.handles(o) || c.handles(n)) && needsSync(o, n) {
				c.enqueue(n)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if svc, ok := obj.(*v1.Service); ok {
				c.forget(svc)
			}
		},
	})
	return c
}

// handles reports whether svc is this controller's: of IronLB's class,
// carrying Finalizer, or Legacy.
func (c *Controller) handles(svc *v1.Service) bool {
	return c.policy.OfClass(svc) || slices.Contains(svc.Finalizers, Finalizer) || c.policy.Legacy(svc)
}

// needsSync reports whether an update can change what the controller
// does: not an informer resync, nor the controller's own writes (its
// finalizer added, status.loadBalancer written: a sync would only
// repeat itself), nor status conditions (IronLB's Announced record).
// Like the service controller it does not rewrite a status another
// writer changed.
func needsSync(old, cur *v1.Service) bool {
	if old.ResourceVersion == cur.ResourceVersion {
		return false
	}
	finalizerRemoved := slices.Contains(old.Finalizers, Finalizer) && !slices.Contains(cur.Finalizers, Finalizer)
	// Services get no metadata.generation: compare the spec itself.
	return !apiequality.Semantic.DeepEqual(old.Spec, cur.Spec) || old.UID != cur.UID || finalizerRemoved ||
		!old.DeletionTimestamp.Equal(cur.DeletionTimestamp) ||
		!maps.Equal(old.Annotations, cur.Annotations) || !maps.Equal(old.Labels, cur.Labels)
}

func (c *Controller) enqueue(svc *v1.Service) {
	c.queue.Add(svc.Namespace + "/" + svc.Name)
}

func (c *Controller) forget(svc *v1.Service) {
	c.mu.Lock()
	delete(c.warned, string(svc.UID))
	c.mu.Unlock()
}

// Component is the source of the Controller's Events.
const Component = "ironlb-ccm"

// Run processes Services until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	defer c.queue.ShutDown()
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartStructuredLogging(3)
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	c.recorder = broadcaster.NewRecorder(scheme.Scheme, v1.EventSource{Component: Component})
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.synced) {
		return
	}
	c.log.Info("Serving Services of loadBalancerClass", "class", c.policy.Class(), "classless", c.policy.Classless(), "workers", c.workers)
	for range c.workers {
		go wait.UntilWithContext(ctx, c.worker, time.Second)
	}
	<-ctx.Done()
}

func (c *Controller) worker(ctx context.Context) {
	for c.next(ctx) {
	}
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	err := c.sync(ctx, key)
	var re *api.RetryError
	switch {
	case err == nil:
		c.queue.Forget(key)
	case errors.As(err, &re):
		c.log.Info("Service not served yet, retrying", "service", key, "retryAfter", re.RetryAfter(), "reason", err.Error())
		c.queue.AddAfter(key, re.RetryAfter())
	default:
		c.log.Error(err, "Syncing Service", "service", key)
		c.queue.AddRateLimited(key)
	}
	return true
}

// sync brings one Service to what the policy says.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := c.services.Services(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		return nil // gone: the Balancer released what it held
	case err != nil:
		return err
	case !c.handles(svc):
		return nil
	}
	deleting := svc.DeletionTimestamp != nil
	switch {
	case !deleting && c.policy.OfClass(svc) && c.policy.Serves(svc):
		return c.ensure(ctx, svc)
	case !deleting && c.policy.Legacy(svc) && svc.Spec.Type == v1.ServiceTypeLoadBalancer:
		c.warnLegacy(svc)
		return nil
	}
	return c.cleanup(ctx, svc)
}

// ensure gives svc its addresses and writes them to its status.
func (c *Controller) ensure(ctx context.Context, svc *v1.Service) error {
	c.recorder.Event(svc, v1.EventTypeNormal, ReasonEnsuring, "Ensuring load balancer")
	if !slices.Contains(svc.Finalizers, Finalizer) {
		updated := svc.DeepCopy()
		updated.Finalizers = append(updated.Finalizers, Finalizer)
		got, err := servicehelper.PatchService(c.client.CoreV1(), svc, updated)
		if err != nil {
			return fmt.Errorf("adding finalizer %s: %w", Finalizer, err)
		}
		svc = got
	}
	st, err := c.balancer.EnsureLoadBalancer(ctx, "", svc, nil)
	if err != nil {
		c.recorder.Eventf(svc, v1.EventTypeWarning, ReasonSyncFailed, "Error syncing load balancer: %v", err)
		return fmt.Errorf("ensuring load balancer: %w", err)
	}
	if err := c.patchStatus(svc, st); err != nil {
		return err
	}
	c.recorder.Event(svc, v1.EventTypeNormal, ReasonEnsured, "Ensured load balancer")
	return nil
}

// cleanup releases svc's addresses (it is being deleted, or no longer
// wants a load balancer from IronLB), clears its status and removes the
// finalizers that kept it. A Service that the service controller serves
// now (made class-less by a change of type, then LoadBalancer again) only
// loses Finalizer: its addresses are the service controller's to keep.
func (c *Controller) cleanup(ctx context.Context, svc *v1.Service) error {
	deleting := svc.DeletionTimestamp != nil
	release := deleting || !c.policy.Serves(svc)
	if release {
		_, exists, err := c.balancer.GetLoadBalancer(ctx, "", svc)
		if err != nil {
			return fmt.Errorf("checking the load balancer before cleanup: %w", err)
		}
		if exists {
			c.recorder.Event(svc, v1.EventTypeNormal, ReasonDeleting, "Deleting load balancer")
			if err := c.balancer.EnsureLoadBalancerDeleted(ctx, "", svc); err != nil {
				return fmt.Errorf("deleting load balancer: %w", err)
			}
		}
	}
	updated := svc.DeepCopy()
	updated.Finalizers = slices.DeleteFunc(updated.Finalizers, func(f string) bool {
		return f == Finalizer || (f == StandardFinalizer && c.policy.Legacy(svc))
	})
	if release && !deleting {
		updated.Status.LoadBalancer = v1.LoadBalancerStatus{}
	}
	if !slices.Equal(updated.Finalizers, svc.Finalizers) || !servicehelper.LoadBalancerStatusEqual(&updated.Status.LoadBalancer, &svc.Status.LoadBalancer) {
		if _, err := servicehelper.PatchService(c.client.CoreV1(), svc, updated); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing finalizer %s: %w", Finalizer, err)
		}
	}
	if release {
		c.recorder.Event(svc, v1.EventTypeNormal, ReasonDeleted, "Deleted load balancer")
	}
	return nil
}

// patchStatus writes st as svc's status.loadBalancer when it differs.
func (c *Controller) patchStatus(svc *v1.Service, st *v1.LoadBalancerStatus) error {
	if st == nil {
		return errors.New("the load balancer returned no status")
	}
	if servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, st) {
		return nil
	}
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer = *st
	if _, err := servicehelper.PatchService(c.client.CoreV1(), svc, updated); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the load balancer status: %w", err)
	}
	return nil
}

// warnLegacy tells, once per Service, that IronLB keeps serving a
// class-less Service it served before it was told to serve only its
// class.
func (c *Controller) warnLegacy(svc *v1.Service) {
	c.mu.Lock()
	done := c.warned[string(svc.UID)]
	c.warned[string(svc.UID)] = true
	c.mu.Unlock()
	if done {
		return
	}
	c.log.Info("Keeping a class-less Service served before IronLB was told to serve only its class", "service", klog.KObj(svc), "class", c.policy.Class())
	c.recorder.Eventf(svc, v1.EventTypeWarning, ReasonLegacyService,
		"IronLB serves only loadBalancerClass %s now; it keeps this Service's addresses, which it gave before, until the Service is deleted or changes type. Re-create it with loadBalancerClass %s to keep it served by IronLB",
		c.policy.Class(), c.policy.Class())
}
