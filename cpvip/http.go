package cpvip

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"k8s.io/component-base/metrics/legacyregistry"
)

// DefaultHealthPort is the plain-HTTP port of /healthz, /readyz, /status and
// /metrics, on the node IP.
const DefaultHealthPort = 7476

// HTTPHandler serves the speaker's plain-HTTP endpoints: /healthz (the
// election loop runs), /readyz (it has a key and its socket: it takes part
// in the election), /status (Status as JSON) and /metrics.
func (s *Speaker) HTTPHandler() http.Handler {
	return endpoints{
		loop:     "election loop",
		lastLoop: s.lastLoop.Load,
		ready: func() string {
			if !s.electing.Load() {
				return "not taking part in the election yet (waiting for the key files or the socket)"
			}
			return ""
		},
		status: s.Status,
	}.handler()
}

// ListenAndServe serves the HTTP endpoints on addr until ctx ends.
func (s *Speaker) ListenAndServe(ctx context.Context, addr string) error {
	return serveHTTP(ctx, addr, s.HTTPHandler())
}

// endpoints are what both modes serve over plain HTTP.
type endpoints struct {
	// loop names the mode's loop; lastLoop is when it last went round
	// (unix ns, 0 before it started).
	loop     string
	lastLoop func() int64
	// ready says why the speaker is not ready, "" when it is.
	ready  func() string
	status func() Status
}

// handler serves /healthz (the loop went round within 10 s), /readyz,
// /status (Status as JSON) and /metrics.
func (e endpoints) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if last := e.lastLoop(); last != 0 && time.Since(time.Unix(0, last)) > 10*time.Second {
			http.Error(w, e.loop+" stalled", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if why := e.ready(); why != "" {
			http.Error(w, why, http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e.status())
	})
	mux.Handle("/metrics", legacyregistry.Handler())
	return mux
}

// serveHTTP serves h on addr until ctx ends.
func serveHTTP(ctx context.Context, addr string, h http.Handler) error {
	hs := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = hs.Close()
	}()
	if err := hs.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("health endpoint %s: %w", addr, err)
	}
	return nil
}
