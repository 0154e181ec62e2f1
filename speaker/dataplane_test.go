package speaker

import (
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestDataPlaneHealthCheck: what one check of kube-proxy's health says,
// against a real HTTP server.
func TestDataPlaneHealthCheck(t *testing.T) {
	var status atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()
	closed := httptest.NewServer(http.NotFoundHandler())
	closedURL := closed.URL + "/healthz"
	closed.Close()
	for _, tc := range []struct {
		name        string
		url         string
		status      int
		ok, refused bool
	}{
		{"healthy", srv.URL + "/healthz", 200, true, false},
		{"unhealthy", srv.URL + "/healthz", 503, false, false},
		{"refused", closedURL, 0, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status.Store(int32(tc.status))
			h := NewDataPlaneHealth(tc.url, logr.Discard())
			ok, refused, reason := h.check(t.Context())
			if ok != tc.ok || refused != tc.refused || (reason == "") != tc.ok {
				t.Errorf("check() = %v, %v, %q; want ok %v, refused %v", ok, refused, reason, tc.ok, tc.refused)
			}
		})
	}
}

// TestDataPlaneHoldDown: the gate opens only once kube-proxy was healthy;
// two failures (or one refused connection) make the data plane not ready;
// it is ready again after a hold-down of continuous health, doubled on a
// failure within a minute of the last recovery, up to a minute.
func TestDataPlaneHoldDown(t *testing.T) {
	type step struct {
		after       time.Duration // since the previous step
		ok, refused bool
		wantReady   bool
	}
	const s = time.Second
	ok := func(after time.Duration, ready bool) step { return step{after: after, ok: true, wantReady: ready} }
	fail := func(after time.Duration, ready bool) step { return step{after: after, wantReady: ready} }
	refused := func(after time.Duration, ready bool) step { return step{after: after, refused: true, wantReady: ready} }
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"never healthy: never gated", []step{fail(0, true), fail(s, true), refused(s, true)}},
		{"two failures", []step{ok(0, true), fail(s, true), fail(s, false)}},
		{"one failure then health", []step{ok(0, true), fail(s, true), ok(s, true), fail(s, true), ok(s, true)}},
		{"refused at once", []step{ok(0, true), refused(s, false)}},
		{"hold-down 3 s", []step{ok(0, true), refused(s, false), ok(s, false), ok(2*s, false), ok(s, true)}},
		{"hold-down restarts on a failure", []step{ok(0, true), refused(s, false), ok(s, false), fail(2*s, false), ok(s, false), ok(2*s, false), ok(s, true)}},
		{"flap within a minute doubles", []step{
			ok(0, true), refused(s, false), ok(s, false), ok(3*s, true), // recovered after 3 s
			refused(10*s, false), ok(s, false), ok(3*s, false), ok(3*s, true), // 6 s
			refused(59*s, false), ok(s, false), ok(11*s, false), ok(s, true), // 12 s
		}},
		{"failure a minute after recovery: 3 s again", []step{
			ok(0, true), refused(s, false), ok(s, false), ok(3*s, true),
			refused(61*s, false), ok(s, false), ok(3*s, true),
		}},
		{"capped at 60 s", func() []step {
			st := []step{ok(0, true)}
			hold := 3 * s
			for range 6 {
				st = append(st, refused(s, false), ok(s, false), ok(hold-s, false), ok(s, true))
				hold = min(2*hold, 60*s)
			}
			// The hold-down is 60 s now, not 96 s.
			return append(st, refused(s, false), ok(s, false), ok(60*s, true))
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := time.Unix(1_000_000, 0)
			h := newDataPlaneHealth("http://kube-proxy.invalid/healthz", logr.Discard(), func() time.Time { return now })
			var got, want []bool
			for _, st := range tc.steps {
				now = now.Add(st.after)
				h.observe(st.ok, st.refused, map[bool]string{false: "unhealthy"}[st.ok])
				got = append(got, h.Status().GetReady())
				want = append(want, st.wantReady)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("ready after each check (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDataPlaneReported: the agent lists the capability and reports the
// data plane, and tells the CCM when it changes.
func TestDataPlaneReported(t *testing.T) {
	h := NewDataPlaneHealth("http://kube-proxy.invalid/healthz", logr.Discard())
	_, _, c := newTestAgent(t, WithDataPlane(h))
	stream, first := open(t, c)
	if !first.GetDataPlane().GetReady() {
		t.Errorf("first report's data plane = %v, want ready", first.GetDataPlane())
	}
	s := readReports(t, stream)
	h.observe(true, false, "")
	h.observe(false, true, "connection refused")
	s.waitReport(t, "data plane not ready", func(r *speakerv1.Report) bool {
		return !r.GetDataPlane().GetReady() && r.GetDataPlane().GetReason() == "connection refused"
	})
}
