package cpvip

import (
	"context"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// readyzServer is an HTTPS /readyz (certificate for example.com, per
// httptest) that counts the requests answered while failing.
type readyzServer struct {
	*httptest.Server
	ok       atomic.Bool
	hang     atomic.Bool
	failures atomic.Int32
	oks      atomic.Int32
}

func newReadyzServer(t *testing.T) (*readyzServer, string) {
	t.Helper()
	s := &readyzServer{}
	s.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if s.hang.Load() {
			s.failures.Add(1)
			<-r.Context().Done()
			return
		}
		if r.URL.Path != "/readyz" || !s.ok.Load() {
			s.failures.Add(1)
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		s.oks.Add(1)
		_, _ = w.Write([]byte("ok"))
	}))
	t.Cleanup(s.Close)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return s, ca
}

func TestReadiness(t *testing.T) {
	srv, ca := newReadyzServer(t)
	srv.ok.Store(true)
	changes := make(chan ReadyState, 16)
	r := NewReadiness(ReadinessConfig{URL: srv.URL + "/readyz", CAFile: ca, ServerName: "example.com", Interval: 5 * time.Millisecond},
		logr.Discard(), func(s ReadyState) { changes <- s })
	if r.State().Ready {
		t.Fatal("ready before any check")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	wait := func(want bool) ReadyState {
		t.Helper()
		select {
		case s := <-changes:
			if s.Ready != want {
				t.Fatalf("changed to ready=%v (%s), want %v", s.Ready, s.Err, want)
			}
			return s
		case <-time.After(5 * time.Second):
			t.Fatalf("no change to ready=%v", want)
		}
		return ReadyState{}
	}
	wait(true) // one success: ready
	srv.failures.Store(0)
	srv.ok.Store(false)
	s := wait(false)
	if n := srv.failures.Load(); n < UnreadyAfter {
		t.Errorf("unready after %d failed checks, want at least %d", n, UnreadyAfter)
	}
	if !strings.Contains(s.Err, "503") {
		t.Errorf("error %q does not say 503", s.Err)
	}
	srv.ok.Store(true)
	wait(true)
}

// TestReadinessReadyAfter: with ReadyAfter (BGP mode) an unready
// apiserver turns ready only after that many successes in a row.
func TestReadinessReadyAfter(t *testing.T) {
	srv, ca := newReadyzServer(t)
	srv.ok.Store(true)
	changes := make(chan ReadyState, 16)
	r := NewReadiness(ReadinessConfig{URL: srv.URL + "/readyz", CAFile: ca, ServerName: "example.com", Interval: 5 * time.Millisecond, ReadyAfter: 4},
		logr.Discard(), func(s ReadyState) { changes <- s })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	select {
	case s := <-changes:
		if !s.Ready {
			t.Fatalf("changed to unready (%s)", s.Err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("never ready")
	}
	if n := srv.oks.Load(); n < 4 {
		t.Errorf("ready after %d successful checks, want at least 4", n)
	}
}

// TestReadinessTimeouts: checks that only time out (a starved node) make
// the apiserver unready only after UnreadyAfterTimeouts of them, not after
// UnreadyAfter.
func TestReadinessTimeouts(t *testing.T) {
	srv, ca := newReadyzServer(t)
	srv.ok.Store(true)
	changes := make(chan ReadyState, 16)
	r := NewReadiness(ReadinessConfig{URL: srv.URL + "/readyz", CAFile: ca, ServerName: "example.com", Interval: 5 * time.Millisecond, Timeout: 20 * time.Millisecond},
		logr.Discard(), func(s ReadyState) { changes <- s })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	if s := <-changes; !s.Ready {
		t.Fatalf("changed to unready (%s)", s.Err)
	}
	srv.failures.Store(0)
	srv.hang.Store(true)
	select {
	case s := <-changes:
		if s.Ready {
			t.Fatal("changed to ready")
		}
		if n := srv.failures.Load(); n < UnreadyAfterTimeouts || n <= UnreadyAfter {
			t.Errorf("unready after %d timed-out checks, want at least %d", n, UnreadyAfterTimeouts)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("timeouts never made it unready")
	}
}

func TestReadinessRefuses(t *testing.T) {
	srv, ca := newReadyzServer(t)
	srv.ok.Store(true)
	tests := []struct {
		name, url, ca, serverName, want string
	}{
		{"missing CA file", srv.URL + "/readyz", filepath.Join(t.TempDir(), "none"), "example.com", "no such file"},
		{"CA file without a certificate", srv.URL + "/readyz", writeTemp(t, "not pem"), "example.com", "no PEM certificate"},
		{"wrong server name", srv.URL + "/readyz", ca, "kubernetes", "certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReadiness(ReadinessConfig{URL: tt.url, CAFile: tt.ca, ServerName: tt.serverName}, logr.Discard(), nil)
			err := r.check(context.Background())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("check: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
