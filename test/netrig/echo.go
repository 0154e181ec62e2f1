package netrig

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// EchoServer is a TCP echo server started by Host.ServeEcho.
type EchoServer struct {
	ln   net.Listener
	once sync.Once
	wg   sync.WaitGroup

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

// ServeEcho starts a dual-stack TCP echo server on [::]:port in the host's
// namespace (it also accepts traffic to addresses of local routes). It keeps
// every connection open, writing back every byte it reads, until the client
// closes it. It is closed at LAN.Close.
func (h *Host) ServeEcho(port int) (*EchoServer, error) {
	ln, err := h.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("serve echo: %w", err)
	}
	s := &EchoServer{ln: ln, conns: map[net.Conn]struct{}{}}
	h.lan.addCloser(func() { _ = s.Close() })
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !s.track(c) {
				c.Close()
				return
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				_, _ = io.Copy(c, c)
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return s, nil
}

func (s *EchoServer) track(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.conns[c] = struct{}{}
	return true
}

// Addr returns the listening address.
func (s *EchoServer) Addr() net.Addr { return s.ln.Addr() }

// Conns returns the number of connections open now.
func (s *EchoServer) Conns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// ResetConns resets (RST) every open connection, as when the serving
// process crashes, and keeps accepting new ones. It returns how many it
// reset.
func (s *EchoServer) ResetConns() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.conns)
	for c := range s.conns {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
		c.Close()
		delete(s.conns, c)
	}
	return n
}

// Close stops the server and closes its connections (the clients read
// EOF). It is idempotent.
func (s *EchoServer) Close() error {
	var err error
	s.once.Do(func() {
		err = s.ln.Close()
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		s.mu.Unlock()
		s.wg.Wait()
	})
	return err
}

// HolderBreak is one long-lived connection of Holders that broke.
type HolderBreak struct {
	// At is when the failure was seen (for an echo timeout, timeout after
	// the byte was sent).
	At time.Time
	// Err says what failed.
	Err string
}

// HolderStats is what Holders saw.
type HolderStats struct {
	// Opened counts the connections that were established.
	Opened int
	// Broken counts the established connections that failed later.
	Broken int
	// Breaks are those failures, in the order they were seen.
	Breaks []HolderBreak
}

// Holders are long-lived TCP connections to an echo server; see
// Host.StartHolders.
type Holders struct {
	n      int
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu      sync.Mutex
	ready   chan struct{} // closed when all n settled
	settles int
	errs    []error // failures before the first echo
	stats   HolderStats
}

// StartHolders opens n TCP connections from the host's namespace to target
// (an EchoServer), each from its own source port, so that ECMP spreads
// them. Every interval each sends one byte and expects it echoed within
// timeout (also the timeout to connect). A connection that fails (reset,
// EOF, write error, no echo in time) counts as broken and is not reopened.
// Stopping is not a failure. The holders are stopped at LAN.Close.
func (h *Host) StartHolders(target netip.AddrPort, n int, interval, timeout time.Duration) *Holders {
	ctx, cancel := context.WithCancel(context.Background())
	hs := &Holders{n: n, cancel: cancel, ready: make(chan struct{})}
	if n <= 0 {
		close(hs.ready)
	}
	h.lan.addCloser(func() { hs.Stop() })
	for i := range n {
		hs.wg.Add(1)
		go func() {
			defer hs.wg.Done()
			hs.hold(ctx, h, i, target, interval, timeout)
		}()
	}
	return hs
}

// hold runs connection i until it fails or ctx is done.
func (hs *Holders) hold(ctx context.Context, h *Host, i int, target netip.AddrPort, interval, timeout time.Duration) {
	settled := false
	defer func() {
		if !settled { // stopped before the first echo
			hs.settle(fmt.Errorf("holder %d: stopped before its first echo", i))
		}
	}()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	c, err := h.DialContext(dctx, "tcp", target.String())
	cancel()
	if err != nil {
		settled = true
		hs.settle(fmt.Errorf("holder %d: %w", i, err))
		return
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	hs.mu.Lock()
	hs.stats.Opened++
	hs.mu.Unlock()

	t := time.NewTicker(interval)
	defer t.Stop()
	buf := make([]byte, 1)
	for seq := 0; ; seq++ {
		err := echoOnce(c, byte(seq), buf, timeout)
		if ctx.Err() != nil {
			return // stopped, not broken
		}
		if err != nil {
			err = fmt.Errorf("holder %d (%s) after %d echoes: %w", i, c.LocalAddr(), seq, err)
			hs.mu.Lock()
			hs.stats.Broken++
			hs.stats.Breaks = append(hs.stats.Breaks, HolderBreak{At: time.Now(), Err: err.Error()})
			hs.mu.Unlock()
			if !settled {
				settled = true
				hs.settle(err)
			}
			return
		}
		if !settled {
			settled = true
			hs.settle(nil)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// echoOnce writes b to c and reads it back within timeout.
func echoOnce(c net.Conn, b byte, buf []byte, timeout time.Duration) error {
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte{b}); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if buf[0] != b {
		return fmt.Errorf("echo %d, want %d", buf[0], b)
	}
	return nil
}

// settle records that a connection echoed once (err nil) or failed before.
func (hs *Holders) settle(err error) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if err != nil {
		hs.errs = append(hs.errs, err)
	}
	hs.settles++
	if hs.settles == hs.n {
		close(hs.ready)
	}
}

// Ready waits until every connection is open and has echoed once. It
// returns an error if any failed before that, or when ctx is done.
func (hs *Holders) Ready(ctx context.Context) error {
	select {
	case <-hs.ready:
	case <-ctx.Done():
		hs.mu.Lock()
		settled := hs.settles
		hs.mu.Unlock()
		return fmt.Errorf("holders: %d of %d ready: %w", settled, hs.n, ctx.Err())
	}
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if len(hs.errs) > 0 {
		return fmt.Errorf("holders: %d of %d failed to start: %w", len(hs.errs), hs.n, errors.Join(hs.errs...))
	}
	return nil
}

// Stats returns what the holders saw so far.
func (hs *Holders) Stats() HolderStats {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	s := hs.stats
	s.Breaks = append([]HolderBreak(nil), s.Breaks...)
	return s
}

// Stop closes the connections (which does not count as breaking them),
// waits for them and returns the stats. It may be called more than once.
func (hs *Holders) Stop() HolderStats {
	hs.once.Do(func() {
		hs.cancel()
		hs.wg.Wait()
	})
	return hs.Stats()
}
