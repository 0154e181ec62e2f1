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
	"sync"
	"time"

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
	// SetBGP gives node's speaker its BGP set-up (nil: no sessions);
	// configureSessions (sessions.go) is its only caller.
	SetBGP(node string, cfg *speakerv1.BGPConfig)
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

// Peers tells which BGP peers each node holds a session with, and each
// node's BGP set-up, which the planner gives the speakers (sessions.go).
type Peers interface {
	// PeersOf returns the usable BGPPeers that select node.
	PeersOf(node string) []*v1alpha1.BGPPeer
	// BGPConfigs returns every node's BGP set-up (nil: no sessions), to
	// be read only.
	BGPConfigs() map[string]*speakerv1.BGPConfig
	// OnChange registers fn, called after peers, their nodes or the
	// set-ups changed.
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
	// queue holds what is to be planned (queue.go).
	queue workqueue.TypedRateLimitingInterface[key]
	// records holds the Services (namespace/name) whose Announced
	// condition is to be written: API writes, served by their own workers
	// (records.go) so that planning (a lost speaker's VIPs moving) never
	// waits behind them.
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

	// qmu guards what Idle and FlushRecords read: keys queued and not yet
	// taken by a worker, and keys being processed.
	qmu            sync.Mutex
	pending        map[key]bool
	pendingRecords map[string]bool
	busy           int // keys of either queue being processed
	recordsBusy    int // records being written

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
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[key](),
			workqueue.TypedRateLimitingQueueConfig[key]{Name: "ironlb-planner"}),
		records: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-planner-records"}),
		vips:     map[netip.Addr]*vip{},
		failures: map[netip.Addr]map[string]time.Time{},
		bySvc:    map[string][]netip.Addr{},
		seeds:    map[netip.Addr]string{},
		pending:  map[key]bool{},

		pendingRecords: map[string]bool{},
	}
	pools.OnChange(func(string) { p.enqueue(poolsKey) })
	sp.OnChange(func(node string) { p.enqueue(nodeKey(node)) })
	if opts.Peers != nil {
		opts.Peers.OnChange(p.peersChanged)
	}
	plannerMetrics.Set(p.collectMetrics)
	return p
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
