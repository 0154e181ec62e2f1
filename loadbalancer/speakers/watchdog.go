package speakers

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// watchdogPasses counts the watchdogs' checks, for tests that wait for
// the watchdog to have had its chance.
var watchdogPasses atomic.Uint64

// watchdog ends a stream whose speaker is silent too long: at first while
// connecting (with a grace for the TLS handshake), then between reports.
// Before the leader is ready no heartbeats flow, so silence does not count.
type watchdog struct {
	heartbeat, limit time.Duration
	misses           int
	ready            func() bool

	mu   sync.Mutex
	last time.Time
}

func newWatchdog(heartbeat time.Duration, misses int, ready func() bool) *watchdog {
	limit := heartbeat * time.Duration(misses)
	return &watchdog{
		heartbeat: heartbeat, misses: misses, limit: limit, ready: ready,
		last: time.Now().Add(max(2*time.Second, limit) - limit), // grace for the handshake
	}
}

func (w *watchdog) seen() {
	w.mu.Lock()
	w.last = time.Now()
	w.mu.Unlock()
}

func (w *watchdog) run(ctx context.Context, cancel context.CancelCauseFunc, addr string) {
	t := time.NewTicker(w.heartbeat / 4)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		watchdogPasses.Add(1)
		if !w.ready() {
			w.seen()
			continue
		}
		w.mu.Lock()
		silent := time.Since(w.last)
		w.mu.Unlock()
		if silent > w.limit {
			cancel(fmt.Errorf("speaker at %s silent for %s (heartbeat %s × %d misses)", addr, silent.Round(time.Millisecond), w.heartbeat, w.misses))
			return
		}
	}
}
