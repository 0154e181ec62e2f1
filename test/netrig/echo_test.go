package netrig

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// waitHolders polls hs until cond holds for its stats or timeout passes.
func waitHolders(t *testing.T, hs *Holders, timeout time.Duration, what string, cond func(HolderStats) bool) HolderStats {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := hs.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %s: stats %+v", timeout, what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestEchoHolders(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	srv, err := b.ServeEcho(8081)
	if err != nil {
		t.Fatal(err)
	}
	const n, interval = 8, 20 * time.Millisecond
	for _, tc := range []struct {
		name   string
		target netip.Addr
		kill   func()   // breaks every connection
		want   []string // one of them in every break's error
	}{
		{"v4-reset", b4.Addr(), func() {
			if got := srv.ResetConns(); got != n {
				t.Errorf("ResetConns reset %d connections, want %d", got, n)
			}
		}, []string{"reset", "broken pipe"}},
		// The server's FIN, then its RST when a byte arrives.
		{"v6-close", b6.Addr(), func() { _ = srv.Close() }, []string{"EOF", "reset"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			hs := a.StartHolders(netip.AddrPortFrom(tc.target, 8081), n, interval, 500*time.Millisecond)
			if err := hs.Ready(ctx); err != nil {
				t.Fatal(err)
			}
			if got := srv.Conns(); got != n {
				t.Errorf("server holds %d connections, want %d", got, n)
			}
			// Every holder echoes a few times without breaking.
			time.Sleep(5 * interval)
			if s := hs.Stats(); s.Opened != n || s.Broken != 0 {
				t.Fatalf("before the failure: %+v, want %d opened and none broken", s, n)
			}
			failedAt := time.Now()
			tc.kill()
			s := waitHolders(t, hs, 3*time.Second, "every holder broken", func(s HolderStats) bool { return s.Broken == n })
			// Stopping afterwards adds no break.
			if s := hs.Stop(); s.Opened != n || s.Broken != n || len(s.Breaks) != n {
				t.Errorf("after Stop: %+v, want %d opened and broken", s, n)
			}
			for _, br := range s.Breaks {
				if br.At.Before(failedAt) || br.At.After(failedAt.Add(2*time.Second)) {
					t.Errorf("break at %v, failure at %v", br.At, failedAt)
				}
				if !slices.ContainsFunc(tc.want, func(w string) bool { return strings.Contains(br.Err, w) }) {
					t.Errorf("break %q, want it to mention one of %q", br.Err, tc.want)
				}
			}
			t.Logf("%d breaks, first: %+v", len(s.Breaks), s.Breaks[0])
		})
	}
}

func TestHoldersStopIsNoBreak(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	srv, err := b.ServeEcho(8081)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// A long interval: Stop interrupts holders waiting for their next
	// echo; a long timeout with a stalled echo would be interrupted too.
	hs := a.StartHolders(netip.AddrPortFrom(b4.Addr(), 8081), 4, time.Hour, time.Second)
	if err := hs.Ready(ctx); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	s := hs.Stop()
	if s.Opened != 4 || s.Broken != 0 || len(s.Breaks) != 0 {
		t.Errorf("Stop: %+v, want 4 opened, none broken", s)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Stop took %v", d)
	}
	// The server sees the clients go.
	deadline := time.Now().Add(2 * time.Second)
	for srv.Conns() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("server still holds %d connections after Stop", srv.Conns())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if s2 := hs.Stop(); fmt.Sprint(s2) != fmt.Sprint(s) {
		t.Errorf("second Stop: %+v, want %+v", s2, s)
	}

	// Stop also interrupts an echo in flight: a server that accepts and
	// never answers.
	ln, err := b.Listen("tcp", ":8082")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	hs = a.StartHolders(netip.AddrPortFrom(b4.Addr(), 8082), 4, 10*time.Millisecond, time.Minute)
	waitHolders(t, hs, 2*time.Second, "all open", func(s HolderStats) bool { return s.Opened == 4 })
	start = time.Now()
	if s := hs.Stop(); s.Opened != 4 || s.Broken != 0 {
		t.Errorf("Stop during a stalled echo: %+v, want 4 opened, none broken", s)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Stop during a stalled echo took %v", d)
	}
	if err := hs.Ready(ctx); err == nil {
		t.Error("Ready after Stop before any echo: no error")
	}
}

func TestHoldersReadyFailsWithoutServer(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, _ := twoHosts(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	hs := a.StartHolders(netip.AddrPortFrom(b4.Addr(), 8082), 3, 10*time.Millisecond, time.Second)
	err := hs.Ready(ctx)
	if err == nil || !strings.Contains(err.Error(), "3 of 3 failed") {
		t.Errorf("Ready = %v, want 3 of 3 failed to start", err)
	}
	if s := hs.Stop(); s.Opened != 0 || s.Broken != 0 {
		t.Errorf("Stop: %+v, want nothing opened or broken", s)
	}
}
