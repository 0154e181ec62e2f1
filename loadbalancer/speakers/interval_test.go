package speakers

import (
	"testing"
	"time"
)

// TestHeartbeatInterval: the configured interval until the speakers
// exceed the rate, then the smallest multiple of it within the rate.
func TestHeartbeatInterval(t *testing.T) {
	const base = 75 * time.Millisecond
	for _, tc := range []struct {
		name     string
		rate, n  int
		want     time.Duration
		wantRate float64 // heartbeats per second at want, at most rate
	}{
		{name: "no speakers", rate: 2000, n: 0, want: base},
		{name: "three nodes", rate: 2000, n: 3, want: base, wantRate: 40},
		{name: "exactly the rate", rate: 2000, n: 150, want: base, wantRate: 2000},
		{name: "one beyond", rate: 2000, n: 151, want: 2 * base, wantRate: 1006.7},
		{name: "300 nodes", rate: 2000, n: 300, want: 150 * time.Millisecond, wantRate: 2000},
		{name: "1,000 nodes", rate: 2000, n: 1000, want: 525 * time.Millisecond, wantRate: 1904.8},
		{name: "5,000 nodes", rate: 2000, n: 5000, want: 2550 * time.Millisecond, wantRate: 1960.8},
		{name: "no bound", rate: -1, n: 5000, want: base},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := heartbeatInterval(base, tc.rate, tc.n)
			if got != tc.want {
				t.Errorf("heartbeatInterval(%s, %d, %d) = %s, want %s", base, tc.rate, tc.n, got, tc.want)
			}
			if tc.n > 0 && tc.rate > 0 {
				r := float64(tc.n) / got.Seconds()
				if r > float64(tc.rate)+1e-9 || r < tc.wantRate-0.1 || r > tc.wantRate+0.1 {
					t.Errorf("%d streams at %s send %.1f heartbeats/s, want %.1f (at most %d)", tc.n, got, r, tc.wantRate, tc.rate)
				}
			}
		})
	}
}
