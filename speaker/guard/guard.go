// Package guard bounds what an unauthenticated client can cost the
// speaker: anyone who reaches its gRPC port can open connections, and a
// TLS handshake that never finishes holds a goroutine, buffers and a
// socket. With grpc.ConnectionTimeout bounding how long a handshake may
// take, Handshakes bounds how many run at once, in all and from one source
// address: a connection over a cap is closed before any TLS work.
//
// The CCM must always get in, also while pods flood the port: a new
// leader, a restarted CCM or one whose connection broke must reconnect at
// once, or VIPs move and failover stalls. So the CCM's sources have
// handshake slots of their own (WithReserved) that no other source can
// take: the addresses the admin says the CCM comes from (WithCCMPrefixes,
// the speaker's --ccm-cidrs), and every source that completed a handshake
// (the wrapped credentials accept only the CCM's certificate), remembered
// while the speaker runs. A CCM from a source not known yet (a new leader
// on another node, with no --ccm-cidrs) takes the slot of the oldest
// handshake of the source holding the most, when that source holds more
// than it does: pods cannot keep it out unless each of the floods' sources
// holds no more than the CCM, with more sources than slots.
//
// Pods can share a CCM source: traffic SNAT'd to the control-plane node's
// address (CNI masquerading) or host-network pods on that node. So a CCM
// source at the per-source cap does not refuse a new connection: it takes
// the slot of that source's oldest unfinished handshake (a finished one
// holds no slot; an unfinished one would end at its deadline anyway), and
// such pods cannot keep the CCM out.
package guard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/credentials"
)

// Defaults of the speaker: a CCM finishes its handshake in milliseconds
// and holds one or two connections.
const (
	DefaultHandshakeTimeout   = 5 * time.Second
	DefaultMaxHandshakes      = 64
	DefaultMaxHandshakesPerIP = 8
	// DefaultReservedHandshakes are the slots only the CCM's sources take.
	DefaultReservedHandshakes = 8
	// maxKnown bounds the sources remembered as the CCM's (leaders come
	// and go on a few control-plane nodes); the least recent goes first.
	maxKnown = 16
)

// ErrTooManyHandshakes refuses a connection while the cap is reached.
var ErrTooManyHandshakes = errors.New("too many unauthenticated connections")

// errEvicted ends a handshake whose slot a fairer claim took.
var errEvicted = errors.New("handshake slot taken by a source holding fewer or by a newer handshake from a CCM source")

// Handshakes wraps server TransportCredentials so that at most max
// handshakes run at once, at most perIP from one source address, and
// the CCM's sources have reserved slots besides (see the package
// documentation). Clones share the limits.
type Handshakes struct {
	credentials.TransportCredentials
	*limits
}

// limits are the state Handshakes and its clones share.
type limits struct {
	max, perIP, reserved int
	ccm                  []netip.Prefix
	refused, evicted     atomic.Uint64

	mu     sync.Mutex
	open   int                      // handshakes in the shared slots
	held   int                      // handshakes in the reserved slots
	bySrc  map[netip.Addr]int       // handshakes per source, in both
	flight []*attempt               // evictable handshakes (not the CCM's), oldest first
	ccmFly []*attempt               // the CCM's sources' handshakes, oldest first
	seq    uint64                   // numbers attempts in the order admitted
	known  map[netip.Addr]time.Time // sources that completed a handshake, and when last
}

// attempt is one handshake in a slot.
type attempt struct {
	src      netip.Addr
	seq      uint64
	conn     net.Conn
	reserved bool // in a reserved slot
	evicted  bool // its slot went to another; it releases nothing
}

var _ credentials.TransportCredentials = (*Handshakes)(nil)

// Option configures Handshakes.
type Option func(*limits)

// WithReserved keeps n slots, beyond max, for the CCM's sources.
func WithReserved(n int) Option { return func(l *limits) { l.reserved = n } }

// WithCCMPrefixes names where the CCM connects from (the speaker's
// --ccm-cidrs): those sources take the reserved slots from their first
// connection on.
func WithCCMPrefixes(p []netip.Prefix) Option { return func(l *limits) { l.ccm = p } }

// NewHandshakes wraps creds, which must accept only the CCM: a source
// that completes a handshake is remembered as the CCM's.
func NewHandshakes(creds credentials.TransportCredentials, max, perIP int, opts ...Option) *Handshakes {
	l := &limits{max: max, perIP: perIP, bySrc: map[netip.Addr]int{}, known: map[netip.Addr]time.Time{}}
	for _, o := range opts {
		o(l)
	}
	return &Handshakes{TransportCredentials: creds, limits: l}
}

// ServerHandshake runs the wrapped handshake if its source has a slot.
func (h *Handshakes) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	src := sourceOf(c)
	a, victim, err := h.admit(src, c)
	if victim != nil {
		_ = victim.conn.Close()
	}
	if err != nil {
		h.refused.Add(1)
		return nil, nil, err
	}
	conn, info, err := h.TransportCredentials.ServerHandshake(c)
	h.release(a, err == nil)
	if err != nil && h.wasEvicted(a) {
		err = fmt.Errorf("%w: %w", errEvicted, err)
	}
	return conn, info, err
}

// ccmSource reports whether src is the CCM's; l.mu is held.
func (l *limits) ccmSource(src netip.Addr) bool {
	if _, ok := l.known[src]; ok {
		return true
	}
	return slices.ContainsFunc(l.ccm, func(p netip.Prefix) bool { return p.Contains(src) })
}

// admit gives src a slot for c, or says why not; victim, when not nil,
// lost its slot to c and must be closed.
func (l *limits) admit(src netip.Addr, c net.Conn) (*attempt, *attempt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	ccm := l.ccmSource(src)
	var victim *attempt
	if l.bySrc[src] >= l.perIP {
		// Pods SNAT'd to a CCM source must not keep the CCM out: its
		// oldest unfinished handshake gives its slot back.
		if victim = l.oldestFrom(src); !ccm || victim == nil {
			return nil, nil, fmt.Errorf("%w (%d handshakes in progress from %s)", ErrTooManyHandshakes, l.perIP, src)
		}
		victim.evicted = true
		l.drop(victim)
		l.evicted.Add(1)
		if victim.reserved {
			l.held--
		} else {
			l.open--
		}
	}
	l.seq++
	a := &attempt{src: src, seq: l.seq, conn: c}
	switch {
	case ccm && l.held < l.reserved:
		a.reserved = true
		l.held++
	case l.open < l.max:
		l.open++
	default: // not after an eviction above: it freed a slot a takes
		victim = l.victim(src, ccm)
		if victim == nil {
			return nil, nil, fmt.Errorf("%w (%d handshakes in progress) from %s", ErrTooManyHandshakes, l.max, src)
		}
		victim.evicted = true
		l.drop(victim)
		l.evicted.Add(1)
		// The victim's slot is a's now: open stays.
	}
	l.bySrc[src]++
	if ccm {
		l.ccmFly = append(l.ccmFly, a)
	} else {
		l.flight = append(l.flight, a)
	}
	return a, victim, nil
}

// oldestFrom returns the oldest handshake from src in a slot (nil: none);
// l.mu is held.
func (l *limits) oldestFrom(src netip.Addr) *attempt {
	var v *attempt
	for _, list := range [][]*attempt{l.flight, l.ccmFly} {
		for _, a := range list {
			if a.src == src && (v == nil || a.seq < v.seq) {
				v = a
				break // each list is oldest first
			}
		}
	}
	return v
}

// victim picks the handshake that gives its slot to a new one from src:
// the oldest of the source holding the most, if it holds more than src
// (any, for the CCM); nil: none. l.mu is held.
func (l *limits) victim(src netip.Addr, ccm bool) *attempt {
	var v *attempt
	for _, a := range l.flight {
		if v == nil || l.bySrc[a.src] > l.bySrc[v.src] {
			v = a
		}
	}
	if v == nil || !ccm && l.bySrc[v.src] <= l.bySrc[src] {
		return nil
	}
	return v
}

// drop takes a out of the books; l.mu is held.
func (l *limits) drop(a *attempt) {
	if l.bySrc[a.src]--; l.bySrc[a.src] <= 0 {
		delete(l.bySrc, a.src)
	}
	if i := slices.Index(l.flight, a); i >= 0 {
		l.flight = slices.Delete(l.flight, i, i+1)
	}
	if i := slices.Index(l.ccmFly, a); i >= 0 {
		l.ccmFly = slices.Delete(l.ccmFly, i, i+1)
	}
}

// release frees a's slot (unless it went to another); a source whose
// handshake completed is remembered as the CCM's.
func (l *limits) release(a *attempt, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !a.evicted {
		l.drop(a)
		if a.reserved {
			l.held--
		} else {
			l.open--
		}
	}
	if ok && a.src.IsValid() {
		l.known[a.src] = time.Now()
		if len(l.known) > maxKnown {
			var oldest netip.Addr
			for s, t := range l.known {
				if !oldest.IsValid() || t.Before(l.known[oldest]) {
					oldest = s
				}
			}
			delete(l.known, oldest)
		}
	}
}

func (l *limits) wasEvicted(a *attempt) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return a.evicted
}

// sourceOf is c's remote address without the port (invalid when it is not
// an IP address, as with pipes in tests).
func sourceOf(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// Clone keeps the limits: gRPC clones credentials.
func (h *Handshakes) Clone() credentials.TransportCredentials {
	return &Handshakes{TransportCredentials: h.TransportCredentials.Clone(), limits: h.limits}
}

// Refused counts connections closed because the cap was reached.
func (h *Handshakes) Refused() uint64 { return h.refused.Load() }

// Evicted counts handshakes whose slot went to a source holding fewer, or
// to a newer handshake from the same CCM source at its per-source cap.
func (h *Handshakes) Evicted() uint64 { return h.evicted.Load() }

// InFlight is the number of handshakes running, in the shared and the
// reserved slots.
func (h *Handshakes) InFlight() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.open + h.held
}
