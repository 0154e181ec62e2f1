// Package planner decides which nodes announce each VIP and keeps the
// speakers told. It follows Services (their allocations), Nodes,
// EndpointSlices (for externalTrafficPolicy Local), pools' announcement
// settings and the speakers' health. One Service change re-plans only that
// Service's VIPs, one speaker's change only the VIPs it can affect
// (marks.go), and only the speakers whose assignment changed are updated.
//
// A VIP has a set of announcers: in layer 2 at most one node answers ARP
// and NDP for it. A VIP stays with its announcer until that node becomes
// ineligible (or, for externalTrafficPolicy Local, another node has had
// more ready endpoints for LocalRebalanceDelay: place.go); when most
// speakers are lost at once the planner assumes the fault is its own
// network and waits a settle window before moving their VIPs (settle.go).
package planner

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	discoverylisters "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// Allocations is what the planner reads of the allocator.
type Allocations interface {
	Lookup(owner string) (ipam.Allocation, bool)
	Holder(addr netip.Addr) (ipam.Holding, bool)
}

// Pools tells where a pool's addresses may be announced.
type Pools interface {
	// Layer2 returns the pool's layer-2 settings; false when the pool does
	// not exist or its settings are invalid.
	Layer2(pool string) (ippool.Layer2, bool)
	// BGP returns the pool's BGP settings; false when it has none.
	BGP(pool string) (ippool.BGP, bool)
	// OnChange registers fn, called after any change of a pool (its
	// addresses or its announcement settings) or its deletion.
	OnChange(fn func(pool string))
}

// Speakers is the control channel to the nodes' speakers.
type Speakers interface {
	SetNode(node string, addr netip.Addr)
	RemoveNode(node string)
	Nodes() []string
	State(node string) (speakers.State, bool)
	// View is State without copies, for reading only (see
	// speakers.Manager.View): gather reads every node's on every sync.
	View(node string) (speakers.State, bool)
	Assign(node string, a *speakerv1.Announcement)
	Unassign(node, addr string)
	Resend(node, addr string)
	SetReady()
	OnChange(fn func(node string))
	LossLimit() time.Duration
	Heartbeat() time.Duration
}

// Defaults of Options.
const (
	DefaultGrace               = 2 * time.Second
	DefaultSettleWindow        = 5 * time.Second
	DefaultLocalRebalanceDelay = 30 * time.Second
)

// Options configures a Planner.
type Options struct {
	// Grace is how long a new leader waits for every speaker's first
	// report (what each announces now) before it plans.
	Grace time.Duration
	// SettleWindow is how long VIPs stay on speakers lost in a mass loss
	// (see settle.go) before they move.
	SettleWindow time.Duration
	// LocalRebalanceDelay is how long another node must have had more
	// ready endpoints than the announcer of an externalTrafficPolicy Local
	// layer-2 VIP before the VIP moves there; negative: never.
	LocalRebalanceDelay time.Duration
	// Client writes the Announced condition on Services; nil writes none.
	Client kubernetes.Interface
	// Recorder records Events on Services.
	Recorder record.EventRecorder
	// Ready reports whether allocations were restored; the planner waits
	// for it before planning.
	Ready func() bool
	// Peers tells each node's BGP peers; nil: no VIP is advertised over
	// BGP.
	Peers Peers
	// Class says which Services are IronLB's (by loadBalancerClass); the
	// zero value serves class-less Services and ironlb.dev/ironlb.
	Class lbclass.Policy
	// AddressInUse, when set, is told of a VIP a speaker found in use by
	// another host on the LAN (once per episode). It is called with the
	// planner's lock held: it must only queue work.
	AddressInUse func(netip.Addr)
}

// Peers tells which BGP peers each node holds a session with.
type Peers interface {
	// ForNode returns the usable BGPPeers that select node.
	ForNode(node string) []*v1alpha1.BGPPeer
	// OnChange registers fn, called after peers or their nodes changed.
	OnChange(fn func())
	// Synced reports whether every node's peers are known: before that,
	// no speaker may get a snapshot (it would close its sessions).
	Synced() bool
}

// Planner decides which nodes announce each VIP.
type Planner struct {
	alloc    Allocations
	pools    Pools
	speakers Speakers
	opts     Options
	log      klog.Logger

	services corelisters.ServiceLister
	nodes    corelisters.NodeLister
	slices   discoverylisters.EndpointSliceLister
	synced   []cache.InformerSynced
	factory  informers.SharedInformerFactory
	queue    workqueue.TypedRateLimitingInterface[string]
	// records holds the Services whose Announced condition is to be
	// written: API writes, served by their own workers (records.go) so
	// that planning (a lost speaker's VIPs moving) never waits behind them.
	records workqueue.TypedRateLimitingInterface[string]

	mu       sync.Mutex
	vips     map[netip.Addr]*vip
	bySvc    map[string][]netip.Addr // service key → its VIPs
	seeds    map[netip.Addr]string   // where VIPs were announced when this leader started
	failures map[netip.Addr]map[string]time.Time
	settle   settle
	started  bool
	// marks are what planning last saw of each node's speaker (marks.go).
	marks map[string]nodeMark

	// refusedAddrs are the nodes whose InternalIP syncNodes refused to
	// dial, with why (an Event is recorded when it changes). Only
	// syncNodes uses it, from the worker (or Run before the worker starts).
	refusedAddrs map[string]string

	// qmu guards what Idle reads: keys queued and not yet taken by the
	// worker, and keys being processed.
	qmu     sync.Mutex
	pending map[string]bool
	busy    int
	// recordsBusy counts the records being written (FlushRecords).
	recordsBusy atomic.Int32

	// hooks are nil but in tests (hooks.go).
	hooks *hooks

	// term is Run's context: it ends when this CCM stops leading, and
	// nothing is planned after that (what is still queued is dropped: a
	// stepping-down leader's sessions close, and re-planning their VIPs
	// would only write records the next leader must not believe). The
	// records of what was planned before are still written (FlushRecords).
	// Set before the workers start.
	term context.Context
}

// Queue keys other than a Service's namespace/name.
const (
	allKey    = "*all*"   // re-plan every VIP
	poolsKey  = "*pools*" // a pool changed: refresh every Service's VIPs
	recPrefix = "record:" // pending: a Service's Announced condition to write
)

// New returns a Planner; SetInformers and Run start it.
func New(alloc Allocations, pools Pools, sp Speakers, opts Options) *Planner {
	if opts.Grace == 0 {
		opts.Grace = DefaultGrace
	}
	if opts.SettleWindow == 0 {
		opts.SettleWindow = DefaultSettleWindow
	}
	if opts.LocalRebalanceDelay == 0 {
		opts.LocalRebalanceDelay = DefaultLocalRebalanceDelay
	}
	if opts.Ready == nil {
		opts.Ready = func() bool { return true }
	}
	p := &Planner{
		alloc: alloc, pools: pools, speakers: sp, opts: opts,
		log: klog.Background().WithName("planner"),
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-planner"}),
		records: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-planner-records"}),
		vips:     map[netip.Addr]*vip{},
		failures: map[netip.Addr]map[string]time.Time{},
		bySvc:    map[string][]netip.Addr{},
		seeds:    map[netip.Addr]string{},
		pending:  map[string]bool{},
	}
	pools.OnChange(func(string) { p.enqueue(poolsKey) })
	sp.OnChange(func(node string) { p.enqueue(nodePrefix + node) })
	if opts.Peers != nil {
		opts.Peers.OnChange(func() { p.enqueue(allKey) })
	}
	plannerMetrics.Set(p.collectMetrics)
	return p
}

// ServiceChanged re-plans one Service, e.g. right after its allocation
// changed.
func (p *Planner) ServiceChanged(svc *v1.Service) { p.enqueue(svc.Namespace + "/" + svc.Name) }

// SetInformers registers the Service, Node and EndpointSlice informers.
func (p *Planner) SetInformers(factory informers.SharedInformerFactory) {
	svc := factory.Core().V1().Services()
	nodes := factory.Core().V1().Nodes()
	eps := factory.Discovery().V1().EndpointSlices()
	p.services, p.nodes, p.slices = svc.Lister(), nodes.Lister(), eps.Lister()
	p.factory = factory
	p.synced = []cache.InformerSynced{svc.Informer().HasSynced, nodes.Informer().HasSynced, eps.Informer().HasSynced}
	_, _ = svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.enqueueService,
		UpdateFunc: func(_, obj any) { p.enqueueService(obj) },
		DeleteFunc: p.enqueueService,
	})
	enqueueAll := func(obj any) {
		p.enqueue(allKey)
		p.notifyDelivered(obj)
	}
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueAll, DeleteFunc: enqueueAll,
		UpdateFunc: func(old, cur any) {
			if nodeRelevantChange(old.(*v1.Node), cur.(*v1.Node)) {
				p.enqueue(allKey)
			}
			p.notifyDelivered(cur)
		},
	})
	_, _ = eps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.enqueueSlice,
		UpdateFunc: func(_, obj any) { p.enqueueSlice(obj) },
		DeleteFunc: p.enqueueSlice,
	})
}

func (p *Planner) enqueueService(obj any) {
	if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		p.enqueue(key)
	}
	p.notifyDelivered(obj)
}

// Run waits for caches and for the allocator's restore, gives the speakers
// a moment to report what they announce (so VIPs stay where they are across
// a leader change), then plans until ctx ends.
func (p *Planner) Run(ctx context.Context) {
	p.term = ctx
	defer p.queue.ShutDown()
	defer p.records.ShutDown()
	p.factory.Start(ctx.Done())
	if !cache.WaitForNamedCacheSyncWithContext(ctx, p.synced...) {
		return
	}
	waitingSince := time.Now()
	for !p.opts.Ready() || p.opts.Peers != nil && !p.opts.Peers.Synced() {
		if time.Since(waitingSince) > 30*time.Second {
			p.log.Info("Still waiting for the restore and the BGP peers before planning; the speakers keep what they announce",
				"restored", p.opts.Ready(), "hint", "the CCM must be allowed to list and watch BGPPeers, and Secrets in its namespace")
			waitingSince = time.Now()
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
	p.syncNodes()
	p.seedFromRecords()
	p.waitForReports(ctx)
	p.seedFromReports()
	p.startSettle()
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	p.startRecordWorkers()
	// Plan everything once before the speakers get their snapshots, so
	// that no VIP is withdrawn for lack of a plan.
	svcs, _ := p.services.List(labels.Everything())
	w := p.gather()
	for _, s := range svcs {
		if err := p.syncServiceIn(s.Namespace+"/"+s.Name, w); err != nil {
			p.enqueue(s.Namespace + "/" + s.Name)
		}
	}
	p.planAll()
	p.speakers.SetReady()
	p.enqueue(allKey)
	go func() {
		<-ctx.Done()
		p.queue.ShutDown()
		p.records.ShutDown()
	}()
	for p.processNext() {
	}
}

// enqueue queues key for the worker.
func (p *Planner) enqueue(key string) {
	p.qmu.Lock()
	p.pending[key] = true
	p.qmu.Unlock()
	p.queue.Add(key)
}

func (p *Planner) processNext() bool {
	key, quit := p.queue.Get()
	if quit {
		return false
	}
	p.qmu.Lock()
	delete(p.pending, key)
	p.busy++
	p.qmu.Unlock()
	defer func() {
		// Done first: a key added while it was processed is queued again
		// by Done (and is pending already).
		p.queue.Done(key)
		p.qmu.Lock()
		p.busy--
		p.qmu.Unlock()
	}()
	var err error
	switch {
	case p.term.Err() != nil:
		// The term ended: drop it.
	case key == allKey:
		p.syncNodes()
		p.planAll()
	case key == poolsKey:
		p.syncAllServices()
	case strings.HasPrefix(key, nodePrefix):
		p.planNode(strings.TrimPrefix(key, nodePrefix))
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

// FlushRecords waits until every queued Announced record is written (or
// failed once), or ctx ends. A leader that steps down calls it after its
// term ended and before it hands the Lease over: the next leader believes
// the records over the speakers' claims (seed.go), and a move made just
// before the handover must be on record by then.
func (p *Planner) FlushRecords(ctx context.Context) {
	for {
		p.qmu.Lock()
		pending := 0
		for key := range p.pending {
			if strings.HasPrefix(key, recPrefix) {
				pending++
			}
		}
		p.qmu.Unlock()
		if pending == 0 && p.recordsBusy.Load() == 0 {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Idle reports whether the planner has started and has nothing queued or
// in progress (work delayed for later, such as a failure backoff or the end
// of a settle window, does not count). Tests wait for it before asserting
// that something did not happen.
func (p *Planner) Idle() bool {
	p.mu.Lock()
	started := p.started
	p.mu.Unlock()
	p.qmu.Lock()
	defer p.qmu.Unlock()
	return started && p.busy == 0 && len(p.pending) == 0
}

// WaitIdle waits until Idle, or ctx ends.
func (p *Planner) WaitIdle(ctx context.Context) error {
	for !p.Idle() {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// Advertisers returns the nodes told to advertise a over BGP.
func (p *Planner) Advertisers(a netip.Addr) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.vips[a]; v != nil {
		return append([]string(nil), v.advertisers...)
	}
	return nil
}

// Announcers returns the nodes told to announce a.
func (p *Planner) Announcers(a netip.Addr) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if v := p.vips[a]; v != nil {
		return append([]string(nil), v.announcers...)
	}
	return nil
}
