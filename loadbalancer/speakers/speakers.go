// Package speakers keeps the CCM leader's control channel to every node's
// speaker: one gRPC stream per speaker, a full snapshot of the speaker's
// desired VIPs when the stream (re)connects, then versioned updates that
// carry only what changed, and heartbeats that detect a silently lost node.
// Every snapshot and update carries the leader's term, so that speakers
// refuse a deposed leader.
package speakers

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"

	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

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
