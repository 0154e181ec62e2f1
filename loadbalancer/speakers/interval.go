package speakers

import (
	"math"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// DefaultHeartbeatRate is how many heartbeats per second the CCM sends at
// most, summed over all speakers (Options.HeartbeatRate).
//
// Pacing policy. Each heartbeat costs the CCM a write and a read (TLS,
// HTTP/2, two system calls: about 125 µs of CPU per exchange on the
// two-core machine of `make scale`), so a fixed interval makes the idle
// CCM's CPU grow with the nodes: 1,000 speakers at 75 ms are 13,333
// exchanges a second, more than a core, and a starved CCM reads answers
// late and takes live speakers for lost. Below the rate nothing changes:
// up to 150 speakers keep the configured interval (75 ms, a silent node's
// VIPs move after 225 ms). Beyond it, every stream's interval is the
// smallest multiple of the configured one that keeps the sum within the
// rate, so detection grows with the fleet instead of the CCM's load: 300
// speakers 150 ms (a silent node detected after 450 ms), 1,000 speakers
// 525 ms (1.6 s). A speaker crash or a closed connection is detected at
// once at any size; only a silent node waits for the misses.
const DefaultHeartbeatRate = 2000

// heartbeatInterval is the interval of each of n streams sharing rate
// heartbeats per second: base while n streams at base stay within the
// rate, else the smallest multiple of base that does. A rate of 0 or less
// leaves base.
func heartbeatInterval(base time.Duration, rate, n int) time.Duration {
	if rate <= 0 || n <= 0 || base <= 0 {
		return base
	}
	perBase := float64(rate) * base.Seconds() // streams one base interval's budget covers
	k := math.Ceil(float64(n) / perBase)
	return base * time.Duration(max(1, k))
}

// repaceLocked sets the heartbeat interval for the number of speakers now;
// m.mu is held. Streams take it at their next heartbeat.
func (m *Manager) repaceLocked() {
	iv := heartbeatInterval(m.opts.Heartbeat, m.opts.HeartbeatRate, len(m.sessions))
	if old := time.Duration(m.interval.Swap(int64(iv))); old != iv {
		heartbeatIntervalSeconds.Set(iv.Seconds())
		if old != 0 {
			m.log.Info("Heartbeat interval changed", "interval", iv, "speakers", len(m.sessions), "heartbeatRate", m.opts.HeartbeatRate, "lossAfter", iv*time.Duration(m.opts.Misses))
		}
	}
}

// Heartbeat is the interval between heartbeats on each stream now: the
// configured one, or a multiple of it with many speakers (see
// DefaultHeartbeatRate).
func (m *Manager) Heartbeat() time.Duration { return time.Duration(m.interval.Load()) }

// LossLimit is how long a speaker may stay silent now before it is
// declared lost.
func (m *Manager) LossLimit() time.Duration {
	return m.Heartbeat() * time.Duration(m.opts.Misses)
}

// repace is the heartbeat seq: at the Manager's interval now, and saying
// so, when it changed and the speaker takes it (takes; hb and wd move to
// it); else at the stream's interval.
func (s *session) repace(seq uint64, takes bool, hb *time.Ticker, wd *watchdog) *speakerv1.Heartbeat {
	h := &speakerv1.Heartbeat{Seq: seq}
	iv := s.m.Heartbeat()
	if !takes || iv == wd.interval() {
		return h
	}
	hb.Reset(iv)
	wd.setInterval(iv)
	h.IntervalMs = uint32(iv.Milliseconds())
	return h
}

// takesInterval says whether the speaker takes Heartbeat.interval_ms.
func (s *session) takesInterval() bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.state.Has(speakerv1.CapabilityHeartbeatInterval)
}
