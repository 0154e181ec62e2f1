// Package speakers keeps the CCM leader's control channel to every node's
// speaker: one gRPC stream per speaker, a full snapshot of the speaker's
// desired VIPs when the stream (re)connects, then versioned updates that
// carry only what changed, and heartbeats that detect a silently lost node.
package speakers

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// Defaults for Options.
const (
	DefaultPort      = 7473
	DefaultHeartbeat = 200 * time.Millisecond
	DefaultMisses    = 5
)

// Options configures a Manager.
type Options struct {
	// Port is where speakers listen.
	Port int
	// Heartbeat is the interval between heartbeats; a speaker that answers
	// nothing for Heartbeat×Misses is declared lost.
	Heartbeat time.Duration
	Misses    int
	// TLS is the client configuration (CCM certificate, speaker
	// verification).
	TLS *tls.Config
	// Leader names this CCM instance in the speakers' logs.
	Leader string
	// OnChange is called (without locks held, from the session's
	// goroutine) when a speaker's connection or health changed. It must not
	// block.
	OnChange func(node string)
	// Dial overrides how connections are made (tests).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
}

// State is what the CCM knows about one speaker.
type State struct {
	// Connected is true once the speaker's first report arrived on the
	// current stream, until the stream fails.
	Connected bool
	// Healthy is true while the speaker reports every interface usable.
	Healthy bool
	// Problem explains !Connected or !Healthy.
	Problem string
	// Announcing lists the VIPs the speaker last reported announcing.
	Announcing []netip.Addr
	// Initial lists the VIPs the speaker announced when the current (or
	// last) stream opened, before any instruction on it.
	Initial []netip.Addr
	// Failed maps VIPs the speaker could not announce to its error.
	Failed map[string]string
	// Applied is the version the speaker confirmed; Sent the newest sent.
	Applied, Sent uint64
	// Reported is true once the speaker answered at least once since the
	// Manager started, even if it is disconnected now.
	Reported bool
}

// Manager runs one session per speaker. It is safe for concurrent use.
type Manager struct {
	opts Options
	log  klog.Logger
	ctx  context.Context

	mu       sync.Mutex
	sessions map[string]*session
	wg       sync.WaitGroup

	ready     chan struct{}
	readyOnce sync.Once
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

// New returns a Manager; sessions start as nodes are added with SetNode.
func New(ctx context.Context, opts Options) *Manager {
	if opts.Port == 0 {
		opts.Port = DefaultPort
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = DefaultHeartbeat
	}
	if opts.Misses <= 0 {
		opts.Misses = DefaultMisses
	}
	if opts.OnChange == nil {
		opts.OnChange = func(string) {}
	}
	m := &Manager{opts: opts, ctx: ctx, log: klog.FromContext(ctx).WithName("speakers"), sessions: map[string]*session{}, ready: make(chan struct{})}
	managerMetrics.Set(m.collectMetrics)
	return m
}

type session struct {
	m    *Manager
	node string
	log  klog.Logger

	// guarded by m.mu
	addr       netip.Addr
	desired    map[string]*speakerv1.Announcement
	dirty      map[string]bool
	state      State
	wake       chan struct{}
	cancel     context.CancelFunc
	redial     bool
	gen        uint64 // counts streams; reports of older streams are dropped
	lastReport time.Time
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
		wake:    make(chan struct{}, 1),
		state:   State{Problem: "not connected yet"},
	}
	m.sessions[node] = s
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run(ctx)
	}()
}

// RemoveNode stops the session with node's speaker.
func (m *Manager) RemoveNode(node string) {
	m.mu.Lock()
	s := m.sessions[node]
	delete(m.sessions, node)
	m.mu.Unlock()
	if s != nil {
		s.cancel()
	}
}

// Nodes returns the nodes with a session.
func (m *Manager) Nodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.sessions))
	for n := range m.sessions {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
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
	st.Announcing = slices.Clone(st.Announcing)
	st.Initial = slices.Clone(st.Initial)
	st.Failed = maps.Clone(st.Failed)
	return st, true
}

// Assign makes node's speaker announce a. Only this speaker is sent an
// update.
func (m *Manager) Assign(node string, a *speakerv1.Announcement) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return
	}
	if old := s.desired[a.GetAddress()]; old != nil && proto.Equal(old, a) {
		return
	}
	s.desired[a.GetAddress()] = a
	s.dirty[a.GetAddress()] = true
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
	if _, ok := s.desired[addr]; !ok && !slices.ContainsFunc(s.state.Announcing, func(a netip.Addr) bool { return a.String() == addr }) {
		return // neither wanted nor announced
	}
	delete(s.desired, addr)
	s.dirty[addr] = true
	s.poke()
}

// Wait blocks until every session stopped (after ctx ended).
func (m *Manager) Wait() { m.wg.Wait() }

// poke wakes the session's sender; m.mu is held.
func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *session) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		start := time.Now()
		err := s.connect(ctx)
		changed := s.setDown(err)
		if changed {
			s.m.opts.OnChange(s.node)
		}
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 5*time.Second {
			backoff = 100 * time.Millisecond // it worked for a while
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, 2*time.Second)
	}
}

// setDown records a failed stream; it reports whether the speaker was up.
func (s *session) setDown(err error) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	was := s.state.Connected
	s.state.Connected = false
	s.state.Healthy = false
	problem := "disconnected"
	if err != nil {
		problem = err.Error()
	}
	s.state.Problem = problem
	if was {
		silent := time.Since(s.lastReport)
		lossDetection.Observe(silent.Seconds())
		s.log.Info("Speaker lost", "reason", problem, "lastReport", silent.Round(time.Millisecond))
	} else {
		s.log.V(2).Info("Cannot reach speaker", "reason", problem)
	}
	return was
}

// connect runs one stream until it fails.
func (s *session) connect(ctx context.Context) error {
	s.m.mu.Lock()
	addr := net.JoinHostPort(s.addr.String(), strconv.Itoa(s.m.opts.Port))
	s.redial = false
	s.gen++
	gen := s.gen
	s.m.mu.Unlock()
	defer func() {
		s.m.mu.Lock()
		s.gen++ // drop reports still in flight
		s.m.mu.Unlock()
	}()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	dialOpts := []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(s.m.opts.TLS))}
	if s.m.opts.Dial != nil {
		dialOpts = append(dialOpts, grpc.WithContextDialer(s.m.opts.Dial))
	}
	conn, err := grpc.NewClient(addr, dialOpts...)
	if err != nil {
		return fmt.Errorf("dialing %s: %w", addr, err)
	}
	defer conn.Close()

	// The watchdog ends the stream when the speaker is silent too long: at
	// first while connecting, then between reports.
	limit := s.m.opts.Heartbeat * time.Duration(s.m.opts.Misses)
	var seenMu sync.Mutex
	lastSeen := time.Now().Add(max(2*time.Second, limit) - limit) // grace for the TLS handshake
	seen := func() {
		seenMu.Lock()
		lastSeen = time.Now()
		seenMu.Unlock()
	}
	go func() {
		t := time.NewTicker(s.m.opts.Heartbeat / 4)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !s.m.isReady() {
				seen() // no heartbeats before the snapshot
				continue
			}
			seenMu.Lock()
			silent := time.Since(lastSeen)
			seenMu.Unlock()
			if silent > limit {
				cancel(fmt.Errorf("speaker at %s silent for %s (heartbeat %s × %d misses)", addr, silent.Round(time.Millisecond), s.m.opts.Heartbeat, s.m.opts.Misses))
				return
			}
		}
	}()

	stream, err := speakerv1.NewSpeakerClient(conn).Sync(ctx)
	if err != nil {
		return cause(ctx, fmt.Errorf("opening stream to %s: %w", addr, err))
	}
	first, err := stream.Recv()
	if err != nil {
		return cause(ctx, fmt.Errorf("waiting for the first report from %s: %w", addr, err))
	}
	seen()

	changed := s.record(gen, first)
	s.m.mu.Lock()
	s.state.Initial = slices.Clone(s.state.Announcing)
	s.m.mu.Unlock()
	select {
	case <-s.m.ready:
	case <-ctx.Done():
		return cause(ctx, ctx.Err())
	}
	seen()

	// The snapshot: everything desired now, version 1 on this stream.
	s.m.mu.Lock()
	snap := &speakerv1.Snapshot{Version: 1, Leader: s.m.opts.Leader}
	for _, a := range slices.Sorted(maps.Keys(s.desired)) {
		snap.Announcements = append(snap.Announcements, s.desired[a])
	}
	clear(s.dirty)
	s.state.Sent = 1
	s.state.Applied = 0
	s.m.mu.Unlock()
	if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}}); err != nil {
		return cause(ctx, fmt.Errorf("sending snapshot to %s: %w", addr, err))
	}
	if changed {
		s.m.opts.OnChange(s.node)
	}

	recvErr := make(chan error, 1)
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			seen()
			if s.record(gen, r) {
				s.m.opts.OnChange(s.node)
			}
		}
	}()

	hb := time.NewTicker(s.m.opts.Heartbeat)
	defer hb.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return cause(ctx, ctx.Err())
		case err := <-recvErr:
			return cause(ctx, fmt.Errorf("stream from %s: %w", addr, err))
		case <-hb.C:
			seq++
			if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: &speakerv1.Heartbeat{Seq: seq}}}); err != nil {
				return cause(ctx, fmt.Errorf("sending heartbeat to %s: %w", addr, err))
			}
		case <-s.wake:
			upd, redial := s.update()
			if redial {
				return errors.New("speaker address changed")
			}
			if upd == nil {
				continue
			}
			if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: upd}}); err != nil {
				return cause(ctx, fmt.Errorf("sending update to %s: %w", addr, err))
			}
		}
	}
}

// update builds the next Update from the dirty VIPs.
func (s *session) update() (*speakerv1.Update, bool) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.redial {
		return nil, true
	}
	if len(s.dirty) == 0 {
		return nil, false
	}
	s.state.Sent++
	u := &speakerv1.Update{Version: s.state.Sent}
	for _, a := range slices.Sorted(maps.Keys(s.dirty)) {
		if d := s.desired[a]; d != nil {
			u.Announce = append(u.Announce, d)
		} else {
			u.Withdraw = append(u.Withdraw, a)
		}
	}
	clear(s.dirty)
	return u, false
}

// record takes in a report of stream gen; it reports whether connection or
// health changed.
func (s *session) record(gen uint64, r *speakerv1.Report) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if gen != s.gen {
		return false
	}
	s.lastReport = time.Now()
	before := s.state
	if r.GetAppliedVersion() > s.state.Applied {
		s.state.Applied = r.GetAppliedVersion()
	}
	failedChanged := false
	if r.GetFull() {
		s.state.Announcing = nil
		failed := map[string]string{}
		for _, v := range r.GetVips() {
			if a, err := netip.ParseAddr(v.GetAddress()); err == nil && v.GetState() == speakerv1.VIPStatus_ANNOUNCING {
				s.state.Announcing = append(s.state.Announcing, a)
			}
			if v.GetState() == speakerv1.VIPStatus_FAILED {
				failed[v.GetAddress()] = v.GetError()
				if _, known := s.state.Failed[v.GetAddress()]; !known {
					s.log.Error(errors.New(v.GetError()), "Speaker cannot announce VIP", "address", v.GetAddress())
				}
			}
		}
		failedChanged = !maps.Equal(failed, s.state.Failed)
		s.state.Failed = failed
		// Healthy while the default interface works (older speakers mark
		// none: then every interface counts).
		healthy, problem, hasDefault := true, "", false
		for _, i := range r.GetInterfaces() {
			hasDefault = hasDefault || i.GetDefault()
		}
		for _, i := range r.GetInterfaces() {
			if i.GetError() != "" && (i.GetDefault() || !hasDefault) {
				healthy, problem = false, fmt.Sprintf("interface %q: %s", i.GetName(), i.GetError())
				break
			}
		}
		s.state.Healthy = healthy
		s.state.Problem = problem
	}
	s.state.Connected = true
	s.state.Reported = true
	if !before.Connected {
		s.log.Info("Speaker connected", "healthy", s.state.Healthy, "announcing", len(s.state.Announcing))
		return true
	}
	if before.Healthy != s.state.Healthy {
		s.log.Info("Speaker health changed", "healthy", s.state.Healthy, "problem", s.state.Problem)
		return true
	}
	return failedChanged
}

func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}
