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

// HTTPHandler serves the speaker's plain-HTTP endpoints: /healthz (the
// agent is not wedged, see Live), /readyz (the default interface can announce), /metrics
// (see RegisterMetrics), /announcements (the VIPs announced or advertised,
// as a JSON list) and /bgp (the BGP sessions and what goes to which peer).
func (a *Agent) HTTPHandler() http.Handler {
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
