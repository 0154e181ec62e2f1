package speaker

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"k8s.io/component-base/metrics/legacyregistry"
)

// liveTimeout bounds how long /healthz waits for the agent's lock.
const liveTimeout = 2 * time.Second

// HTTPOption configures HTTPHandler.
type HTTPOption func(*httpOptions)

type httpOptions struct {
	debug bool
}

// WithDebugEndpoints makes HTTPHandler also serve /announcements and /bgp.
// They tell whoever reaches the port where every VIP is announced and how
// BGP is set up (peers, policies, last errors), and the port is plain HTTP
// without authentication on the node network: off unless asked for
// (ironlb-speaker --debug-endpoints).
func WithDebugEndpoints() HTTPOption { return func(o *httpOptions) { o.debug = true } }

// HTTPHandler serves the speaker's plain-HTTP endpoints: /healthz (the
// agent is not wedged, see Live), /readyz (the default interface can
// announce) and /metrics (see RegisterMetrics: counts, no addresses or
// peers); with WithDebugEndpoints also /announcements (the VIPs announced or
// advertised, as a JSON list) and /bgp (the BGP sessions and what goes to
// which peer). Any other path is 404.
func (a *Agent) HTTPHandler(opts ...HTTPOption) http.Handler {
	var o httpOptions
	for _, opt := range opts {
		opt(&o)
	}
	RegisterMetrics(a)
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), liveTimeout)
		defer cancel()
		if err := a.Live(ctx); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := a.Healthy(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.Handle("/metrics", legacyregistry.Handler())
	if !o.debug {
		return mux
	}
	mux.HandleFunc("/bgp", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.BGPState())
	})
	mux.HandleFunc("/announcements", func(w http.ResponseWriter, _ *http.Request) {
		addrs := []string{}
		for _, addr := range a.Addresses() {
			addrs = append(addrs, addr.String())
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(addrs)
	})
	return mux
}
