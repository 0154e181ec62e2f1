package netrig

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Listen is net.Listen inside the host's namespace. The caller closes the
// listener.
func (h *Host) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := h.Do(func() error {
		var err error
		l, err = net.Listen(network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("listen %s %s in %s: %w", network, addr, h.Name, err)
	}
	return l, nil
}

// DialContext is net.Dialer.DialContext inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() error {
		var d net.Dialer
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, h.Name, err)
	}
	return c, nil
}

// Relay listens on TCP listenAddr inside the host's namespace and forwards
// every connection to target, dialed from the namespace of the test process
// (e.g. a kube-apiserver on 127.0.0.1). It returns the listener's address.
// The relay and its connections are closed at LAN.Close.
func (h *Host) Relay(listenAddr, target string) (net.Addr, error) {
	ln, err := h.Listen("tcp", listenAddr)
	if err != nil {
		return nil, fmt.Errorf("relay: %w", err)
	}
	var (
		mu     sync.Mutex
		conns  = map[net.Conn]struct{}{}
		closed bool
	)
	track := func(c net.Conn) bool {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			c.Close()
			return false
		}
		conns[c] = struct{}{}
		return true
	}
	untrack := func(c net.Conn) {
		mu.Lock()
		delete(conns, c)
		mu.Unlock()
		c.Close()
	}
	h.lan.addCloser(func() {
		ln.Close()
		mu.Lock()
		closed = true
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			if !track(in) {
				return
			}
			go func() {
				defer untrack(in)
				// Not inside Do: this goroutine runs in the test
				// process's own namespace.
				out, err := net.DialTimeout("tcp", target, 10*time.Second)
				if err != nil {
					return
				}
				if !track(out) {
					return
				}
				defer untrack(out)
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); closeWrite(out); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); closeWrite(in); done <- struct{}{} }()
				<-done
				<-done
			}()
		}
	}()
	return ln.Addr(), nil
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.CloseWrite()
	}
}

// Responder is a TCP server started by Host.Serve.
type Responder struct {
	ln      net.Listener
	name    string
	serving atomic.Bool
	once    sync.Once
	wg      sync.WaitGroup
}

// Serve starts a dual-stack TCP server on [::]:port in the host's namespace
// (it also accepts traffic to addresses of local routes) that writes name
// followed by a newline to every connection and closes it. It is closed at
// LAN.Close.
func (h *Host) Serve(port int, name string) (*Responder, error) {
	ln, err := h.Listen("tcp", ":"+strconv.Itoa(port))
	if err != nil {
		return nil, fmt.Errorf("serve: %w", err)
	}
	r := &Responder{ln: ln, name: name}
	r.serving.Store(true)
	h.lan.addCloser(func() { _ = r.Close() })
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if !r.serving.Load() {
				// Reset instead of answering, so clients fail fast.
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.SetLinger(0)
				}
				c.Close()
				continue
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			_, _ = io.WriteString(c, name+"\n")
			go func(c net.Conn) {
				// Half-close, then read what the client sent (curl's HTTP
				// request, say) so that closing does not reset the
				// connection; clients that only read see EOF at once.
				if tc, ok := c.(*net.TCPConn); ok {
					_ = tc.CloseWrite()
				}
				_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
				_, _ = io.Copy(io.Discard, c)
				c.Close()
			}(c)
		}
	}()
	return r, nil
}

// Addr returns the listening address.
func (r *Responder) Addr() net.Addr { return r.ln.Addr() }

// SetServing sets whether the responder answers. When not serving, it still
// accepts connections but resets them without writing anything, so clients
// see a failure.
func (r *Responder) SetServing(on bool) { r.serving.Store(on) }

// Close stops the responder. It is idempotent.
func (r *Responder) Close() error {
	var err error
	r.once.Do(func() {
		err = r.ln.Close()
		r.wg.Wait()
	})
	return err
}

// ProbeResult is the outcome of one probe attempt.
type ProbeResult struct {
	// At is when the attempt started.
	At time.Time
	// OK reports whether a non-empty line was read.
	OK bool
	// Node is the line read (the responder's name), without newline.
	Node string
	// Err is the failure, if !OK.
	Err error
}

// Probe repeatedly connects to a target; see Host.StartProbe.
type Probe struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu      sync.Mutex
	results []ProbeResult
}

// StartProbe starts a new TCP connection from the host's namespace to target
// every interval, each with the given timeout for connecting and reading a
// line, and records the results. Attempts run concurrently, so a hanging
// attempt does not delay the next one. The probe is stopped at LAN.Close.
func (h *Host) StartProbe(target netip.AddrPort, interval, timeout time.Duration) *Probe {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Probe{cancel: cancel}
	h.lan.addCloser(func() { p.Stop() })
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.wg.Add(1)
			go func(at time.Time) {
				defer p.wg.Done()
				r := h.probeOnce(ctx, at, target, timeout)
				if ctx.Err() != nil && !r.OK {
					return // aborted by Stop, not a real failure
				}
				p.mu.Lock()
				p.results = append(p.results, r)
				p.mu.Unlock()
			}(time.Now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (h *Host) probeOnce(ctx context.Context, at time.Time, target netip.AddrPort, timeout time.Duration) ProbeResult {
	r := ProbeResult{At: at}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", target.String())
	if err != nil {
		r.Err = err
		return r
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetReadDeadline(dl)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	line = strings.TrimSuffix(line, "\n")
	if err != nil {
		r.Err = fmt.Errorf("read from %s: %w", target, err)
		return r
	}
	if line == "" {
		r.Err = fmt.Errorf("read from %s: empty line", target)
		return r
	}
	r.OK, r.Node = true, line
	return r
}

// Results returns a snapshot of the results so far, sorted by At.
func (p *Probe) Results() []ProbeResult {
	p.mu.Lock()
	rs := append([]ProbeResult(nil), p.results...)
	p.mu.Unlock()
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].At.Before(rs[j].At) })
	return rs
}

// Stop stops the probe, waits for attempts in flight and returns all
// results sorted by At. Attempts cut short by Stop are not recorded. It may
// be called more than once.
func (p *Probe) Stop() []ProbeResult {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
	return p.Results()
}

// NeverRecovered is returned by Outage when no success follows a failure.
const NeverRecovered = time.Duration(math.MaxInt64)

// Outage returns the time from the At of the first failed attempt at or
// after after to the At of the first successful attempt started after it.
// It returns 0 if there is no such failure and NeverRecovered if no success
// follows. rs need not be sorted.
func Outage(rs []ProbeResult, after time.Time) time.Duration {
	rs = sorted(rs)
	for i, r := range rs {
		if r.OK || r.At.Before(after) {
			continue
		}
		for _, s := range rs[i+1:] {
			if s.OK && s.At.After(r.At) {
				return s.At.Sub(r.At)
			}
		}
		return NeverRecovered
	}
	return 0
}

// FirstFrom returns the first successful result at or after after whose
// Node is not notNode.
func FirstFrom(rs []ProbeResult, after time.Time, notNode string) (ProbeResult, bool) {
	for _, r := range sorted(rs) {
		if r.OK && !r.At.Before(after) && r.Node != notNode {
			return r, true
		}
	}
	return ProbeResult{}, false
}

// Failures returns the failed results in rs.
func Failures(rs []ProbeResult) []ProbeResult {
	var out []ProbeResult
	for _, r := range rs {
		if !r.OK {
			out = append(out, r)
		}
	}
	return out
}

func sorted(rs []ProbeResult) []ProbeResult {
	rs = append([]ProbeResult(nil), rs...)
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].At.Before(rs[j].At) })
	return rs
}
