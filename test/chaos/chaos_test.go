package chaos

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// TestChaosShort is the short chaos run inside make test (make chaos runs
// the full one): a few kills of the leading CCM during churn, blips of its
// network, a kube-apiserver outage and a leader handover. Every count the
// watcher keeps must stay zero.
func TestChaosShort(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos: runs the control plane, two CCMs and three speakers")
	}
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	SetLog(testWriter{t})
	cfg := Short()
	cfg.LogDir = os.Getenv("IRONLB_CHAOS_LOGDIR")
	f, err := Run(ctx, cfg)
	var b strings.Builder
	f.Print(&b)
	t.Logf("figures:\n%s", b.String())
	if err != nil {
		t.Fatal(err)
	}
	if v := f.Violations(); len(v) > 0 {
		t.Errorf("invariants broken: %s", strings.Join(v, "; "))
	}
	if f.Kills != Short().Kills {
		t.Errorf("%d kills, want %d", f.Kills, Short().Kills)
	}
	// A Service created just before its leader dies waits for the next
	// leader: the lease (8 s), its start and restore.
	if limit := 20 * time.Second; f.UnassignedMax > limit {
		t.Errorf("a Service (%s) waited %s for an address while one was free, want at most %s (a leader takeover)", f.UnassignedMaxOf, f.UnassignedMax, limit)
	}
	if limit := 20 * time.Second; f.UnannouncedMax > limit {
		t.Errorf("a Service's address (%s) went unannounced for %s, want at most %s (a leader takeover)", f.UnannouncedMaxOf, f.UnannouncedMax, limit)
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}
