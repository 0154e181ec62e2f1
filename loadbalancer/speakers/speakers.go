// Package speakers keeps the CCM leader's control channel to every node's
// speaker: one gRPC stream per speaker, a full snapshot of the speaker's
// desired VIPs when the stream (re)connects, then versioned updates that
// carry only what changed, and heartbeats that detect a silently lost node.
// Every snapshot and update carries the leader's term, so that speakers
// refuse a deposed leader.
package speakers

import (
	"context"
	"crypto/tls"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
)

// Defaults for Options.
const (
	// DefaultHeartbeat and DefaultMisses declare a silent speaker lost
	// after 225 ms: its layer-2 VIPs move within 0.3 s.
	DefaultHeartbeat = 75 * time.Millisecond
	DefaultMisses    = 3
	// DefaultRestartGrace bounds how long a restarting speaker's VIPs
	// stay on its node (see State.Restarting).
	DefaultRestartGrace = 30 * time.Second
)

// Options configures a Manager.
type Options struct {
	// Port is where speakers listen.
	Port int
	// Heartbeat is the interval between heartbeats; a speaker that answers
	// nothing for Heartbeat×Misses is declared lost.
	Heartbeat time.Duration
	Misses    int
	// HeartbeatRate bounds the heartbeats per second summed over all
	// streams: with more speakers than it allows at Heartbeat, each stream
	// uses a multiple of Heartbeat (see DefaultHeartbeatRate). 0 means
	// DefaultHeartbeatRate; negative means no bound.
	HeartbeatRate int
	// RestartGrace is how long a speaker that ended its stream with
	// ReasonRestarting may take to come back before its VIPs move (see
	// State.Restarting); default DefaultRestartGrace.
	RestartGrace time.Duration
	// Identity authenticates speakers (each by its node certificate) and
	// certifies them: pki.Bundle.
	Identity Identity
	// Leader names this CCM instance in the speakers' logs.
	Leader string
	// Term is this leader's term (see api/speaker/v1: Fencing), sent with
	// every snapshot and update.
	Term uint64
	// Valid, when set, is checked before every instruction is sent: once it
	// fails (this CCM may have lost its Lease) nothing more is sent, even
	// before the context ends.
	Valid func() error
	// Allocated is what this CCM allocated (the allocator): the first
	// report of a speaker's stream counts a VIP only when it is allocated,
	// and may be as large as a report of every allocated VIP (see
	// reportLimit); later reports count only the VIPs of the speaker's
	// node, and are held to its size (see nodeLimit). Nil: the first
	// report counts any address, and is sized for defaultReportVIPs
	// (tests).
	Allocated Allocated
	// Dial overrides how connections are made (tests).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// Identity is how the CCM authenticates each speaker as its node and
// gives it its node certificate; *pki.Bundle implements it.
type Identity interface {
	// ClientTLSConfig is the TLS configuration of one connection to node's
	// speaker; peer learns whether the speaker proved to be node's.
	ClientTLSConfig(node string, peer *pki.Peer) *tls.Config
	// Enroll checks token and certifies the key of a speaker not enrolled.
	Enroll(ctx context.Context, node string, peer *pki.Peer, token string) (*pki.Credentials, error)
	// RenewalDue is when an enrolled speaker's certificate should be
	// replaced.
	RenewalDue(peer *pki.Peer) time.Time
	// Renew certifies an enrolled speaker's key again once token proves
	// again what enrollment proved.
	Renew(ctx context.Context, node string, peer *pki.Peer, token string) (*pki.Credentials, error)
	// Changed is closed when the CAs change (a rotation): RenewalDue may
	// then be earlier, and the speakers get BundlePEM.
	Changed() <-chan struct{}
	// BundlePEM is every CA trusted now.
	BundlePEM() []byte
	// Revoked is closed when a speaker pod or a Node is deleted: open
	// streams then Check their speaker.
	Revoked() <-chan struct{}
	// Check reports whether an enrolled speaker's certificate still
	// proves its node (its pod and its Node exist).
	Check(node string, peer *pki.Peer) error
}

var _ Identity = (*pki.Bundle)(nil)

// Allocated is what the CCM allocated; *ipam.Allocator implements it.
type Allocated interface {
	// HoldsEach reports, for each of addrs, whether it is allocated; the
	// allocator's lock is taken once for all of them.
	HoldsEach(addrs []netip.Addr) []bool
	// Held is how many addresses are allocated.
	Held() int
}

// State is what the CCM knows about one speaker.
type State struct {
	// Connected is true once the speaker's first report arrived on the
	// current stream, until the stream fails.
	Connected bool
	// Since is when Connected last changed.
	Since time.Time
	// LastReport is when the speaker last answered (any report, heartbeats
	// included).
	LastReport time.Time
	// Healthy is true while the speaker reports every interface usable.
	Healthy bool
	// Problem explains !Connected or !Healthy.
	Problem string
	// Announcing is the set of VIPs the speaker last reported announcing;
	// immutable, so it is shared without copying (see AddrSet).
	Announcing AddrSet
	// Initial lists the VIPs the speaker announced when the current (or
	// last) stream opened, before any instruction on it; sorted.
	Initial []netip.Addr
	// Failed maps VIPs the speaker could not announce to its error.
	Failed map[string]string
	// Applied is the version the speaker confirmed; Sent the newest sent.
	Applied, Sent uint64
	// Reported is true once the speaker answered at least once since the
	// Manager started, even if it is disconnected now.
	Reported bool
	// Version and Capabilities are what the speaker said of itself.
	Version      string
	Capabilities []string
	// Fenced is true when the speaker refused this leader because it
	// follows a newer one.
	Fenced bool
	// Stopped is true when the speaker said it was shutting down: it
	// withdrew every VIP before its stream ended.
	Stopped bool
	// BGPSessions are the speaker's BGP sessions as it last reported them.
	BGPSessions []*speakerv1.BGPSessionStatus
	// Restarting is true while a speaker that said it is restarting
	// (ReasonRestarting) is expected back: its node is up (the host still
	// refuses connections to the speaker's port rather than staying
	// silent) and the restart grace (Options.RestartGrace) has not run
	// out. The planner keeps the node's VIPs on it meanwhile.
	Restarting bool
	// DataPlane is the node's data-plane health as the speaker last
	// reported it (Report.data_plane); nil: unknown, taken as ready.
	DataPlane *speakerv1.DataPlane
	// Conflicts maps the VIPs the speaker found in use by another host
	// (VIPStatus CONFLICT) to that host's hardware address.
	Conflicts map[string]string
	// Claimed maps the VIPs the speaker announces (or YIELDED) that
	// another host claimed since to that host's hardware address
	// (VIPStatus.claimed_by).
	Claimed map[string]string
	// Yielded lists the VIPs the speaker gave up on its own while cut off
	// from the CCM (VIPStatus YIELDED); sorted.
	Yielded []netip.Addr
	// MACs are the hardware addresses of the speaker's interfaces, as it
	// reported them: a claim from one of them is a speaker's, not another
	// host's.
	MACs []string
}

// Has reports whether the speaker has capability c.
func (s State) Has(c string) bool { return slices.Contains(s.Capabilities, c) }

// Manager runs one session per speaker. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  klog.Logger
	ctx  context.Context

	mu       sync.Mutex
	sessions map[string]*session
	bgp      map[string]*speakerv1.BGPConfig // each node's BGP set-up, kept for sessions not made yet
	onChange []func(node string)
	onBGP    []func(node string)
	wg       sync.WaitGroup

	ready     chan struct{}
	readyOnce sync.Once

	// interval is the heartbeat interval of every stream now (see
	// repaceLocked), a time.Duration.
	interval atomic.Int64

	// dhcpSeq numbers DHCP exchanges and dhcpWait holds those awaiting a
	// result (dhcp.go); guarded by mu.
	dhcpSeq  uint64
	dhcpWait map[uint64]dhcpWaiter

	// heartbeatsSent and reportsReceived count the messages of every
	// stream (see Traffic).
	heartbeatsSent, reportsReceived atomic.Uint64
}

// Traffic returns the heartbeats this Manager wrote and the reports it
// read, on all streams, since it started.
func (m *Manager) Traffic() (heartbeats, reports uint64) {
	return m.heartbeatsSent.Load(), m.reportsReceived.Load()
}

// New returns a Manager; sessions start as nodes are added with SetNode and
// all end when ctx does (when this CCM stops leading).
func New(ctx context.Context, opts Options) *Manager {
	if opts.Port == 0 {
		opts.Port = speakerv1.DefaultPort
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Misses <= 0 {
		opts.Misses = DefaultMisses
	}
	if opts.HeartbeatRate == 0 {
		opts.HeartbeatRate = DefaultHeartbeatRate
	}
	if opts.RestartGrace <= 0 {
		opts.RestartGrace = DefaultRestartGrace
	}
	m := &Manager{opts: opts, ctx: ctx, log: klog.FromContext(ctx).WithName("speakers"), sessions: map[string]*session{}, bgp: map[string]*speakerv1.BGPConfig{}, ready: make(chan struct{})}
	m.repaceLocked()
	managerMetrics.Set(m.collectMetrics)
	return m
}

// OnChange registers fn to be called (without locks held, from a session's
// goroutine) when a speaker's connection, health or failed VIPs changed. It
// must not block.
func (m *Manager) OnChange(fn func(node string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onChange = append(m.onChange, fn)
}

// OnBGPChange registers fn to be called (like OnChange's) when the BGP
// sessions a speaker reports changed: their states, and the routes they
// advertise, which change with every BGP VIP. OnChange does not fire for
// those: a planner that re-planned every VIP on each would do O(VIPs) work
// per node for every BGP Service created.
func (m *Manager) OnBGPChange(fn func(node string)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onBGP = append(m.onBGP, fn)
}

func (m *Manager) bgpChanged(node string) { m.call(&m.onBGP, node) }

func (m *Manager) changed(node string) { m.call(&m.onChange, node) }

// call calls the functions registered in *fns with node, without the
// lock held.
func (m *Manager) call(fns *[]func(string), node string) {
	m.mu.Lock()
	list := slices.Clone(*fns)
	m.mu.Unlock()
	for _, fn := range list {
		fn(node)
	}
}

// SetReady lets sessions send their snapshots. Until then they connect and
// record the speakers' first reports (what each announces now) but send
// nothing, so a new leader never withdraws VIPs before it has planned.
func (m *Manager) SetReady() { m.readyOnce.Do(func() { close(m.ready) }) }

func (m *Manager) isReady() bool {
	select {
	case <-m.ready:
		return true
	default:
		return false
	}
}

// SetNode adds a speaker at addr, or moves it to a new address.
func (m *Manager) SetNode(node string, addr netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s != nil {
		if s.addr != addr {
			s.log.Info("Speaker address changed", "address", addr)
			s.addr = addr
			s.redial = true
			s.poke()
		}
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	s = &session{
		m: m, node: node, addr: addr, cancel: cancel,
		log:     m.log.WithValues("node", node),
		desired: map[string]*speakerv1.Announcement{},
		dirty:   map[string]bool{},
		oddKeys: map[string]bool{},
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}),
		state:   State{Problem: "not connected yet", Since: time.Now()},
		bgp:     m.bgp[node],
		logs:    rate.NewLimiter(logRate, logBurst),
		dhcpOut: make(chan *speakerv1.DHCPExchange, dhcpQueue),
	}
	s.setPeers(s.bgp)
	m.sessions[node] = s
	m.repaceLocked()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run(ctx)
	}()
}

// drainTimeout bounds how long RemoveNode's session waits for the speaker
// to confirm it withdrew everything.
const drainTimeout = 3 * time.Second

// RemoveNode ends the session with node's speaker (its Node was deleted).
// A connected speaker is first told to withdraw everything; the session
// closes once it confirms, or after drainTimeout.
func (m *Manager) RemoveNode(node string) {
	m.mu.Lock()
	s := m.sessions[node]
	delete(m.sessions, node)
	if s == nil {
		m.mu.Unlock()
		return
	}
	m.repaceLocked()
	peers := s.bgp.GetPeers()
	connected := s.state.Connected && m.isReady()
	if connected {
		for a := range s.desired {
			s.dirty[a] = true
		}
		for a := range s.state.Announcing.All() {
			s.dirty[a.String()] = true
		}
		clear(s.desired)
		if s.bgp != nil {
			s.bgp, s.bgpDirty = nil, true // close its BGP sessions too
		}
		s.draining = true
		s.poke()
	}
	m.mu.Unlock()
	deleteNodeSeries(node, peers)
	if !connected {
		s.cancel()
		return
	}
	s.log.Info("Node deleted: telling its speaker to withdraw every VIP")
	go func() {
		select {
		case <-s.drained:
		case <-time.After(drainTimeout):
			s.log.Info("Speaker of a deleted node did not confirm its withdrawals in time; closing its stream", "timeout", drainTimeout)
		}
		s.cancel()
	}()
}

// Nodes returns the nodes with a session.
func (m *Manager) Nodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.sessions))
}

// View is State without its copies: its lists and maps are the
// Manager's own, to be read and never modified. That is safe because the
// Manager never changes them in place: a report replaces each whole, and
// Announcing is an AddrSet, which nothing modifies (a report's patch makes
// a new set that shares the unchanged chunks of the old). For
// readers of every node's state on every change (the planner's gather),
// where State's copies cost O(nodes) allocations per Service.
func (m *Manager) View(node string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return State{Problem: "no speaker session"}, false
	}
	return s.state, true
}

// State returns what is known of node's speaker.
func (m *Manager) State(node string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return State{Problem: "no speaker session"}, false
	}
	st := s.state
	// Announcing is immutable: shared, not copied.
	st.Initial = slices.Clone(st.Initial)
	st.Failed = maps.Clone(st.Failed)
	st.Capabilities = slices.Clone(st.Capabilities)
	st.BGPSessions = slices.Clone(st.BGPSessions)
	st.Conflicts = maps.Clone(st.Conflicts)
	st.Claimed = maps.Clone(st.Claimed)
	st.Yielded = slices.Clone(st.Yielded)
	st.MACs = slices.Clone(st.MACs)
	return st, true
}

// SetBGP sets node's BGP set-up (nil: no sessions), also before the
// node's session exists. Only this speaker is sent an update, and only
// when the set-up changed.
func (m *Manager) SetBGP(node string, cfg *speakerv1.BGPConfig) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cfg == nil {
		delete(m.bgp, node)
	} else {
		m.bgp[node] = cfg
	}
	s := m.sessions[node]
	if s == nil || s.draining || proto.Equal(s.bgp, cfg) {
		return
	}
	deletePeerSeries(node, slices.DeleteFunc(slices.Clone(s.bgp.GetPeers()), func(p *speakerv1.BGPPeer) bool {
		return slices.ContainsFunc(cfg.GetPeers(), func(q *speakerv1.BGPPeer) bool { return q.GetAddress() == p.GetAddress() })
	}))
	s.setPeers(cfg)
	s.bgp = cfg
	s.bgpDirty = true
	s.poke()
}

// Assign makes node's speaker announce a. Only this speaker is sent an
// update.
func (m *Manager) Assign(node string, a *speakerv1.Announcement) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil || s.draining {
		return
	}
	if old := s.desired[a.GetAddress()]; old != nil && proto.Equal(old, a) {
		return
	}
	key := a.GetAddress()
	s.desired[key] = a
	s.dirty[key] = true
	if addr, err := netip.ParseAddr(key); err == nil && addr.String() != key {
		s.oddKeys[key] = true
	}
	s.poke()
}

// Resend sends node's speaker its announcement of addr again, unchanged
// (nothing when addr is not assigned to it). A speaker acts on some of an
// announcement's fields only when it receives one: a probe is run when it
// is asked for and the VIP was claimed since the speaker began answering
// for it, so a new claim needs a new instruction even when the
// announcement already asked for a probe.
func (m *Manager) Resend(node, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sessions[node]; s != nil {
		s.resendLocked(addr)
	}
}

// resendLocked sends the speaker its announcement of addr again, if it is
// desired (see Resend); m.mu is held.
func (s *session) resendLocked(addr string) {
	if s.draining || s.desired[addr] == nil {
		return
	}
	s.dirty[addr] = true
	s.poke()
}

// Unassign makes node's speaker withdraw addr. Only this speaker is sent an
// update; the speaker's reports tell when it applied it (State.Applied).
func (m *Manager) Unassign(node, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return
	}
	if _, ok := s.desired[addr]; !ok && !announces(s.state, addr) {
		return // neither wanted nor announced
	}
	delete(s.desired, addr)
	s.dirty[addr] = true
	s.poke()
}

// Wait blocks until every session stopped (after ctx ended).
func (m *Manager) Wait() { m.wg.Wait() }

// announces reports whether st's speaker announces the VIP addr, given
// in canonical form.
func announces(st State, addr string) bool {
	a, err := netip.ParseAddr(addr)
	return err == nil && a.String() == addr && st.Announcing.Holds(a)
}
