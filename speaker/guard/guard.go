// Package guard bounds what an unauthenticated client can cost the
// speaker: anyone who reaches its gRPC port can open connections, and a
// TLS handshake that never finishes holds a goroutine, buffers and a
// socket. With grpc.ConnectionTimeout bounding how long a handshake may
// take, Handshakes bounds how many run at once, in all and from one source
// address (so that one flooding host cannot keep a CCM from connecting): a
// connection over a cap is closed before any TLS work.
package guard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
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
)

// ErrTooManyHandshakes refuses a connection while the cap is reached.
var ErrTooManyHandshakes = errors.New("too many unauthenticated connections")

// Handshakes wraps server TransportCredentials so that at most max
// handshakes run at once, and at most perIP from one source address.
type Handshakes struct {
	credentials.TransportCredentials
	slots   chan struct{}
	perIP   int
	refused *atomic.Uint64
	mu      *sync.Mutex
	bySrc   map[netip.Addr]int
}

var _ credentials.TransportCredentials = (*Handshakes)(nil)

// NewHandshakes wraps creds.
func NewHandshakes(creds credentials.TransportCredentials, max, perIP int) *Handshakes {
	return &Handshakes{
		TransportCredentials: creds, slots: make(chan struct{}, max), perIP: perIP,
		refused: new(atomic.Uint64), mu: new(sync.Mutex), bySrc: map[netip.Addr]int{},
	}
}

// ServerHandshake runs the wrapped handshake if its source and the whole
// have a slot free.
func (h *Handshakes) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	src := sourceOf(c)
	h.mu.Lock()
	if h.bySrc[src] >= h.perIP {
		h.mu.Unlock()
		h.refused.Add(1)
		return nil, nil, fmt.Errorf("%w (%d handshakes in progress from %s)", ErrTooManyHandshakes, h.perIP, src)
	}
	h.bySrc[src]++
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		if h.bySrc[src]--; h.bySrc[src] == 0 {
			delete(h.bySrc, src)
		}
		h.mu.Unlock()
	}()
	select {
	case h.slots <- struct{}{}:
	default:
		h.refused.Add(1)
		return nil, nil, fmt.Errorf("%w (%d handshakes in progress) from %s", ErrTooManyHandshakes, cap(h.slots), src)
	}
	defer func() { <-h.slots }()
	return h.TransportCredentials.ServerHandshake(c)
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
	c := *h
	c.TransportCredentials = h.TransportCredentials.Clone()
	return &c
}

// Refused counts connections closed because the cap was reached.
func (h *Handshakes) Refused() uint64 { return h.refused.Load() }

// InFlight is the number of handshakes running.
func (h *Handshakes) InFlight() int { return len(h.slots) }
