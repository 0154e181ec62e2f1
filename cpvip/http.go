package cpvip

import (
	"encoding/json"
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
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		if last := s.lastLoop.Load(); last != 0 && time.Since(time.Unix(0, last)) > 10*time.Second {
			http.Error(w, "election loop stalled", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.electing.Load() {
			http.Error(w, "not taking part in the election yet (waiting for the key files or the socket)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Status())
	})
	mux.Handle("/metrics", legacyregistry.Handler())
	return mux
}
