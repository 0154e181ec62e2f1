package bgppeers

import (
	"context"
	"fmt"
	"maps"
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
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
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

// Speakers is what the controller needs of the control channel.
type Speakers interface {
	// View is the node's speaker state, read only (not copied: a status
	// write reads every selected node's sessions, and a copy of each
	// node's VIP lists cost O(nodes × VIPs) per BGP change).
	View(node string) (speakers.State, bool)
	SetBGP(node string, cfg *speakerv1.BGPConfig)
	OnChange(fn func(node string))
	OnBGPChange(fn func(node string))
}

// statusDelay batches status writes: sessions of many nodes coming up at
// once become one write per peer.
const statusDelay = 500 * time.Millisecond

// Queue keys.
const (
	syncKey      = "*sync*"  // recompute every node's set-up
	statusPrefix = "status/" // write one BGPPeer's status
)

// Controller follows BGPPeers, their password Secrets (in IronLB's
// namespace, of type ironlb.dev/bgp-password only) and the Nodes; it gives each node's speaker its BGP set-up,
// tells the planner which peers each node has, and writes BGPPeer status
// from the speakers' session reports. Passwords go to the speakers only:
// they are never logged, nor written to status or Events.
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
	synced   bool                           // sync ran once
	byNode   map[string][]*v1alpha1.BGPPeer // usable peers of each node
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

// ForNode implements planner.Peers: the usable peers that select node.
func (c *Controller) ForNode(node string) []*v1alpha1.BGPPeer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byNode[node]
}

// Synced implements planner.Peers: every node has had its set-up once.
func (c *Controller) Synced() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.synced
}

// OnChange implements planner.Peers.
func (c *Controller) OnChange(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.onChange = append(c.onChange, fn)
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

// sync gives every node its set-up and tells the planner when the peers
// of a node changed.
func (c *Controller) sync() {
	peers := c.peers()
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	byNode := map[string][]*v1alpha1.BGPPeer{}
	var problems []Problem
	byName := map[string]*v1alpha1.BGPPeer{}
	for _, p := range peers {
		byName[p.Name] = p
	}
	for _, n := range nodes {
		cfg, probs := ForNode(n, peers, c.secret)
		problems = append(problems, probs...)
		c.sp.SetBGP(n.Name, cfg)
		for _, bp := range cfg.GetPeers() {
			byNode[n.Name] = append(byNode[n.Name], byName[bp.GetName()])
		}
	}
	c.mu.Lock()
	changed := !maps.EqualFunc(byNode, c.byNode, func(a, b []*v1alpha1.BGPPeer) bool {
		return slices.EqualFunc(a, b, func(x, y *v1alpha1.BGPPeer) bool {
			return x.Name == y.Name && x.Generation == y.Generation && equality.Semantic.DeepEqual(x.Labels, y.Labels)
		})
	})
	problems = uniqueProblems(problems)
	c.byNode = byNode
	c.synced = true
	newProblems := !slices.Equal(problems, c.problems)
	c.problems = problems
	fns := slices.Clone(c.onChange)
	c.mu.Unlock()
	if newProblems {
		for _, p := range problems {
			kv := []any{"bgppeer", p.Peer, "node", p.Node, "reason", p.Reason, "problem", p.Message}
			if p.Detail != "" {
				kv = append(kv, "detail", p.Detail)
			}
			c.log.Info("BGPPeer cannot be used", kv...)
		}
	}
	if changed {
		for _, fn := range fns {
			fn()
		}
	}
	c.touchAll()
}

// uniqueProblems sorts problems and drops repeats (a problem of a peer
// itself is found once per node it selects).
func uniqueProblems(ps []Problem) []Problem {
	slices.SortFunc(ps, func(a, b Problem) int {
		return strings.Compare(a.Peer+"\x00"+a.Node+"\x00"+string(a.Reason)+"\x00"+a.Message,
			b.Peer+"\x00"+b.Node+"\x00"+string(b.Reason)+"\x00"+b.Message)
	})
	return slices.Compact(ps)
}

// touchAll refreshes the status of every peer soon.
func (c *Controller) touchAll() {
	for _, k := range c.informer.GetStore().ListKeys() {
		c.queue.AddAfter(statusPrefix+k, statusDelay)
	}
}

func (c *Controller) writeStatus(ctx context.Context, name string) error {
	obj, exists, err := c.informer.GetStore().GetByKey(name)
	if err != nil || !exists {
		return err
	}
	p, err := fromUnstructured(obj)
	if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	var selected []string
	sessions := NodeSessions{}
	for _, n := range nodes {
		sel, _ := Selected(n, []*v1alpha1.BGPPeer{p})
		if len(sel) == 0 {
			continue
		}
		selected = append(selected, n.Name)
		if st, ok := c.sp.View(n.Name); ok {
			for _, s := range st.BGPSessions {
				if s.GetPeer() == p.Spec.PeerAddress {
					sessions[n.Name] = s
				}
			}
		}
	}
	c.mu.Lock()
	problems := slices.Clone(c.problems)
	c.mu.Unlock()
	status := Status(p, selected, sessions, problems, time.Now())
	if statusEqual(status, p.Status) {
		return nil
	}
	old := p.Status
	p.Status = status
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
	if err != nil {
		return err
	}
	_, err = c.client.UpdateStatus(ctx, &unstructured.Unstructured{Object: u}, metav1.UpdateOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case apierrors.IsConflict(err):
		c.queue.AddAfter(statusPrefix+name, statusDelay)
		return nil
	case err != nil:
		return err
	}
	// Events only for what was written: a retried write sends none twice.
	c.announce(obj.(*unstructured.Unstructured), old, status)
	return nil
}

// Event reasons on BGPPeers.
const (
	ReasonSessionFailed      = "SessionFailed"
	ReasonSessionEstablished = "SessionEstablished"
	ReasonNotUsable          = "PeerNotUsable"
)

// announce sends Events for what changed between two statuses: a peer
// that became unusable, and each node's session that failed or came up.
func (c *Controller) announce(obj *unstructured.Unstructured, old, cur v1alpha1.BGPPeerStatus) {
	if c.recorder == nil {
		return
	}
	if oc, nc := meta.FindStatusCondition(old.Conditions, "Ready"), meta.FindStatusCondition(cur.Conditions, "Ready"); nc != nil && nc.Status == metav1.ConditionFalse &&
		(oc == nil || oc.Status != nc.Status || oc.Message != nc.Message) {
		c.recorder.Event(obj, v1.EventTypeWarning, ReasonNotUsable, nc.Message)
	}
	before := map[string]v1alpha1.BGPSession{}
	for _, s := range old.Sessions {
		before[s.Node] = s
	}
	for _, s := range cur.Sessions {
		b, had := before[s.Node]
		switch {
		case s.LastError != "" && (!had || b.LastError != s.LastError):
			c.recorder.Eventf(obj, v1.EventTypeWarning, ReasonSessionFailed, "node %s: %s", s.Node, s.LastError)
		case s.State == v1alpha1.SessionEstablished && had && b.State != v1alpha1.SessionEstablished:
			c.recorder.Eventf(obj, v1.EventTypeNormal, ReasonSessionEstablished, "node %s: session established", s.Node)
		}
	}
}

// statusEqual compares statuses ignoring condition transition times.
func statusEqual(a, b v1alpha1.BGPPeerStatus) bool {
	strip := func(s v1alpha1.BGPPeerStatus) v1alpha1.BGPPeerStatus {
		s.Conditions = slices.Clone(s.Conditions)
		for i := range s.Conditions {
			s.Conditions[i].LastTransitionTime = metav1.Time{}
		}
		return s
	}
	return equality.Semantic.DeepEqual(strip(a), strip(b))
}

func fromUnstructured(obj any) (*v1alpha1.BGPPeer, error) {
	return v1alpha1.FromUnstructured[v1alpha1.BGPPeer](obj)
}
