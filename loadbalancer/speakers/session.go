package speakers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
)

// session is the control channel to one speaker. Its stream goes through
// phases, each a function below: dial, wait for the first report (what the
// speaker announces now), wait until the leader is ready, send the
// snapshot, then send updates and heartbeats while receiving reports, until
// the stream fails; then reconnect.
type session struct {
	m    *Manager
	node string
	log  klog.Logger

	// guarded by m.mu
	addr    netip.Addr
	desired map[string]*speakerv1.Announcement
	dirty   map[string]bool
	// oddKeys are the keys of desired (and so of dirty) that spell their
	// address in other than its canonical form (see knowsLocked).
	oddKeys    map[string]bool
	bgp        *speakerv1.BGPConfig // the speaker's BGP set-up; nil: none
	bgpDirty   bool                 // bgp changed since the last instruction
	state      State
	wake       chan struct{}
	cancel     context.CancelFunc
	redial     bool
	draining   bool          // the Node was deleted: withdraw everything, then stop
	drained    chan struct{} // closed once a draining speaker confirmed
	gen        uint64        // counts streams; reports of older streams are dropped
	taken      uint64        // the stream whose first report was taken in
	lastReport time.Time
	ignored    uint64 // instructions the speaker said it ignored
	// restartUntil is when the restart grace of a restarting speaker
	// runs out (see State.Restarting).
	restartUntil time.Time

	// peers are the addresses of the BGP peers configured on the speaker
	// (a copy, replaced by SetBGP): its reports are summarized without
	// m.mu.
	peers atomic.Pointer[map[string]bool]
	// logs paces the log lines the speaker's reports cause (nil: no
	// limit); suppressed counts the lines it held back.
	logs       *rate.Limiter
	suppressed atomic.Uint64

	// dhcpOut holds the DHCP exchanges to send (dhcp.go); nil in tests
	// that build sessions by hand.
	dhcpOut chan *speakerv1.DHCPExchange
}

// setPeers records the peers of cfg as those the speaker may report: as
// configured, and in the canonical form a speaker reports them in.
func (s *session) setPeers(cfg *speakerv1.BGPConfig) {
	peers := map[string]bool{}
	for _, p := range cfg.GetPeers() {
		peers[p.GetAddress()] = true
		if a, err := netip.ParseAddr(p.GetAddress()); err == nil {
			peers[a.String()] = true
		}
	}
	s.peers.Store(&peers)
}

// poke wakes the session's sender; m.mu is held.
func (s *session) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Reconnection backoff: a speaker that comes back (or a CCM whose network
// comes back) is reconnected within maxBackoff.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = time.Second
)

func (s *session) run(ctx context.Context) {
	backoff := minBackoff
	for ctx.Err() == nil {
		s.awaitRestart(ctx) // paces the dials while the speaker restarts
		if ctx.Err() != nil {
			return
		}
		start := time.Now()
		err := s.stream(ctx)
		if errors.Is(err, errEnrolled) || errors.Is(err, errReattest) || errors.Is(err, errRetrust) || errors.Is(err, errExpired) {
			continue // reconnect at once: with the node certificate, for a current token, with a CCM certificate the speaker trusts, or to enroll again
		}
		if errors.Is(err, errRestarting) && ctx.Err() == nil {
			if s.startRestart(err) {
				s.m.changed(s.node)
			}
			backoff = minBackoff
			continue
		}
		if s.setDown(err) {
			s.m.changed(s.node)
		}
		if ctx.Err() != nil {
			return
		}
		if on, _, _ := s.restarting(); on {
			continue // its new process is not serving yet: awaitRestart paces
		}
		if time.Since(start) > 5*time.Second {
			backoff = minBackoff // it worked for a while
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, maxBackoff)
	}
}

// stream runs one stream through its phases until it fails.
func (s *session) stream(ctx context.Context) error {
	gen, addr := s.begin()
	defer s.end()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	peer := &pki.Peer{}
	wd := newWatchdog(s.m.Heartbeat(), s.m.opts.Misses, s.m.isReady)
	conn, err := s.dial(addr, peer, &wd.lastRead)
	if err != nil {
		return err
	}
	defer conn.Close()
	go wd.run(ctx, cancel, addr)

	limit := s.reportLimit()
	stream, err := speakerv1.NewSpeakerClient(conn).Sync(ctx, grpc.MaxCallRecvMsgSize(limit), grpc.ForceCodecV2(s.reportCodec(gen)))
	if err != nil {
		return cause(ctx, fmt.Errorf("opening stream to %s: %w", addr, err))
	}
	first, err := stream.Recv()
	if err != nil {
		return cause(ctx, fmt.Errorf("waiting for the first report from %s: %w", addr, err))
	}
	wd.seen()
	if !peer.Enrolled() {
		return s.enroll(ctx, stream, first, peer, addr, wd)
	}
	if n := first.GetNode(); n != "" && n != s.node {
		return fmt.Errorf("speaker at %s, authenticated as node %q, says it is node %q", addr, s.node, n)
	}
	if peer.AttestationPending() {
		if err := s.attestPending(ctx, stream, first, peer, addr, wd); err != nil {
			return err
		}
	}
	rn := s.newRenewal(peer, first)
	defer rn.stop()
	if err := s.m.opts.Identity.Check(s.node, peer); err != nil {
		return err // its pod went between the handshake and now
	}
	changed := s.takeFirstReport(gen, first)
	if err := s.awaitReady(ctx, wd); err != nil {
		return err
	}
	if err := s.sendSnapshot(ctx, stream, addr, wd.interval()); err != nil {
		return err
	}
	if in := rn.bundle(); in != nil {
		if err := s.maySend(ctx); err != nil {
			return err
		}
		if err := stream.Send(in); err != nil {
			return cause(ctx, fmt.Errorf("sending the CA bundle to %s: %w", addr, err))
		}
	}
	if changed {
		s.m.changed(s.node)
	}
	recvErr := make(chan error, 1)
	go s.receive(ctx, stream, gen, wd, newReportLimiter(limit), recvErr, rn)
	return s.sendLoop(ctx, stream, addr, recvErr, rn, wd)
}

// begin starts a new stream generation.
func (s *session) begin() (uint64, string) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	s.redial = false
	s.gen++
	return s.gen, net.JoinHostPort(s.addr.String(), strconv.Itoa(s.m.opts.Port))
}

// end drops the reports of the stream still in flight.
func (s *session) end() {
	s.m.mu.Lock()
	s.gen++
	s.m.mu.Unlock()
}

// connBuffer is the size of each speaker connection's read and write
// buffers. The CCM holds one connection per node: gRPC's default 32 KiB
// each were about 52 MB of the CCM's live heap at 1,000 nodes, for
// heartbeats and reports of changes of a few hundred bytes (a snapshot
// takes a few more system calls).
const connBuffer = 8 << 10

// dial makes the stream's connection; its reads are noted in lastRead
// (see readClock).
func (s *session) dial(addr string, peer *pki.Peer, lastRead *atomic.Int64) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(s.m.opts.Identity.ClientTLSConfig(s.node, peer))),
		grpc.WithInitialWindowSize(speakerv1.StreamWindow), grpc.WithInitialConnWindowSize(speakerv1.StreamWindow),
		grpc.WithReadBufferSize(connBuffer), grpc.WithWriteBufferSize(connBuffer),
		grpc.WithContextDialer(clockedDialer(s.m.opts.Dial, lastRead)),
	}
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	return conn, nil
}

// takeFirstReport records the speaker's first report: what it announces
// before any instruction on this stream. It reports whether the speaker's
// state changed.
func (s *session) takeFirstReport(gen uint64, first *speakerv1.Report) bool {
	changed := s.record(gen, first)
	s.m.mu.Lock()
	s.state.Initial = s.state.Announcing.Slice()
	s.m.mu.Unlock()
	return changed
}

// awaitReady waits until the leader has planned.
func (s *session) awaitReady(ctx context.Context, wd *watchdog) error {
	select {
	case <-s.m.ready:
	case <-ctx.Done():
		return cause(ctx, ctx.Err())
	}
	wd.seen()
	return nil
}

// sendSnapshot sends everything desired now, as version 1 of this stream.
// It names the stream's heartbeat interval.
func (s *session) sendSnapshot(ctx context.Context, stream speakerv1.Speaker_SyncClient, addr string, interval time.Duration) error {
	s.m.mu.Lock()
	snap := &speakerv1.Snapshot{Version: 1, Leader: s.m.opts.Leader, Term: s.m.opts.Term, Bgp: s.bgp, HeartbeatIntervalMs: uint32(interval.Milliseconds()), VipDeltas: true}
	for _, a := range slices.Sorted(maps.Keys(s.desired)) {
		snap.Announcements = append(snap.Announcements, s.desired[a])
	}
	clear(s.dirty)
	s.bgpDirty = false
	s.state.Sent = 1
	s.state.Applied = 0
	s.m.mu.Unlock()
	if err := s.maySend(ctx); err != nil {
		return err
	}
	if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}}); err != nil {
		return cause(ctx, fmt.Errorf("sending snapshot to %s: %w", addr, err))
	}
	return nil
}

// reportLimit is the largest report the speaker may send on a new
// stream (see reportLimit): sized from its VIPs, or all allocated VIPs,
// and its peers. Once the stream's first report is taken in, the
// speaker's reports are held to its node's limit (see nodeLimit).
func (s *session) reportLimit() int {
	vips := defaultReportVIPs
	if a := s.m.opts.Allocated; a != nil {
		vips = a.Held()
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return reportLimit(max(vips, len(s.desired)+len(s.dirty)), len(s.bgp.GetPeers()))
}

// nodeLimit is the largest report the speaker may send on stream gen
// now (see nodeReportLimit): sized from its node's VIPs (nodeVIPCount) and peers
// once the stream's first report was taken in; until then, no limit but
// the stream's. It takes m.mu for a moment: the node's VIPs are placed
// before an update names them, so a legitimate report fits.
func (s *session) nodeLimit(gen uint64) int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.taken != gen {
		return math.MaxInt
	}
	return nodeReportLimit(s.nodeVIPCount(), len(s.bgp.GetPeers()))
}

// mergeLimit is how many VIPs reports merged into one (see merge) may
// name: those the node holds, and the headroom.
func (s *session) mergeLimit() int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.nodeVIPCount() + nodeVIPHeadroom
}

// receive records the speaker's reports until the stream fails. lim
// paces them (nil: no limit): a report that comes too soon after others
// is merged into the next one. A report's enrollment token (the answer to
// an Attest) goes to rn before any merging.
func (s *session) receive(ctx context.Context, stream speakerv1.Speaker_SyncClient, gen uint64, wd *watchdog, lim *reportLimiter, errs chan<- error, rn *renewal) {
	var pending *speakerv1.Report
	for {
		r, err := stream.Recv()
		if err != nil {
			errs <- err
			return
		}
		wd.seen()
		s.m.reportsReceived.Add(1)
		reportsReceived.Inc()
		waited, err := lim.read(ctx, r)
		if err != nil {
			errs <- err
			return
		}
		if waited > 0 {
			wd.seen() // the pause is the CCM's, not the speaker's silence
		}
		if e := r.GetEnrollment(); e != nil {
			rn.offerToken(e.GetToken()) // the answer to an Attest
		}
		s.takeDHCPResults(r) // not held back by merging
		merged := merge(pending, r)
		if pending != nil && len(merged.GetVips())+len(merged.GetVipsGone()) > s.mergeLimit() {
			errs <- errMergeTooLarge
			return
		}
		if !lim.take() {
			if pending == nil {
				s.emit([]logLine{{msg: "Speaker reports faster than the CCM takes them in; merging its reports", kv: []any{"reportsPerSecond", reportRate}}})
			}
			pending = merged
			reportItemsIgnored.WithLabelValues(s.node, string(ignoredRateLimited)).Inc()
			continue
		}
		pending = nil
		if s.record(gen, merged) {
			s.m.changed(s.node)
		}
	}
}

// sendLoop sends heartbeats and updates, and keeps the speaker's identity
// (rn), until the stream fails. It tells wd of every heartbeat written,
// and of a new interval (see repace).
func (s *session) sendLoop(ctx context.Context, stream speakerv1.Speaker_SyncClient, addr string, recvErr <-chan error, rn *renewal, wd *watchdog) error {
	hb := time.NewTicker(wd.interval())
	defer hb.Stop()
	var seq uint64
	// takes: whether the speaker takes Heartbeat.interval_ms (its
	// capabilities, fixed for the stream), asked once.
	takes := s.takesInterval()
	for {
		var (
			in  *speakerv1.Instruction
			err error
		)
		select {
		case <-rn.rotated:
			in = rn.onRotated()
		case <-rn.revoked:
			err = rn.onRevoked()
		case <-rn.due.C:
			in, err = rn.onDue(ctx)
		case token := <-rn.tokens:
			rn.onToken(ctx, token)
		case res := <-rn.results:
			in, err = rn.onResult(res)
		case <-rn.expiry.C:
			err = rn.onExpired()
		case <-ctx.Done():
			return cause(ctx, ctx.Err())
		case err := <-recvErr:
			return cause(ctx, s.streamError(addr, err))
		case <-hb.C:
			seq++
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: s.repace(seq, takes, hb, wd)}}
		case ex := <-s.dhcpOut:
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Dhcp{Dhcp: ex}}
		case <-s.wake:
			upd, redial := s.update()
			if redial {
				return errors.New("speaker address changed")
			}
			if upd == nil {
				continue
			}
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: upd}}
		}
		if err != nil {
			return err
		}
		if in == nil {
			continue
		}
		if err := s.maySend(ctx); err != nil {
			return err
		}
		wd.sendBegins()
		err = stream.Send(in)
		wd.sendEnds()
		if err != nil {
			// The speaker may have ended the stream (restarting, shutting
			// down): its reason comes with Recv's error, not Send's.
			select {
			case rerr := <-recvErr:
				return cause(ctx, s.streamError(addr, rerr))
			case <-time.After(s.m.LossLimit()):
			case <-ctx.Done():
			}
			return cause(ctx, fmt.Errorf("sending to %s: %w", addr, err))
		}
		if in.GetHeartbeat() != nil {
			wd.sentHeartbeat()
			s.m.heartbeatsSent.Add(1)
			heartbeatsSent.Inc()
		}
	}
}

// maySend says whether an instruction may go out: nothing does once this
// CCM stopped leading, or may have.
func (s *session) maySend(ctx context.Context) error {
	if ctx.Err() != nil {
		return cause(ctx, ctx.Err())
	}
	if s.m.opts.Valid != nil {
		if err := s.m.opts.Valid(); err != nil {
			return err
		}
	}
	return nil
}

// errRetrust ends a stream the speaker closed because the CCM certificate
// its connection was opened with is from a CA it no longer trusts (the end
// of a rotation's overlap): the session reconnects at once, presenting the
// certificate of a CA the speaker trusts, without declaring it lost.
var errRetrust = errors.New("reconnecting with a CCM certificate the speaker trusts")

// streamError explains why the speaker ended the stream: it may follow a
// newer leader, or be shutting down (it withdrew every VIP).
func (s *session) streamError(addr string, err error) error {
	switch speakerv1.StreamErrorReason(err) {
	case speakerv1.ReasonFenced:
		s.m.mu.Lock()
		s.state.Fenced = true
		s.m.mu.Unlock()
		s.log.Info("Speaker follows a newer CCM leader and refused this one", "err", err.Error())
		return fmt.Errorf("speaker at %s refused this CCM: %w", addr, err)
	case speakerv1.ReasonRestarting:
		s.m.mu.Lock()
		restart := s.state.Has(speakerv1.CapabilityRestart)
		s.m.mu.Unlock()
		if restart {
			return fmt.Errorf("speaker at %s is restarting: %w: %w", addr, errRestarting, err)
		}
	case speakerv1.ReasonShuttingDown:
		s.m.mu.Lock()
		s.state.Stopped = true
		s.m.mu.Unlock()
		return fmt.Errorf("speaker at %s shut down and withdrew its VIPs: %w", addr, err)
	case speakerv1.ReasonUntrusted:
		s.log.Info("Speaker no longer trusts the CA of the certificate this connection was opened with; reconnecting", "err", err.Error())
		return fmt.Errorf("speaker at %s: %w: %w", addr, errRetrust, err)
	}
	return fmt.Errorf("stream from %s: %w", addr, err)
}

// update builds the next Update from the dirty VIPs.
func (s *session) update() (*speakerv1.Update, bool) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.redial {
		return nil, true
	}
	if len(s.dirty) == 0 && !s.bgpDirty {
		return nil, false
	}
	s.state.Sent++
	u := &speakerv1.Update{Version: s.state.Sent, Term: s.m.opts.Term}
	if s.bgpDirty {
		// Present replaces the set-up; present and empty closes every
		// session.
		u.Bgp = s.bgp
		if u.Bgp == nil {
			u.Bgp = &speakerv1.BGPConfig{}
		}
		s.bgpDirty = false
	}
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
		s.state.Since = time.Now()
		silent := time.Since(s.lastReport)
		lossDetection.Observe(silent.Seconds())
		s.log.Info("Speaker lost", "reason", problem, "lastReport", silent.Round(time.Millisecond))
	} else {
		s.log.V(2).Info("Cannot reach speaker", "reason", problem)
	}
	return was
}

func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// repace is the heartbeat seq: at the Manager's interval now, and saying
// so, when it changed and the speaker takes it (takes; hb and wd move to
// it); else at the stream's interval.
func (s *session) repace(seq uint64, takes bool, hb *time.Ticker, wd *watchdog) *speakerv1.Heartbeat {
	h := &speakerv1.Heartbeat{Seq: seq}
	iv := s.m.Heartbeat()
	if !takes || iv == wd.interval() {
		return h
	}
	hb.Reset(iv)
	wd.setInterval(iv)
	h.IntervalMs = uint32(iv.Milliseconds())
	return h
}

// takesInterval says whether the speaker takes Heartbeat.interval_ms.
func (s *session) takesInterval() bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.state.Has(speakerv1.CapabilityHeartbeatInterval)
}
