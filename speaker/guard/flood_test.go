package guard

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/ironlb/ironlb/pki"
)

// ccmAddr is where the CCM connects from in TestCCMGetsInDuringFlood;
// the flood comes from other loopback addresses (127.0.0.0/8 is all
// local on Linux).
var ccmAddr = netip.MustParseAddr("127.0.0.2")

// floodShape is how the pods flood: sources × handshakes each, and
// fromCCM handshakes from the CCM's own address (pods SNAT'd to the
// control-plane node's address, or host-network pods there).
type floodShape struct{ sources, each, fromCCM int }

// TestCCMGetsInDuringFlood: pods hold every handshake slot of a speaker
// (real TLS, real gRPC server with the speaker's limits), from a few
// sources at the per-source cap or from as many sources as slots, each
// with a TCP connection that never sends its ClientHello. The CCM, which
// must reconnect (a new leader, a blip), completes its handshake: from a
// source named in --ccm-cidrs, from one it connected from before, or from
// a new one with nothing configured.
func TestCCMGetsInDuringFlood(t *testing.T) {
	bundle, err := pki.Bootstrap(context.Background(), fake.NewClientset(), "ironlb-system")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "token")
	if err := pki.WriteBundle(caFile, bundle.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("token"), 0o600); err != nil {
		t.Fatal(err)
	}
	creds, err := pki.NewNodeCredentials("node-a", caFile, tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string]floodShape{
		"8 pods at the per-source cap":                                  {DefaultMaxHandshakes / DefaultMaxHandshakesPerIP, DefaultMaxHandshakesPerIP, 0},
		"16 pods at the per-source cap":                                 {2 * DefaultMaxHandshakes / DefaultMaxHandshakesPerIP, DefaultMaxHandshakesPerIP, 0},
		"a pod per slot":                                                {DefaultMaxHandshakes, 1, 0},
		"pods at the per-source cap from the CCM's address":             {0, 0, DefaultMaxHandshakesPerIP},
		"pods at the per-source cap from the CCM's address, and 8 pods": {DefaultMaxHandshakes / DefaultMaxHandshakesPerIP, DefaultMaxHandshakesPerIP, DefaultMaxHandshakesPerIP},
	}
	tests := []struct {
		name      string
		configure bool // the CCM's address is in --ccm-cidrs
		seen      bool // the CCM connected from its address before the flood
		shape     string
	}{
		{name: "configured CCM address", configure: true, shape: "8 pods at the per-source cap"},
		{name: "configured CCM address", configure: true, shape: "a pod per slot"},
		{name: "CCM address seen before", seen: true, shape: "8 pods at the per-source cap"},
		{name: "CCM address seen before", seen: true, shape: "a pod per slot"},
		{name: "new CCM address, nothing configured", shape: "8 pods at the per-source cap"},
		{name: "new CCM address, nothing configured", shape: "16 pods at the per-source cap"},
		{name: "configured CCM address", configure: true, shape: "pods at the per-source cap from the CCM's address"},
		{name: "configured CCM address", configure: true, shape: "pods at the per-source cap from the CCM's address, and 8 pods"},
		{name: "CCM address seen before", seen: true, shape: "pods at the per-source cap from the CCM's address"},
	}
	for _, tc := range tests {
		t.Run(tc.name+", "+tc.shape, func(t *testing.T) {
			var opts []Option
			if tc.configure {
				opts = append(opts, WithCCMPrefixes([]netip.Prefix{netip.PrefixFrom(ccmAddr, 32)}))
			}
			g := NewHandshakes(credentials.NewTLS(creds.ServerTLSConfig()), DefaultMaxHandshakes, DefaultMaxHandshakesPerIP, append(opts, WithReserved(DefaultReservedHandshakes))...)
			srv := grpc.NewServer(grpc.Creds(g), grpc.ConnectionTimeout(DefaultHandshakeTimeout))
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			go func() { _ = srv.Serve(lis) }()
			defer srv.Stop()
			target := lis.Addr().String()
			if tc.seen {
				if err := ccmHandshake(bundle, target); err != nil {
					t.Fatalf("the CCM's first connection, before the flood: %v", err)
				}
			}

			shape := shapes[tc.shape]
			var flood []net.Conn
			defer func() {
				for _, c := range flood {
					c.Close()
				}
			}()
			for range shape.fromCCM {
				d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ccmAddr, 0)), Timeout: time.Second}
				c, err := d.Dial("tcp", target)
				if err != nil {
					t.Fatalf("flood connection from %s: %v", ccmAddr, err)
				}
				flood = append(flood, c) // and never a ClientHello
			}
			for s := range shape.sources {
				src := netip.AddrFrom4([4]byte{127, 0, 1, byte(10 + s)})
				for range shape.each {
					d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(src, 0)), Timeout: time.Second}
					c, err := d.Dial("tcp", target)
					if err != nil {
						t.Fatalf("flood connection from %s: %v", src, err)
					}
					flood = append(flood, c) // and never a ClientHello
				}
			}
			held := min(shape.sources*shape.each, DefaultMaxHandshakes) + shape.fromCCM
			deadline := time.Now().Add(10 * time.Second)
			for g.InFlight() < held {
				if time.Now().After(deadline) {
					t.Fatalf("the flood holds %d handshake slots after 10 s, want %d", g.InFlight(), held)
				}
				time.Sleep(5 * time.Millisecond)
			}
			refusedBefore := g.Refused()
			if err := ccmHandshake(bundle, target); err != nil {
				t.Fatalf("the CCM reconnecting during the flood (%d handshakes held, %d refused): %v", g.InFlight(), refusedBefore, err)
			}
			t.Logf("the CCM got in with %d flood handshakes held, %d flood connections refused, %d evicted", held, g.Refused(), g.Evicted())
		})
	}
}

// ccmHandshake connects to the speaker at target from ccmAddr as the CCM
// and completes the TLS handshake (the speaker accepts only the CCM's
// certificate).
func ccmHandshake(bundle *pki.Bundle, target string) error {
	d := net.Dialer{LocalAddr: net.TCPAddrFromAddrPort(netip.AddrPortFrom(ccmAddr, 0)), Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", target)
	if err != nil {
		return fmt.Errorf("dialing: %w", err)
	}
	defer raw.Close()
	cfg := bundle.ClientTLSConfig("node-a", &pki.Peer{})
	cfg.NextProtos = []string{"h2"}
	c := tls.Client(raw, cfg)
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		return fmt.Errorf("TLS handshake: %w", err)
	}
	// TLS 1.3: the server verifies the client's certificate after the
	// client's Finished; a refusal arrives as an alert on the first read.
	if _, err := c.Write([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")); err != nil {
		return fmt.Errorf("after the handshake: %w", err)
	}
	buf := make([]byte, 1)
	if _, err := c.Read(buf); err != nil {
		return fmt.Errorf("after the handshake (the speaker refused the CCM?): %w", err)
	}
	return nil
}
