package speakers

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestWatchdogRules: the watchdog's rules on a simulated clock (heartbeat
// 80 ms × 3 misses: a limit of 240 ms, a check every 20 ms). Each case
// reports once, writes heartbeats, then checks at the times given; want
// is the first check (its time) that declares the speaker lost, 0 for
// none.
func TestWatchdogRules(t *testing.T) {
	const (
		hb       = 80 * time.Millisecond
		misses   = 3
		interval = hb / 4
	)
	every := func(from, to time.Duration) []time.Duration {
		var out []time.Duration
		for at := from; at <= to; at += interval {
			out = append(out, at)
		}
		return out
	}
	for _, tc := range []struct {
		name       string
		notReady   bool
		heartbeats int  // written after the report at 0
		noReport   bool // connecting: no report yet, no heartbeat
		// blockedSend: a Send begins right after the report and never
		// ends.
		blockedSend bool
		checks      []time.Duration
		// answerInPause: the receive goroutine records a report while
		// the watchdog yields.
		answerInPause bool
		// readAt, when set, is when the connection last read bytes (an
		// answer not taken in yet).
		readAt time.Duration
		// pauseTakes, when set, is how long the first pause before a
		// re-check lasts (the CCM starved) instead of recheckPause.
		pauseTakes time.Duration
		want       time.Duration
	}{
		{name: "silent speaker: lost once silent beyond the limit", heartbeats: 3, checks: every(interval, 400*time.Millisecond), want: 260 * time.Millisecond},
		{name: "silent at the limit exactly: not yet", heartbeats: 3, checks: every(interval, 240*time.Millisecond)},
		{name: "fewer heartbeats written than misses (the CCM's sender stalled)", heartbeats: 2, checks: every(interval, time.Second)},
		{name: "heartbeats flow, none written since the report", heartbeats: 0, checks: every(interval, time.Second)},
		{name: "a Send blocked (flow control) counts its intervals as heartbeats", heartbeats: 1, blockedSend: true, checks: every(interval, 400*time.Millisecond), want: 260 * time.Millisecond},
		{name: "a report waits unread: recorded while the watchdog yields", heartbeats: 3, answerInPause: true, checks: every(interval, time.Second)},
		{
			name: "a late check (the CCM stalled) does not count the stall", heartbeats: 3,
			// On time until 100 ms, then 300 ms late: 280 ms of stall are
			// not the speaker's; it is lost once silent 240 ms beyond them.
			checks: append(append(every(interval, 100*time.Millisecond), 400*time.Millisecond), every(420*time.Millisecond, 700*time.Millisecond)...),
			want:   540 * time.Millisecond,
		},
		{
			// The first pause, at the check of 260 ms, overruns by 50 ms:
			// the silence is counted from 50 ms later, so the speaker is
			// lost at the first check beyond 240 + 50 ms.
			name: "a pause that overruns (the CCM starved) counts as the CCM's stall", heartbeats: 3, pauseTakes: 53 * time.Millisecond,
			checks: every(interval, 700*time.Millisecond), want: 300 * time.Millisecond,
		},
		{
			// Bytes read at 200 ms (an answer the CCM has not taken in):
			// silence counts from them, lost at the first check beyond
			// 200 + 240 ms.
			name: "bytes read but not taken in yet: silence counts from them", heartbeats: 3, readAt: 200 * time.Millisecond,
			checks: every(interval, time.Second), want: 460 * time.Millisecond,
		},
		{name: "leader not ready: silence never counts", notReady: true, heartbeats: 3, checks: every(interval, 3*time.Second)},
		{name: "connecting: silence alone counts, after the handshake grace", noReport: true, checks: every(interval, 2100*time.Millisecond), want: 2020 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Unix(1000, 0)
			now := start
			var w *watchdog
			overran := false
			pause := func() {
				if tc.pauseTakes > 0 && !overran {
					overran = true
					now = now.Add(tc.pauseTakes)
					return
				}
				now = now.Add(recheckPause)
				if tc.answerInPause {
					w.seen()
				}
			}
			w = newWatchdogAt(hb, misses, func() bool { return !tc.notReady }, func() time.Time { return now }, pause)
			if !tc.noReport {
				w.seen()
				for range tc.heartbeats {
					w.sentHeartbeat()
				}
				if tc.readAt > 0 {
					w.lastRead.Store(start.Add(tc.readAt).UnixNano())
				}
				if tc.blockedSend {
					w.sendBegins()
				}
				if tc.heartbeats == 0 {
					w.beating = true // heartbeats flow; none written since the report
				}
			}
			var got time.Duration
			for i, at := range tc.checks {
				now = start.Add(at)
				// Each pass was due a quarter interval after the one
				// before (on time unless the checks skip ahead).
				due := now
				if i > 0 {
					due = start.Add(tc.checks[i-1] + interval)
				}
				if err := w.check(due, "192.0.2.1:7473"); err != nil {
					got = at
					t.Logf("lost at %s: %v", at, err)
					break
				}
			}
			if got != tc.want {
				t.Errorf("declared lost at check %s, want %s (0: never)", got, tc.want)
			}
		})
	}
}

// TestWatchdogNext: a pass is due when the silence would pass the limit
// (heartbeat 80 ms × 3), no sooner than a quarter interval from now.
func TestWatchdogNext(t *testing.T) {
	start := time.Unix(1000, 0)
	for _, tc := range []struct {
		name      string
		reportAt  time.Duration // the speaker's last report
		now, want time.Duration
	}{
		{name: "just reported", reportAt: 0, now: 0, want: 241 * time.Millisecond},
		{name: "reported a while ago", reportAt: 100 * time.Millisecond, now: 200 * time.Millisecond, want: 341 * time.Millisecond},
		{name: "silent past the limit: a quarter interval on", reportAt: 0, now: 300 * time.Millisecond, want: 320 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := start.Add(tc.reportAt)
			w := newWatchdogAt(80*time.Millisecond, 3, func() bool { return true }, func() time.Time { return now }, func() {})
			w.seen()
			now = start.Add(tc.now)
			if got := w.next(now).Sub(start); got != tc.want {
				t.Errorf("next(%s) = %s, want %s", tc.now, got, tc.want)
			}
		})
	}
}

// TestWatchdogRearms: run's pass is worked out again when the one it
// waits for would find a lost speaker late: after the first report (the
// pass was due when the handshake grace, 2 s from the stream's start,
// would have run out) and after the interval shrank (due at the old,
// longer limit). A speaker silent since must be found lost well before
// that pass: without the re-arm it cannot be.
func TestWatchdogRearms(t *testing.T) {
	const misses = 3
	for _, tc := range []struct {
		name      string
		heartbeat time.Duration
		act       func(w *watchdog)
		late      time.Duration // from the start: the pass run waited for
	}{
		{name: "the first report ends the grace", heartbeat: 20 * time.Millisecond,
			act: func(w *watchdog) { w.seen() }, late: 2 * time.Second},
		{name: "the interval shrinks", heartbeat: 600 * time.Millisecond,
			// Before any report: the pass is due at the grace's end, 2 s,
			// and a 60 ms limit now finds the silence about 0.26 s in.
			act: func(w *watchdog) { w.setInterval(20 * time.Millisecond) }, late: 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := newWatchdog(tc.heartbeat, misses, func() bool { return true })
			start := time.Now()
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			w.start(ctx, cancel, "192.0.2.1:7473")
			tc.act(w)
			for range misses {
				w.sentHeartbeat() // unanswered
			}
			select {
			case <-ctx.Done():
				if err := context.Cause(ctx); errors.Is(err, context.Canceled) {
					t.Fatalf("stream ended with %v, want the watchdog's loss", err)
				}
			case <-time.After(time.Until(start.Add(tc.late - 100*time.Millisecond))):
				t.Fatalf("a speaker silent since was not found lost before the pass at %s", tc.late)
			}
		})
	}
}
