package loadbalancer

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
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/placement"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// Event reasons for announcements.
const (
	ReasonAnnounced   = "VIPAnnounced"
	ReasonMoved       = "VIPMoved"
	ReasonNoAnnouncer = "NoAnnouncingNode"
)

// AnnotationAnnouncedBy on a Service tells which node announces each of
// its VIPs ("192.0.2.200=node-a,2001:db8::5=node-b"; "-" for none), so
// `kubectl describe svc` answers "where is my VIP?".
const AnnotationAnnouncedBy = "ironlb.dev/announced-by"

// annPrefix marks queue keys asking to refresh a Service's annotation.
const annPrefix = "annotate:"

// LabelExcludeFromLB keeps a node from announcing any VIP.
const LabelExcludeFromLB = v1.LabelNodeExcludeBalancers

// Layer2Source tells where a pool's addresses are announced.
type Layer2Source interface {
	Layer2(pool string) ippool.Layer2
	OnLayer2Change(fn func(pool string))
}

// Speakers is the control channel to the nodes' speakers.
type Speakers interface {
	SetNode(node string, addr netip.Addr)
	RemoveNode(node string)
	Nodes() []string
	State(node string) (speakers.State, bool)
	Assign(node string, a *speakerv1.Announcement)
	Unassign(node, addr string)
	SetReady()
}

// Planner decides which node announces each VIP and keeps the speakers
// told. It follows Services (their allocations), Nodes, EndpointSlices (for
// externalTrafficPolicy Local), pools' layer-2 settings and the speakers'
// health. One Service change re-plans only that Service's VIPs and updates
// only the speakers whose assignment changed.
type Planner struct {
	alloc    *ipam.Allocator
	pools    Layer2Source
	speakers Speakers
	recorder record.EventRecorder
	client   kubernetes.Interface
	log      klog.Logger
	grace    time.Duration

	services  corelisters.ServiceLister
	nodes     corelisters.NodeLister
	slices    discoverylisters.EndpointSliceLister
	synced    []cache.InformerSynced
	factory   informers.SharedInformerFactory
	queue     workqueue.TypedRateLimitingInterface[string]
	balancerR func() bool

	mu       sync.Mutex
	failures map[netip.Addr]map[string]time.Time // node could not announce the VIP
	vips     map[netip.Addr]*vipState
	bySvc    map[string][]netip.Addr // service key → its VIPs
	seed     map[netip.Addr]string   // owners reported by speakers at start
	started  bool
}

type vipState struct {
	services map[string]*v1.Service
	pool     string
	owner    string
	why      string // why the owner has it, for Events
	warned   bool   // a NoAnnouncingNode Event was sent for the current gap
}

// allKey asks for a re-plan of every VIP.
const allKey = "*all*"

// NewPlanner returns a Planner; SetInformers and Run start it.
func NewPlanner(alloc *ipam.Allocator, pools Layer2Source, sp Speakers, recorder record.EventRecorder) *Planner {
	p := &Planner{
		alloc: alloc, pools: pools, speakers: sp, recorder: recorder,
		log:   klog.Background().WithName("planner"),
		grace: 2 * time.Second,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-planner"}),
		vips:     map[netip.Addr]*vipState{},
		failures: map[netip.Addr]map[string]time.Time{},
		bySvc:    map[string][]netip.Addr{},
		seed:     map[netip.Addr]string{},
	}
	pools.OnLayer2Change(func(string) { p.queue.Add(allKey) })
	plannerMetrics.Set(p.collectMetrics)
	return p
}

// SetClient lets the planner write AnnotationAnnouncedBy on Services.
func (p *Planner) SetClient(c kubernetes.Interface) { p.client = c }

// SpeakerChanged is the speakers' OnChange hook: a speaker connected, was
// lost or changed health.
func (p *Planner) SpeakerChanged(node string) { p.queue.Add(allKey) }

// ServiceChanged re-plans one Service, e.g. right after its allocation
// changed.
func (p *Planner) ServiceChanged(svc *v1.Service) { p.queue.Add(svc.Namespace + "/" + svc.Name) }

// SetInformers registers the Service, Node and EndpointSlice informers.
func (p *Planner) SetInformers(factory informers.SharedInformerFactory, balancerReady func() bool) {
	svc := factory.Core().V1().Services()
	nodes := factory.Core().V1().Nodes()
	eps := factory.Discovery().V1().EndpointSlices()
	p.services, p.nodes, p.slices = svc.Lister(), nodes.Lister(), eps.Lister()
	p.factory = factory
	p.balancerR = balancerReady
	p.synced = []cache.InformerSynced{svc.Informer().HasSynced, nodes.Informer().HasSynced, eps.Informer().HasSynced}
	enqueueSvc := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			p.queue.Add(key)
		}
	}
	_, _ = svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueSvc, UpdateFunc: func(_, obj any) { enqueueSvc(obj) }, DeleteFunc: enqueueSvc,
	})
	enqueueAll := func(any) { p.queue.Add(allKey) }
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueAll, DeleteFunc: enqueueAll,
		UpdateFunc: func(old, cur any) {
			if nodeRelevantChange(old.(*v1.Node), cur.(*v1.Node)) {
				p.queue.Add(allKey)
			}
		},
	})
	enqueueSlice := func(obj any) {
		if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = t.Obj
		}
		if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
			if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
				p.queue.Add(s.Namespace + "/" + name)
			}
		}
	}
	_, _ = eps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueSlice, UpdateFunc: func(_, obj any) { enqueueSlice(obj) }, DeleteFunc: enqueueSlice,
	})
}

// nodeRelevantChange ignores heartbeat-only Node updates.
func nodeRelevantChange(old, cur *v1.Node) bool {
	return nodeReady(old) != nodeReady(cur) || !labels.Equals(old.Labels, cur.Labels) ||
		nodeAddress(old) != nodeAddress(cur)
}

// Run waits for caches and for the allocator's restore, gives the speakers
// a moment to report what they announce (so VIPs stay where they are across
// a CCM leader change), then plans until ctx ends.
func (p *Planner) Run(ctx context.Context) {
	defer p.queue.ShutDown()
	p.factory.Start(ctx.Done())
	if !cache.WaitForNamedCacheSyncWithContext(ctx, p.synced...) {
		return
	}
	for !p.balancerR() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.syncNodes()
	p.waitForReports(ctx)
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	// Plan everything once before the speakers get their snapshots, so
	// that no VIP is withdrawn for lack of a plan.
	svcs, _ := p.services.List(labels.Everything())
	for _, s := range svcs {
		if err := p.syncService(s.Namespace + "/" + s.Name); err != nil {
			p.queue.Add(s.Namespace + "/" + s.Name)
		}
	}
	p.planAll()
	p.speakers.SetReady()
	p.queue.Add(allKey)
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
	}()
	for p.processNext() {
	}
}

// waitForReports waits up to the grace period for every speaker's first
// report and remembers which VIPs each announces.
func (p *Planner) waitForReports(ctx context.Context) {
	deadline := time.Now().Add(p.grace)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		all := true
		for _, n := range p.speakers.Nodes() {
			if st, _ := p.speakers.State(n); !st.Reported {
				all = false
			}
		}
		if all {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, n := range p.speakers.Nodes() {
		st, _ := p.speakers.State(n)
		for _, a := range st.Initial {
			if prev, ok := p.seed[a]; !ok || placement.Score(a, n) > placement.Score(a, prev) {
				p.seed[a] = n
			}
		}
	}
	p.log.Info("Speakers reported", "nodes", len(p.speakers.Nodes()), "vipsAnnounced", len(p.seed))
}

func (p *Planner) processNext() bool {
	key, quit := p.queue.Get()
	if quit {
		return false
	}
	defer p.queue.Done(key)
	var err error
	switch {
	case key == allKey:
		p.syncNodes()
		p.planAll()
	case strings.HasPrefix(key, annPrefix):
		err = p.annotate(strings.TrimPrefix(key, annPrefix))
	default:
		err = p.syncService(key)
	}
	if err != nil {
		p.log.Error(err, "Planning", "key", key)
		p.queue.AddRateLimited(key)
		return true
	}
	p.queue.Forget(key)
	return true
}

// syncNodes keeps one speaker session per Node with an address.
func (p *Planner) syncNodes() {
	nodes, err := p.nodes.List(labels.Everything())
	if err != nil {
		return
	}
	seen := map[string]bool{}
	for _, n := range nodes {
		if a := nodeAddress(n); a.IsValid() {
			p.speakers.SetNode(n.Name, a)
			seen[n.Name] = true
		}
	}
	for _, n := range p.speakers.Nodes() {
		if !seen[n] {
			p.speakers.RemoveNode(n)
		}
	}
}

// nodeAddress is where the node's speaker listens: its first InternalIP.
func nodeAddress(n *v1.Node) netip.Addr {
	for _, a := range n.Status.Addresses {
		if a.Type == v1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				return ip
			}
		}
	}
	return netip.Addr{}
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

// syncService updates the VIPs of one Service and re-plans them.
func (p *Planner) syncService(key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := p.services.Services(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var addrs []netip.Addr
	var pools []string
	if svc != nil && managed(svc) && svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.DeletionTimestamp == nil {
		if al, ok := p.alloc.Lookup(string(svc.UID)); ok {
			addrs, pools = al.Addresses, al.Pools
		}
	}
	nodes := p.nodeViews()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return nil
	}
	old := p.bySvc[key]
	for _, a := range old {
		if slices.Contains(addrs, a) {
			continue
		}
		v := p.vips[a]
		if v == nil {
			continue
		}
		delete(v.services, key)
		if len(v.services) == 0 {
			if v.owner != "" {
				p.speakers.Unassign(v.owner, a.String())
				p.log.Info("Withdrew VIP", "address", a, "node", v.owner, "service", key)
			}
			delete(p.vips, a)
			delete(p.failures, a)
		} else {
			p.planLocked(a, v, nodes)
		}
	}
	if !slices.Equal(old, addrs) {
		p.queue.Add(annPrefix + key)
	}
	if len(addrs) == 0 {
		delete(p.bySvc, key)
		return nil
	}
	p.bySvc[key] = slices.Clone(addrs)
	for i, a := range addrs {
		v := p.vips[a]
		if v == nil {
			v = &vipState{services: map[string]*v1.Service{}, owner: p.seed[a]}
			if v.owner != "" {
				v.why = "it announced the VIP already"
			}
			delete(p.seed, a)
			p.vips[a] = v
		}
		v.services[key] = svc
		v.pool = pools[i]
		p.planLocked(a, v, nodes)
	}
	return nil
}

func (p *Planner) planAll() {
	nodes := p.nodeViews()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	for a, v := range p.vips {
		p.planLocked(a, v, nodes)
	}
}

// planLocked chooses the owner of one VIP and tells the speakers about a
// change. A move withdraws from the old node and announces on the new one
// in the same step: the old node is usually unreachable, and a reachable
// one stops answering within milliseconds.
func (p *Planner) planLocked(a netip.Addr, v *vipState, nodes []nodeView) {
	eligible, reasons := p.eligible(a, v, nodes)
	owner := placement.Choose(a, v.owner, eligible)
	ann := p.announcement(a, v)
	if owner == v.owner {
		if owner != "" {
			p.speakers.Assign(owner, ann) // no-op unless the announcement changed
		} else if !v.warned {
			v.warned = true
			p.log.Info("No eligible node for VIP", "address", a, "reasons", summarize(reasons))
			p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, fmt.Sprintf("No node can announce %s: %s", a, summarize(reasons)))
		}
		return
	}
	old := v.owner
	v.owner = owner
	for key := range v.services {
		p.queue.Add(annPrefix + key)
	}
	if old != "" {
		p.speakers.Unassign(old, a.String())
	}
	why := reasons[old]
	v.warned = owner == ""
	if owner == "" {
		msg := fmt.Sprintf("No node can announce %s: %s", a, summarize(reasons))
		p.log.Info("No eligible node for VIP", "address", a, "reasons", summarize(reasons))
		p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, msg)
		return
	}
	p.speakers.Assign(owner, ann)
	if old == "" {
		p.log.Info("Announcing VIP", "address", a, "node", owner, "services", slices.Sorted(maps.Keys(v.services)))
		p.event(v, v1.EventTypeNormal, ReasonAnnounced, fmt.Sprintf("%s announced from node %s", a, owner))
	} else {
		p.log.Info("Moving VIP", "address", a, "from", old, "to", owner, "reason", why)
		failoversTotal.WithLabelValues(reasonCode(why)).Inc()
		p.event(v, v1.EventTypeNormal, ReasonMoved, fmt.Sprintf("%s moved from node %s to node %s: %s", a, old, owner, why))
	}
}

func (p *Planner) announcement(a netip.Addr, v *vipState) *speakerv1.Announcement {
	l2 := p.pools.Layer2(v.pool)
	return &speakerv1.Announcement{
		Address:    a.String(),
		Service:    strings.Join(slices.Sorted(maps.Keys(v.services)), ","),
		Interfaces: l2.Interfaces,
	}
}

// eligible lists the nodes that may announce a, and why each other known
// node may not.
func (p *Planner) eligible(a netip.Addr, v *vipState, nodes []nodeView) ([]string, map[string]string) {
	l2 := p.pools.Layer2(v.pool)
	var local map[string]bool // nil: any node
	for key, svc := range v.services {
		if svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		have := p.endpointNodes(key)
		if local == nil {
			local = have
			continue
		}
		for n := range local {
			if !have[n] {
				delete(local, n)
			}
		}
	}
	var out []string
	reasons := map[string]string{}
	for _, n := range nodes {
		switch {
		case n.nodeProblem != "":
			reasons[n.name] = n.nodeProblem
		case l2.Nodes != nil && !l2.Nodes.Matches(n.labels):
			reasons[n.name] = fmt.Sprintf("node does not match IPPool %s's layer2.nodeSelector", v.pool)
		case local != nil && !local[n.name]:
			reasons[n.name] = "no ready endpoint on the node (externalTrafficPolicy: Local)"
		case n.speakerProblem != "":
			reasons[n.name] = n.speakerProblem
		case n.failed[a.String()] != "":
			p.noteFailure(a, n.name)
			reasons[n.name] = "speaker cannot announce it: " + n.failed[a.String()]
		case p.recentlyFailed(a, n.name):
			reasons[n.name] = fmt.Sprintf("speaker failed to announce it less than %s ago", failureBackoff)
		default:
			out = append(out, n.name)
		}
	}
	if _, known := reasons[v.owner]; !known && v.owner != "" && !slices.Contains(out, v.owner) {
		reasons[v.owner] = "node was deleted"
	}
	return out, reasons
}

// nodeView is what placement needs of one node, gathered once per planning
// pass rather than once per VIP.
type nodeView struct {
	name           string
	labels         labels.Set
	nodeProblem    string            // why the Node itself cannot announce
	speakerProblem string            // why its speaker cannot
	failed         map[string]string // VIPs its speaker failed to announce
}

func (p *Planner) nodeViews() []nodeView {
	nodes, _ := p.nodes.List(labels.Everything())
	out := make([]nodeView, 0, len(nodes))
	for _, n := range nodes {
		nv := nodeView{name: n.Name, labels: labels.Set(n.Labels)}
		switch {
		case !nodeReady(n):
			nv.nodeProblem = "node is not Ready"
		case hasLabel(n, LabelExcludeFromLB):
			nv.nodeProblem = "node is labelled " + LabelExcludeFromLB
		}
		st, ok := p.speakers.State(n.Name)
		switch {
		case !ok:
			nv.speakerProblem = "node has no InternalIP to reach its speaker"
		case !st.Connected:
			nv.speakerProblem = "speaker not connected: " + st.Problem
		case !st.Healthy:
			nv.speakerProblem = "speaker unhealthy: " + st.Problem
		}
		nv.failed = st.Failed
		out = append(out, nv)
	}
	return out
}

// failureBackoff keeps a VIP off a node whose speaker could not announce
// it (say, a pool names an interface the node lacks), so that the VIP does
// not bounce between failing nodes.
const failureBackoff = 30 * time.Second

func (p *Planner) noteFailure(a netip.Addr, node string) {
	m := p.failures[a]
	if m == nil {
		m = map[string]time.Time{}
		p.failures[a] = m
	}
	if _, ok := m[node]; !ok {
		p.queue.AddAfter(allKey, failureBackoff+time.Second)
	}
	m[node] = time.Now()
}

func (p *Planner) recentlyFailed(a netip.Addr, node string) bool {
	t, ok := p.failures[a][node]
	if ok && time.Since(t) > failureBackoff {
		delete(p.failures[a], node)
		return false
	}
	return ok
}

// endpointNodes returns the nodes with a ready endpoint of the Service.
func (p *Planner) endpointNodes(key string) map[string]bool {
	ns, name, _ := strings.Cut(key, "/")
	out := map[string]bool{}
	sl, err := p.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	if err != nil {
		return out
	}
	for _, s := range sl {
		for _, ep := range s.Endpoints {
			if ep.NodeName != nil && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				out[*ep.NodeName] = true
			}
		}
	}
	return out
}

// annotate writes AnnotationAnnouncedBy on the Service when it changed.
func (p *Planner) annotate(key string) error {
	if p.client == nil {
		return nil
	}
	ns, name, _ := strings.Cut(key, "/")
	svc, err := p.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	var parts []string
	for _, a := range p.bySvc[key] {
		owner := "-"
		if v := p.vips[a]; v != nil && v.owner != "" {
			owner = v.owner
		}
		parts = append(parts, a.String()+"="+owner)
	}
	p.mu.Unlock()
	want := strings.Join(parts, ",")
	have, ok := svc.Annotations[AnnotationAnnouncedBy]
	if (want == "" && !ok) || (ok && have == want) {
		return nil
	}
	var patch []byte
	if want == "" {
		patch = []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:null}}}`, AnnotationAnnouncedBy))
	} else {
		patch = []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationAnnouncedBy, want))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = p.client.CoreV1().Services(ns).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

func (p *Planner) event(v *vipState, typ, reason, msg string) {
	for _, svc := range v.services {
		if svc != nil {
			p.recorder.Event(svc, typ, reason, msg)
		}
	}
}

// Owner returns the node announcing a, "" if none.
func (p *Planner) Owner(a netip.Addr) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.vips[a]; v != nil {
		return v.owner
	}
	return ""
}

func hasLabel(n *v1.Node, key string) bool {
	_, ok := n.Labels[key]
	return ok
}

// summarize joins per-node reasons into one line, sorted by node.
func summarize(reasons map[string]string) string {
	if len(reasons) == 0 {
		return "the cluster has no nodes"
	}
	parts := make([]string, 0, len(reasons))
	for _, n := range slices.Sorted(maps.Keys(reasons)) {
		parts = append(parts, n+": "+reasons[n])
	}
	return strings.Join(parts, "; ")
}
