package bgppeers

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// Speakers is what the controller needs of the control channel: the
// sessions' reports, for BGPPeer status. It gives the speakers nothing:
// their BGP set-up reaches them through the planner (BGPConfigs).
type Speakers interface {
	// View is the node's speaker state, read only (not copied: a status
	// write reads every selected node's sessions, and a copy of each
	// node's VIP lists cost O(nodes × VIPs) per BGP change).
	View(node string) (speakers.State, bool)
	OnChange(fn func(node string))
	OnBGPChange(fn func(node string))
}

// Queue keys.
const (
	syncKey      = "*sync*"  // recompute every node's set-up
	statusPrefix = "status/" // write one BGPPeer's status
)

// Controller follows BGPPeers, their password Secrets (in IronLB's
// namespace, of type ironlb.dev/bgp-password only) and the Nodes. It
// keeps an index (index.go) of each node's usable peers and BGP set-up,
// which the planner reads and pushes to the speakers (planner.Peers), and
// writes BGPPeer status from the speakers' session reports
// (statuswriter.go). Passwords go to the speakers only: they are never
// logged, nor written to status or Events.
type Controller struct {
	client    dynamic.NamespaceableResourceInterface
	namespace string // of the password Secrets
	informer  cache.SharedIndexInformer
	secrets   corelisters.SecretLister
	secretsI  cache.SharedIndexInformer
	nodes     corelisters.NodeLister
	nodesI    cache.SharedIndexInformer
	sp        Speakers
	recorder  record.EventRecorder
	queue     workqueue.TypedRateLimitingInterface[string]
	log       klog.Logger

	mu       sync.Mutex
	synced   bool                            // the planner was told the first set-ups
	byNode   map[string][]*v1alpha1.BGPPeer  // usable peers of each node
	configs  map[string]*speakerv1.BGPConfig // each node's BGP set-up (nil: no sessions)
	problems []Problem
	onChange []func()
}

// New returns a Controller; SetNodeInformer and Run start it.
func New(dyn dynamic.Interface, client kubernetes.Interface, namespace string, sp Speakers, recorder record.EventRecorder, resync time.Duration) (*Controller, error) {
	factory := dynamicinformer.NewDynamicSharedInformerFactory(dyn, resync)
	secrets := informers.NewSharedInformerFactoryWithOptions(client, resync, informers.WithNamespace(namespace),
		informers.WithTweakListOptions(passwordSecretsOnly)).Core().V1().Secrets()
	if err := secrets.Informer().SetTransform(trimSecret); err != nil {
		return nil, fmt.Errorf("watching Secrets in %s: %w", namespace, err)
	}
	c := &Controller{
		client:    dyn.Resource(v1alpha1.BGPPeerResource),
		namespace: namespace,
		informer:  factory.ForResource(v1alpha1.BGPPeerResource).Informer(),
		secrets:   secrets.Lister(),
		secretsI:  secrets.Informer(),
		sp:        sp,
		recorder:  recorder,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "bgppeer"}),
		log:    klog.Background().WithName("bgppeers"),
		byNode: map[string][]*v1alpha1.BGPPeer{},
	}
	resyncAll := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(syncKey) },
		UpdateFunc: func(_, _ any) { c.queue.Add(syncKey) },
		DeleteFunc: func(any) { c.queue.Add(syncKey) },
	}
	if _, err := c.informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(syncKey) },
		UpdateFunc: func(old, cur any) { c.peerUpdated(old, cur) },
		DeleteFunc: func(any) { c.queue.Add(syncKey) },
	}); err != nil {
		return nil, fmt.Errorf("watching BGPPeers: %w", err)
	}
	if _, err := c.secretsI.AddEventHandler(resyncAll); err != nil {
		return nil, fmt.Errorf("watching Secrets in %s: %w", namespace, err)
	}
	// Connection changes and the sessions' own changes (states, routes)
	// both show in the status.
	sp.OnChange(func(string) { c.touchAll() })
	sp.OnBGPChange(func(string) { c.touchAll() })
	return c, nil
}

// passwordSecretsOnly makes the Secret informer list and watch BGP
// password Secrets only (a field selector on the type, applied by the API
// server): the CCM never receives, let alone caches, any other Secret of
// its namespace through it. RBAC cannot limit list and watch to a type;
// this is what the code asks for.
func passwordSecretsOnly(o *metav1.ListOptions) {
	o.FieldSelector = fields.OneTermEqualSelector("type", string(v1alpha1.BGPPasswordSecretType)).String()
}

// trimSecret keeps of a Secret only what a password needs: kubectl apply's
// last-applied annotation holds a second copy of the data, and managed
// fields are of no use here.
func trimSecret(obj any) (any, error) {
	if s, ok := obj.(*v1.Secret); ok {
		s.Annotations, s.ManagedFields = nil, nil
	}
	return obj, nil
}

// peerUpdated ignores the controller's own status writes.
func (c *Controller) peerUpdated(old, cur any) {
	o, ok1 := old.(*unstructured.Unstructured)
	n, ok2 := cur.(*unstructured.Unstructured)
	if ok1 && ok2 && o.GetGeneration() == n.GetGeneration() && equality.Semantic.DeepEqual(o.GetLabels(), n.GetLabels()) {
		return
	}
	c.queue.Add(syncKey)
}

// SetNodeInformer hands the controller manager's Node informer over.
func (c *Controller) SetNodeInformer(factory informers.SharedInformerFactory) {
	ni := factory.Core().V1().Nodes()
	c.nodes, c.nodesI = ni.Lister(), ni.Informer()
	_, _ = c.nodesI.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.queue.Add(syncKey) },
		DeleteFunc: func(any) { c.queue.Add(syncKey) },
		UpdateFunc: func(old, cur any) {
			o, n := old.(*v1.Node), cur.(*v1.Node)
			if !labels.Equals(o.Labels, n.Labels) || !equality.Semantic.DeepEqual(o.Status.Addresses, n.Status.Addresses) {
				c.queue.Add(syncKey)
			}
		},
	})
}

// Run works until ctx ends.
func (c *Controller) Run(ctx context.Context) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	go c.informer.RunWithContext(ctx)
	go c.secretsI.RunWithContext(ctx)
	if !cache.WaitForNamedCacheSyncWithContext(ctx, c.informer.HasSynced, c.secretsI.HasSynced, c.nodesI.HasSynced) {
		return
	}
	c.queue.Add(syncKey)
	go func() {
		<-ctx.Done()
		c.queue.ShutDown()
	}()
	for c.next(ctx) {
	}
}

func (c *Controller) next(ctx context.Context) bool {
	key, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(key)
	var err error
	if key == syncKey {
		c.sync()
	} else {
		err = c.writeStatus(ctx, strings.TrimPrefix(key, statusPrefix))
	}
	if err != nil {
		c.log.Error(err, "Writing BGPPeer status", "bgppeer", strings.TrimPrefix(key, statusPrefix))
		c.queue.AddRateLimited(key)
		return true
	}
	c.queue.Forget(key)
	return true
}

func (c *Controller) peers() []*v1alpha1.BGPPeer {
	var out []*v1alpha1.BGPPeer
	for _, o := range c.informer.GetStore().List() {
		p, err := fromUnstructured(o)
		if err != nil {
			c.log.Error(err, "Ignoring a BGPPeer that cannot be decoded")
			continue
		}
		out = append(out, p)
	}
	return out
}

func (c *Controller) secret(name string) (*v1.Secret, error) {
	s, err := c.secrets.Secrets(c.namespace).Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	return s, err
}

func fromUnstructured(obj any) (*v1alpha1.BGPPeer, error) {
	return v1alpha1.FromUnstructured[v1alpha1.BGPPeer](obj)
}
