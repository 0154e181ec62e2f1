package guard

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
)

// blockingCreds is a handshake that waits until release is closed.
type blockingCreds struct {
	credentials.TransportCredentials
	started chan struct{}
	release chan struct{}
}

func (b *blockingCreds) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	b.started <- struct{}{}
	<-b.release
	return c, nil, nil
}

func (b *blockingCreds) Clone() credentials.TransportCredentials { return b }

// TestHandshakesCap: with max handshakes in progress the next connection
// is refused at once, without reaching TLS; a freed slot takes a new one;
// clones share the cap.
func TestHandshakesCap(t *testing.T) {
	const max = 4
	inner := &blockingCreds{started: make(chan struct{}, max+1), release: make(chan struct{})}
	h := NewHandshakes(inner, max, max)
	clone := h.Clone().(*Handshakes)
	var wg sync.WaitGroup
	for i := range max {
		a, b := net.Pipe()
		defer a.Close()
		defer b.Close()
		creds := h
		if i%2 == 1 {
			creds = clone
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := creds.ServerHandshake(a); err != nil {
				t.Errorf("handshake %d: %v", i, err)
			}
		}()
		<-inner.started
	}
	if h.InFlight() != max {
		t.Fatalf("%d handshakes in flight, want %d", h.InFlight(), max)
	}
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, _, err := clone.ServerHandshake(a); !errors.Is(err, ErrTooManyHandshakes) {
		t.Fatalf("handshake over the cap: %v, want ErrTooManyHandshakes", err)
	}
	if h.Refused() != 1 || clone.Refused() != 1 {
		t.Errorf("refused %d (clone %d), want 1", h.Refused(), clone.Refused())
	}
	select {
	case <-inner.started:
		t.Fatal("the refused connection reached the TLS handshake")
	default:
	}
	close(inner.release)
	wg.Wait()
	if h.InFlight() != 0 {
		t.Errorf("%d handshakes in flight after they ended", h.InFlight())
	}
	if _, _, err := h.ServerHandshake(a); err != nil {
		t.Errorf("handshake after the slots were freed: %v", err)
	}
}

// TestHandshakesPerSource: one source address gets at most perIP
// handshakes; another still gets in.
func TestHandshakesPerSource(t *testing.T) {
	inner := &blockingCreds{started: make(chan struct{}, 8), release: make(chan struct{})}
	h := NewHandshakes(inner, 8, 2)
	flooder := &net.TCPAddr{IP: net.ParseIP("192.0.2.66"), Port: 40000}
	ccm := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 40000}
	var wg sync.WaitGroup
	start := func(from *net.TCPAddr) error {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		errc := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := h.ServerHandshake(addrConn{a, from})
			errc <- err
		}()
		select {
		case <-inner.started:
			return nil
		case err := <-errc:
			return err
		}
	}
	for i := range 2 {
		if err := start(flooder); err != nil {
			t.Fatalf("flooder's handshake %d: %v", i, err)
		}
	}
	if err := start(flooder); !errors.Is(err, ErrTooManyHandshakes) {
		t.Errorf("flooder's third handshake: %v, want ErrTooManyHandshakes", err)
	}
	if err := start(ccm); err != nil {
		t.Errorf("the CCM's handshake during the flood: %v", err)
	}
	close(inner.release)
	wg.Wait()
}

// addrConn is a net.Conn with a given remote address.
type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestCCMSourceAtCapEvictsOldest: pods that share the CCM's source (SNAT
// to the control-plane node's address, host-network pods there) hold its
// per-source cap; a new connection from it takes the slot of that source's
// oldest unfinished handshake, whose connection is closed, instead of
// being refused. Another source at its cap is still refused.
func TestCCMSourceAtCapEvictsOldest(t *testing.T) {
	const perIP = 2
	inner := &blockingCreds{started: make(chan struct{}, 8), release: make(chan struct{})}
	h := NewHandshakes(inner, 8, perIP, WithReserved(perIP), WithCCMPrefixes([]netip.Prefix{netip.MustParsePrefix("192.0.2.2/32")}))
	ccm := &net.TCPAddr{IP: net.ParseIP("192.0.2.2"), Port: 40000}
	flooder := &net.TCPAddr{IP: net.ParseIP("192.0.2.66"), Port: 40000}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(inner.release)
	// start begins a handshake from from and returns the client's end.
	start := func(from *net.TCPAddr) (net.Conn, error) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		errc := make(chan error, 1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, err := h.ServerHandshake(addrConn{a, from})
			errc <- err
		}()
		select {
		case <-inner.started:
			return b, nil
		case err := <-errc:
			return nil, err
		}
	}
	var held []net.Conn
	for i := range perIP {
		c, err := start(ccm)
		if err != nil {
			t.Fatalf("handshake %d from the CCM's source: %v", i, err)
		}
		held = append(held, c)
	}
	if _, err := start(ccm); err != nil {
		t.Fatalf("a new handshake from the CCM's source at its cap: %v", err)
	}
	if h.Evicted() != 1 || h.InFlight() != perIP {
		t.Errorf("evicted %d, in flight %d; want 1, %d", h.Evicted(), h.InFlight(), perIP)
	}
	if _, err := held[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("the oldest handshake's connection: read %v, want EOF (closed)", err)
	}
	_ = held[1].SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := held[1].Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("the second handshake's connection: read %v, want it still open", err)
	}
	for i := range perIP {
		if _, err := start(flooder); err != nil {
			t.Fatalf("flooder's handshake %d: %v", i, err)
		}
	}
	if _, err := start(flooder); !errors.Is(err, ErrTooManyHandshakes) {
		t.Errorf("flooder's handshake over its cap: %v, want ErrTooManyHandshakes", err)
	}
}
