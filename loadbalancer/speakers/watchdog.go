package speakers

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// watchdogPasses counts the watchdogs' checks, for tests that wait for
// the watchdog to have had its chance.
var watchdogPasses atomic.Uint64

// recheckPause is how long the watchdog lets the CCM's other goroutines
// run (a receive goroutine holding a report it has not recorded yet)
// before it re-checks a speaker that seems silent.
const recheckPause = 3 * time.Millisecond

// stallSlack is how much longer than recheckPause the pause may take
// before the watchdog takes the CCM for starved (see check).
const stallSlack = 10 * time.Millisecond

// watchdog ends a stream whose speaker is silent too long: at first while
// connecting (with a grace for the TLS handshake), then between reports.
// Before the leader is ready no heartbeats flow, so silence does not count.
//
// Only the speaker's silence counts, not the CCM's own stalls (a CPU
// starved by other work, a long garbage collection): once heartbeats
// flow, a speaker is lost only when (a) it has been silent longer than
// the limit (silent: no report taken in and no bytes read from its
// connection, see readClock, since a busy CCM may take in an answer that
// arrived on time late), (b) at least misses heartbeats were written on its stream
// since its last report (the send loop tells, see sentHeartbeat), and (c)
// it is still silent after the watchdog yielded for a moment, so that a
// receive goroutine holding its report could record it, and that moment
// was not much longer than asked for (else the CCM is starved: the
// overrun is its stall, and the next check decides). A pass that comes
// late (the CCM stalled) does not count the stall as the speaker's
// silence.
type watchdog struct {
	heartbeat, limit time.Duration
	misses           int
	ready            func() bool
	// now and pause are the clock and the yield before a re-check
	// (tests replace them).
	now   func() time.Time
	pause func()

	// lastRead is when the stream's connection last read bytes (Unix
	// nanoseconds; see readClock): the speaker's answer may wait there
	// while the CCM is busy.
	lastRead atomic.Int64

	// rearm tells run to work out its next pass again, when the pass it
	// waits for may be too late: the first report ended the handshake
	// grace, or the interval changed.
	rearm chan struct{}

	mu      sync.Mutex
	graced  bool      // last is still the handshake grace, not a report
	last    time.Time // the speaker's last report, moved on by the CCM's own stalls
	beating bool      // heartbeats flow (the send loop runs)
	sent    int       // heartbeats written since the last report
	sending time.Time // when the Send in progress began; zero: none
}

func newWatchdog(heartbeat time.Duration, misses int, ready func() bool) *watchdog {
	return newWatchdogAt(heartbeat, misses, ready, time.Now, yield)
}

// newWatchdogAt is newWatchdog with its clock and its pause before a
// re-check.
func newWatchdogAt(heartbeat time.Duration, misses int, ready func() bool, now func() time.Time, pause func()) *watchdog {
	w := &watchdog{heartbeat: heartbeat, misses: misses, limit: heartbeat * time.Duration(misses), ready: ready, now: now, pause: pause,
		rearm: make(chan struct{}, 1), graced: true}
	w.last = now().Add(max(2*time.Second, w.limit) - w.limit) // grace for the handshake
	return w
}

// interval is the heartbeat interval the watchdog watches.
func (w *watchdog) interval() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.heartbeat
}

// setInterval watches heartbeats every d from now on (the stream's
// interval changed, see session.repace); the limit becomes d × misses.
func (w *watchdog) setInterval(d time.Duration) {
	w.mu.Lock()
	w.heartbeat = d
	w.limit = d * time.Duration(w.misses)
	w.mu.Unlock()
	w.wake()
}

// wake asks run to work out its next pass again.
func (w *watchdog) wake() {
	select {
	case w.rearm <- struct{}{}:
	default: // already asked
	}
}

// yield lets the other goroutines run, then waits recheckPause.
func yield() {
	runtime.Gosched()
	time.Sleep(recheckPause)
}

// seen records a report (or a pause that is the CCM's, not the speaker's).
//
// The first one ends the handshake grace: run's pass, due when the grace
// would have run out (up to 2 s after the stream began), is worked out
// again, so that a speaker lost soon after it connected is found within
// the limit too.
func (w *watchdog) seen() {
	w.mu.Lock()
	w.last = w.now()
	w.sent = 0
	first := w.graced
	w.graced = false
	w.mu.Unlock()
	if first {
		w.wake()
	}
}

// sentHeartbeat records a heartbeat written on the stream: from then on
// a loss needs misses of them unanswered.
func (w *watchdog) sentHeartbeat() {
	w.mu.Lock()
	w.beating = true
	w.sent++
	w.mu.Unlock()
}

// sendBegins and sendEnds bracket every Send on the stream. A Send
// blocked (by flow control: the speaker reads nothing) counts one
// heartbeat per interval it lasts, since the heartbeats it holds back
// would have gone unanswered too.
func (w *watchdog) sendBegins() {
	w.mu.Lock()
	w.sending = w.now()
	w.mu.Unlock()
}

func (w *watchdog) sendEnds() {
	w.mu.Lock()
	w.sending = time.Time{}
	w.mu.Unlock()
}

// tick is the check at now of a pass due at due; it reports how long the
// speaker has been silent when it seems lost (zero otherwise). A pass
// later than a quarter interval moves the speaker's last report on by the
// delay: the CCM stalled, the speaker's answers may wait unread.
func (w *watchdog) tick(now, due time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	if late := now.Sub(due); late > w.heartbeat/4 {
		w.last = w.last.Add(late)
	}
	return w.silentLocked(now)
}

// next is when the pass after one at now is due: when the speaker's
// silence would pass the limit, and no sooner than a quarter interval
// from now (a silent speaker whose heartbeats are not all written yet is
// checked again at that pace).
func (w *watchdog) next(now time.Time) time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	due := w.heardLocked().Add(w.limit + time.Millisecond)
	if soonest := now.Add(w.heartbeat / 4); due.Before(soonest) {
		return soonest
	}
	return due
}

// stalled moves the speaker's last report on by d, a stall of the CCM's
// own.
func (w *watchdog) stalled(d time.Duration) {
	w.mu.Lock()
	w.last = w.last.Add(d)
	w.mu.Unlock()
}

// recheck is the check after the pause: it reports the silence when the
// speaker still seems lost.
func (w *watchdog) recheck(now time.Time) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.silentLocked(now)
}

// silentLocked is the speaker's silence at now when it breaks the rules
// above, zero otherwise; w.mu is held.
func (w *watchdog) silentLocked(now time.Time) time.Duration {
	silent := now.Sub(w.heardLocked())
	sent := w.sent
	if !w.sending.IsZero() {
		sent += int(now.Sub(w.sending) / w.heartbeat)
	}
	if silent <= w.limit || w.beating && sent < w.misses {
		return 0
	}
	return silent
}

// start arms the watchdog's first pass, then runs it in the background
// (run); the first report (seen) and a new interval (setInterval) re-arm
// it from then on.
func (w *watchdog) start(ctx context.Context, cancel context.CancelCauseFunc, addr string) {
	due := w.next(w.now())
	go w.run(ctx, cancel, addr, time.NewTimer(time.Until(due)), due)
}

// run makes a pass whenever the speaker's silence could pass the limit
// (see next), not on a fixed tick: a speaker that answers every heartbeat
// costs the CCM one timer wake-up per limit, not one per quarter
// interval. It ends when ctx does or it cancels the stream.
func (w *watchdog) run(ctx context.Context, cancel context.CancelCauseFunc, addr string, t *time.Timer, due time.Time) {
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.rearm:
			now := w.now()
			due = w.next(now)
			t.Reset(due.Sub(now))
			continue
		case <-t.C:
		}
		if err := w.check(due, addr); err != nil {
			cancel(err)
			return
		}
		now := w.now()
		due = w.next(now)
		t.Reset(due.Sub(now))
	}
}

// check is the pass due at due: an error when the speaker is lost.
func (w *watchdog) check(due time.Time, addr string) error {
	watchdogPasses.Add(1)
	if !w.ready() {
		w.seen()
		return nil
	}
	if w.tick(w.now(), due) == 0 {
		return nil
	}
	before := w.now()
	w.pause()
	after := w.now()
	if over := after.Sub(before) - recheckPause; over > stallSlack {
		// The pause overran: the CCM itself is starved, and the
		// speaker's answer may wait unread. Its silence does not count
		// the stall; the next check decides.
		w.stalled(over)
		return nil
	}
	if silent := w.recheck(after); silent > 0 {
		return fmt.Errorf("speaker at %s silent for %s (heartbeat %s × %d misses)", addr, silent.Round(time.Millisecond), w.heartbeat, w.misses)
	}
	return nil
}

// heardLocked is when the speaker was last heard: its last report (moved
// on by the CCM's stalls) or the last bytes its connection read,
// whichever is later; w.mu is held.
func (w *watchdog) heardLocked() time.Time {
	if r := w.lastRead.Load(); r != 0 {
		if read := time.Unix(0, r); read.After(w.last) {
			return read
		}
	}
	return w.last
}
