package speakers

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
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
	wd.start(ctx, cancel, addr)

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
