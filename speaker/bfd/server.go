package bfd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// The UDP destination ports of RFC 5881 and RFC 5883.
const (
	portSingleHop = 3784
	portMultihop  = 4784
)

var (
	errClosed = errors.New("bfd: server closed")
	errTTL    = errors.New("TTL too low (not from a directly connected peer, or too many hops)")
)

// Server keeps a set of BFD sessions. Create it with NewServer; stop it with
// Shutdown or Close.
type Server struct {
	log    logr.Logger
	net    Net
	notify notifier

	mu        sync.Mutex
	closing   bool
	sessions  map[key]*entry
	byDiscr   map[uint32]*entry // also holds sessions saying goodbye
	listeners map[listenKey]PacketConn

	done      chan struct{} // closed by Close
	closeOnce sync.Once
	sessWG    sync.WaitGroup
	lisWG     sync.WaitGroup

	// Packets dropped, by reason.
	dropInvalid, dropTTL, dropUnknown, dropAuth atomic.Uint64
}

// key identifies a session.
type key struct {
	peer, local netip.Addr
	multihop    bool
}

// keyOf is the key of c. Zones are left out: packets arrive with the zone of
// their interface, which a configured link-local address may lack.
func keyOf(c Config) key {
	return key{c.Peer.WithZone(""), c.Local.WithZone(""), c.Multihop}
}

// listenKey identifies a listener.
type listenKey struct{ family, port int }

// entry is a running session: its protocol state (guarded by Server.mu) and
// its goroutine's plumbing.
type entry struct {
	s    *session
	peer netip.Addr // s.cfg.Peer, which never changes: readable without the lock
	conn PacketConn
	kick chan struct{}
	quit chan struct{}
	stop sync.Once
	buf  []byte // used by the session goroutine only

	// set before quit is closed
	graceful bool
	ctx      context.Context
}

// NewServer returns a Server without sessions. It runs a goroutine until
// Close or Shutdown.
func NewServer(opts ...Option) *Server {
	s := &Server{
		log:       logr.Discard(),
		net:       kernelNet{},
		sessions:  map[key]*entry{},
		byDiscr:   map[uint32]*entry{},
		listeners: map[listenKey]PacketConn{},
		done:      make(chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	s.notify.start()
	return s
}

// Configure makes the Server hold exactly the sessions cfgs: new ones start
// (Down, slow transmission), removed ones send AdminDown and go, and changed
// timers of an existing session are renegotiated with a Poll Sequence without
// taking it down. An invalid config is an error naming its peer; the others
// are applied, and an existing session whose new config is invalid is kept
// as it was.
func (s *Server) Configure(ctx context.Context, cfgs []Config) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("bfd: configure: %w", err)
	}
	var errs []error
	want := map[key]Config{}
	keep := map[key]bool{}
	for _, c := range cfgs {
		c.Peer, c.Local = c.Peer.Unmap(), c.Local.Unmap()
		k := keyOf(c)
		if err := validate(c); err != nil {
			errs = append(errs, err)
			keep[k] = true
			continue
		}
		if _, dup := want[k]; dup {
			errs = append(errs, fmt.Errorf("bfd session with %s: configured twice", c.Peer))
			continue
		}
		want[k] = c
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return errClosed
	}
	now := time.Now()
	for k, e := range s.sessions {
		if _, ok := want[k]; !ok && !keep[k] {
			delete(s.sessions, k)
			s.stopLocked(e, true, context.Background())
		}
	}
	for k, c := range want {
		if e, ok := s.sessions[k]; ok {
			e.s.setConfig(c, now)
			e.poke()
			continue
		}
		if err := s.startLocked(k, c, now); err != nil {
			errs = append(errs, fmt.Errorf("bfd session with %s: %w", c.Peer, err))
		}
	}
	return errors.Join(errs...)
}

// validate checks one normalized config.
func validate(c Config) error {
	var err error
	switch {
	case !c.Peer.IsValid() || c.Peer.IsUnspecified() || c.Peer.IsMulticast():
		err = errors.New("invalid peer address")
	case c.Local.IsValid() && c.Local.Is4() != c.Peer.Is4():
		err = fmt.Errorf("local address %s is not of the peer's address family", c.Local)
	case c.DetectMultiplier == 0:
		err = errors.New("detect multiplier must not be 0")
	case c.DesiredMinTx < minInterval || c.DesiredMinTx > maxInterval:
		err = fmt.Errorf("desired min tx interval %v out of range [%v, %v]", c.DesiredMinTx, minInterval, maxInterval)
	case c.RequiredMinRx < minInterval || c.RequiredMinRx > maxInterval:
		err = fmt.Errorf("required min rx interval %v out of range [%v, %v]", c.RequiredMinRx, minInterval, maxInterval)
	default:
		return nil
	}
	return fmt.Errorf("bfd session with %s: %w", c.Peer, err)
}

// startLocked opens what session k needs and starts it.
func (s *Server) startLocked(k key, c Config, now time.Time) error {
	family, port := 4, portSingleHop
	if c.Peer.Is6() {
		family = 6
	}
	if c.Multihop {
		port = portMultihop
	}
	if err := s.listenLocked(family, port); err != nil {
		return err
	}
	conn, err := s.net.Dial(c.Local, netip.AddrPortFrom(c.Peer, uint16(port)))
	if err != nil {
		return fmt.Errorf("open send socket: %w", err)
	}
	var discr uint32
	for discr == 0 || s.byDiscr[discr] != nil {
		discr = rand.Uint32()
	}
	e := &entry{
		s:    newSession(c, discr, now, rand.Float64),
		peer: c.Peer,
		conn: conn,
		kick: make(chan struct{}, 1),
		quit: make(chan struct{}),
		buf:  make([]byte, 0, headerLen),
	}
	if !c.Local.IsValid() {
		e.s.localAddr = conn.LocalAddr().Addr().Unmap()
	}
	s.sessions[k] = e
	s.byDiscr[discr] = e
	s.sessWG.Add(1)
	go s.run(e)
	s.log.V(1).Info("BFD session started", "peer", c.Peer, "local", e.s.localAddr, "multihop", c.Multihop, "discriminator", discr)
	return nil
}

// listenLocked opens the listener for family and port unless it is open.
func (s *Server) listenLocked(family, port int) error {
	lk := listenKey{family, port}
	if s.listeners[lk] != nil {
		return nil
	}
	l, err := s.net.Listen(family, port)
	if err != nil {
		return fmt.Errorf("listen on IPv%d port %d: %w", family, port, err)
	}
	s.listeners[lk] = l
	s.lisWG.Add(1)
	go s.read(l, port == portMultihop)
	return nil
}

// stopLocked ends e's goroutine, after AdminDown packets when graceful.
func (s *Server) stopLocked(e *entry, graceful bool, ctx context.Context) {
	e.stop.Do(func() {
		e.graceful, e.ctx = graceful, ctx
		close(e.quit)
	})
}

// poke wakes the session goroutine to look at its state.
func (e *entry) poke() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// Sessions reports every session, sorted by Peer, then Local.
func (s *Server) Sessions() []Status {
	s.mu.Lock()
	out := make([]Status, 0, len(s.sessions))
	for _, e := range s.sessions {
		out = append(out, e.s.status())
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int {
		if c := a.Peer.Compare(b.Peer); c != 0 {
			return c
		}
		if c := a.Local.Compare(b.Local); c != 0 {
			return c
		}
		return cmp.Compare(boolInt(a.Multihop), boolInt(b.Multihop))
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Shutdown stops the Server gracefully: every session sends AdminDown with
// Diag 7 (for at most the time ctx allows), then all sockets close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		for k, e := range s.sessions {
			delete(s.sessions, k)
			s.stopLocked(e, true, ctx)
		}
	}
	s.mu.Unlock()
	idle := make(chan struct{})
	go func() {
		s.sessWG.Wait()
		close(idle)
	}()
	var err error
	select {
	case <-idle:
	case <-ctx.Done():
		err = fmt.Errorf("bfd: shutdown: %w", ctx.Err())
	}
	s.Close()
	return err
}

// Close stops the Server at once, without AdminDown, and closes its sockets.
// It is idempotent.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closing = true
		close(s.done)
		for k, e := range s.sessions {
			delete(s.sessions, k)
			s.stopLocked(e, false, nil)
		}
		ls := s.listeners
		s.listeners = map[listenKey]PacketConn{}
		s.mu.Unlock()
		for _, l := range ls {
			l.Close()
		}
		s.sessWG.Wait()
		s.lisWG.Wait()
		s.notify.close()
	})
	return nil
}

// read receives packets from listener l until it is closed.
func (s *Server) read(l PacketConn, multihop bool) {
	defer s.lisWG.Done()
	buf := make([]byte, 1500)
	for {
		n, m, err := l.ReadPacket(buf)
		if err != nil {
			select {
			case <-s.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Error(err, "BFD receive failed")
			time.Sleep(10 * time.Millisecond) // no busy loop on a persistent error
			continue
		}
		s.handle(buf[:n], m, multihop, time.Now())
	}
}
