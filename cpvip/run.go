package cpvip

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/time/rate"

	"github.com/ironlb/ironlb/speaker/layer2"
)

// Receive bounds: datagrams accepted for verification per second (a
// handful of speakers send 10 each) and the queue to the election loop.
const (
	receiveRate  = 500
	receiveBurst = 100
	receiveQueue = 64
	// keyReload is how often the key files are checked for changes.
	keyReload = time.Second
)

// Layer2Config is a layer-2 control-plane speaker's configuration.
type Layer2Config struct {
	VIP       netip.Addr
	Interface string
	Node      string
	NodeIP    netip.Addr
	// Broadcast and Peers are where the messages go (see TransportConfig).
	Broadcast netip.Addr
	Peers     []netip.Addr
	Port      int
	KeyFiles  []string
	Readiness ReadinessConfig
}

// Speaker is a layer-2 control-plane speaker.
type Speaker struct {
	cfg  Layer2Config
	log  logr.Logger
	keys *KeyRing

	ready *Readiness
	// readyCh wakes the loop when readiness changes.
	readyCh chan struct{}

	electing atomic.Bool
	lastLoop atomic.Int64

	mu     sync.Mutex
	status Status
}

// NewSpeaker returns a layer-2 control-plane speaker; Run runs it.
func NewSpeaker(cfg Layer2Config, log logr.Logger) *Speaker {
	s := &Speaker{cfg: cfg, log: log, keys: NewKeyRing(cfg.KeyFiles, log.WithName("keys")), readyCh: make(chan struct{}, 1)}
	s.ready = NewReadiness(cfg.Readiness, log.WithName("apiserver"), func(ReadyState) {
		select {
		case s.readyCh <- struct{}{}:
		default:
		}
	})
	s.status = Status{VIP: cfg.VIP.String(), Mode: "l2", Node: cfg.Node, NodeIP: cfg.NodeIP.String(), APIServerError: "not checked yet"}
	registerMetrics(s)
	return s
}

// Status returns the speaker's current view.
func (s *Speaker) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.status
	st.Peers = append([]PeerStatus(nil), st.Peers...)
	return st
}

// received is one datagram for the loop.
type received struct {
	b  []byte
	at time.Time
}

// Run takes part in the election until ctx ends, then, if it holds the VIP,
// tells the others it released it and withdraws it. It removes a VIP left
// on lo by an earlier run before it starts.
func (s *Speaker) Run(ctx context.Context) error {
	if err := DelLocal(s.cfg.VIP); err != nil {
		return fmt.Errorf("removing a VIP left by an earlier run: %w", err)
	}
	go s.ready.Run(ctx)
	keysReady := make(chan struct{})
	go s.keys.Run(ctx, keyReload, keysReady)
	select {
	case <-ctx.Done():
		return nil
	case <-keysReady:
	}

	ifi, err := net.InterfaceByName(s.cfg.Interface)
	if err != nil {
		return fmt.Errorf("finding interface %s: %w", s.cfg.Interface, err)
	}
	resp, err := layer2.NewResponder(ifi, layer2.WithLogger(s.log.WithName("layer2")))
	if err != nil {
		return fmt.Errorf("opening the layer-2 responder on %s: %w", s.cfg.Interface, err)
	}
	defer resp.Close()
	tr, err := OpenTransport(ctx, TransportConfig{Interface: s.cfg.Interface, Port: s.cfg.Port, Broadcast: s.cfg.Broadcast, Peers: s.cfg.Peers})
	if err != nil {
		return err
	}
	defer tr.Close()

	in := make(chan received, receiveQueue)
	readErr := make(chan error, 1)
	go s.readLoop(tr, in, readErr)

	local := newLocalVIP(s.cfg.VIP, resp, s.log)
	go local.run(ctx)
	l := &loop{s: s, tr: tr, local: local, verifier: NewVerifier(s.cfg.VIP),
		el: NewElection(ElectionConfig{Node: s.cfg.Node, NodeIP: s.cfg.NodeIP}, time.Now())}
	s.electing.Store(true)
	s.log.Info("Taking part in the control-plane VIP election", "vip", s.cfg.VIP, "interface", s.cfg.Interface, "nodeIP", s.cfg.NodeIP, "port", s.cfg.Port)
	return l.run(ctx, in, readErr)
}

// readLoop hands datagrams to the loop, rate-bounded.
func (s *Speaker) readLoop(tr *Transport, in chan<- received, errc chan<- error) {
	lim := rate.NewLimiter(receiveRate, receiveBurst)
	buf := make([]byte, MaxMessageSize+1)
	for {
		n, _, err := tr.Receive(buf)
		if err != nil {
			errc <- err
			return
		}
		if !lim.Allow() {
			rejectedTotal.WithLabelValues(string(ReasonRate)).Inc()
			continue
		}
		select {
		case in <- received{b: append([]byte(nil), buf[:n]...), at: time.Now()}:
		default:
			rejectedTotal.WithLabelValues(string(ReasonRate)).Inc()
		}
	}
}

// sender sends the loop's messages (a *Transport).
type sender interface {
	Send(b []byte) error
}

// announcer answers ARP/NDP for the VIP (a *layer2.Responder).
type announcer interface {
	Announce(addr netip.Addr) error
	Withdraw(addr netip.Addr) error
	Addresses() []netip.Addr
}

// loop is the election loop's state; it belongs to one goroutine.
//
// At each event the loop decides, sends its message, and then asks
// localVIP to serve the VIP or not, which it does on its own goroutine: the
// others hear this speaker on time however long the kernel takes.
type loop struct {
	s            *Speaker
	tr           sender
	local        *localVIP
	verifier     *Verifier
	el           *Election
	lastTick     time.Time
	lastSent     time.Time
	lastReassert time.Time
	sendErr      string
}

func (l *loop) run(ctx context.Context, in <-chan received, readErr <-chan error) error {
	s := l.s
	tick := time.NewTicker(Interval)
	defer tick.Stop()
	now := time.Now()
	d := l.el.SetReady(s.ready.State().Ready, now)
	l.send(now)
	l.apply(d, now)
	for {
		s.lastLoop.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			l.shutdown()
			return nil
		case err := <-readErr:
			l.shutdown()
			return err
		case <-s.readyCh:
			now := time.Now()
			d := l.el.SetReady(s.ready.State().Ready, now)
			if d.Action != None {
				l.send(now)
			}
			l.apply(d, now)
		case r := <-in:
			l.receive(r)
		case <-tick.C:
			now := time.Now()
			// Messages already read count before silence is judged.
			l.drain(in)
			if !l.lastTick.IsZero() && now.Sub(l.lastTick) > stallAfter {
				stallsTotal.Inc()
				s.log.Info("The election loop was stalled; listening a dead interval again before any take-over", "stalled", now.Sub(l.lastTick).Round(time.Millisecond))
				l.el.Stalled(now)
			}
			l.lastTick = now
			d := l.el.Tick(now)
			l.send(now)
			l.apply(d, now)
		}
	}
}

// receive verifies one datagram and hands it to the election.
func (l *loop) receive(r received) {
	s := l.s
	m, err := l.verifier.Verify(r.b, s.keys.Keys(), r.at)
	if err != nil {
		reason := ReasonOf(err)
		rejectedTotal.WithLabelValues(string(reason)).Inc()
		s.log.V(2).Info("Dropped an election message", "reason", reason, "error", err)
		return
	}
	if m.Node == s.cfg.Node {
		return // our own broadcast, looped back
	}
	receivedTotal.Inc()
	d := l.el.Receive(m, r.at)
	if d.Action == Release || d.Action == Take {
		l.send(time.Now())
	}
	l.apply(d, r.at)
}

// stallAfter is how late a tick may be before the loop counts as stalled.
const stallAfter = 3 * Interval

// drain handles every message already queued, without waiting.
func (l *loop) drain(in <-chan received) {
	for {
		select {
		case r := <-in:
			l.receive(r)
		default:
			return
		}
	}
}

// send broadcasts this speaker's message. Its timestamps must increase on
// the wire, which carries the wall clock: compared without the monotonic
// reading, so that a clock stepped back (NTP) does not make the receivers
// drop this speaker's messages as replays.
func (l *loop) send(now time.Time) {
	now = now.Round(0)
	if !now.After(l.lastSent) {
		now = l.lastSent.Add(time.Microsecond)
	}
	keys := l.s.keys.Keys()
	m := l.el.Outgoing(now)
	m.VIP, m.Time = l.s.cfg.VIP, now
	b, err := m.Marshal(keys[0])
	if err == nil {
		err = l.tr.Send(b)
	}
	l.lastSent = now
	if err != nil {
		if err.Error() != l.sendErr {
			l.s.log.Error(err, "Sending the election message")
		}
		l.sendErr = err.Error()
	} else {
		l.sendErr = ""
	}
}

// apply carries a decision out and refreshes the status.
func (l *loop) apply(d Decision, now time.Time) {
	s := l.s
	switch d.Action {
	case Take:
		takeoversTotal.Inc()
		s.log.Info("Taking the control-plane VIP over", "vip", s.cfg.VIP, "epoch", d.Epoch, "why", d.Why)
	case Release:
		releasesTotal.WithLabelValues(releaseReason(d)).Inc()
		s.log.Info("Releasing the control-plane VIP", "vip", s.cfg.VIP, "epoch", d.Epoch, "why", d.Why)
	case Reassert:
		// A rival that keeps claiming (it hears nobody: a firewall drops
		// its inbound messages) would otherwise have the VIP re-announced
		// at every one of its messages: once per dead interval at most.
		if now.Sub(l.lastReassert) < DeadInterval {
			break
		}
		l.lastReassert = now
		reassertsTotal.Inc()
		s.log.Info("Another holder heard; keeping the control-plane VIP and announcing it again", "why", d.Why)
		l.local.announceAgain()
	}
	l.local.set(l.el.Holding())
	holder, epoch := l.el.Holder(now)
	rs := s.ready.State()
	s.mu.Lock()
	s.status.APIServerReady, s.status.APIServerError = rs.Ready, rs.Err
	s.status.Serving = l.local.served.Load()
	s.status.Holder, s.status.Epoch = holder, epoch
	s.status.Peers = l.el.Peers(now)
	s.mu.Unlock()
}

func releaseReason(d Decision) string {
	switch d.Why {
	case "apiserver not ready":
		return "unready"
	case "shutting down":
		return "shutdown"
	default:
		return "precedence"
	}
}

// addressLifetime is how long the VIP stays on lo without a renewal: a
// holder renews it every Interval (localVIP), and a holder that died without
// releasing leaves it behind for at most this long (plus the kernel's
// expiry check, about a second).
const addressLifetime = 2 * time.Second

// shutdown tells the others this speaker released the VIP, then withdraws
// it, so that a successor takes over at once.
func (l *loop) shutdown() {
	now := time.Now()
	d := l.el.Leave(now)
	l.send(now)
	if d.Action == Release {
		releasesTotal.WithLabelValues("shutdown").Inc()
		l.s.log.Info("Shutting down: released the control-plane VIP", "vip", l.s.cfg.VIP)
	}
	l.local.stop()
	l.s.electing.Store(false)
}
