package planner

import (
	"time"
)

// settle is the planner's answer to losing most speakers at once.
//
// A speaker lost on its own (its process crashed, its node died) is a node
// problem: its VIPs move at once. But when most speakers are lost within
// one heartbeat window, the likely cause is on the CCM's side (its own
// network blipped, its CA changed, it was paused), and the speakers keep
// announcing while the CCM cannot reach them. Moving their VIPs then would
// pile them onto whichever speaker reconnects first. So the planner
// settles: VIPs stay on their unreachable speakers for SettleWindow, and
// the window starts again when the first speaker comes back, giving the
// others as long to return. Speakers back in time keep their VIPs. VIPs of
// speakers still away when the window ends move, spread over the live
// nodes by rendezvous hashing. While no speaker at all is reachable there
// is nowhere to move to, and the planner keeps settling.
//
// A mass loss is: at least two speakers, and more than half of those that
// ever reported, lost within one loss-detection time of each other or
// already silent for two heartbeats (about to be declared lost).
type settle struct {
	active     bool
	since      time.Time // when the mass loss was seen
	until      time.Time // VIPs of lost speakers move after this
	recovering bool      // a speaker came back since
}

// updateSettleLocked starts, extends or ends settling from the speakers'
// states in w.
func (p *Planner) updateSettleLocked(w *world) {
	s := &p.settle
	window := p.speakers.LossLimit() + p.speakers.Heartbeat()
	silentLimit := 2 * p.speakers.Heartbeat()
	var known, down, up int
	for _, n := range w.nodes {
		st := n.state
		if !n.session || !st.Reported {
			continue
		}
		known++
		switch {
		case !st.Connected && (st.Stopped || st.Restarting):
			// It shut down on purpose (a rolling update): a node event.
		case !st.Connected && w.now.Sub(st.Since) <= window:
			down++
		case st.Connected && w.now.Sub(st.LastReport) > silentLimit:
			down++ // silent: about to be declared lost
		case st.Connected:
			up++
			if s.active && !s.recovering && st.Since.After(s.since) {
				s.recovering = true
				s.until = later(s.until, w.now.Add(p.opts.SettleWindow))
				p.log.Info("A speaker is back after the mass loss; the others have until the end of the settle window", "node", n.name, "until", s.until.Format(time.RFC3339Nano))
			}
		}
	}
	if known >= 2 && down >= 2 && 2*down > known {
		if !s.active {
			*s = settle{active: true, since: w.now, until: w.now.Add(p.opts.SettleWindow)}
			settlesTotal.Inc()
			p.log.Info("Most speakers were lost at once: treating it as a problem of the CCM's side; their VIPs stay where they are while they reconnect",
				"lost", down, "speakers", known, "settleWindow", p.opts.SettleWindow)
		}
	}
	if !s.active {
		return
	}
	if !w.now.Before(s.until) && up > 0 {
		p.log.Info("Settle window over: VIPs of speakers still lost move now", "since", s.since.Format(time.RFC3339Nano))
		*s = settle{}
		return
	}
	// Wake up when the window ends. The queue keeps the earliest of
	// several delays for one key, so every pass arms it again.
	p.queue.AddAfter(allKey, max(s.until.Sub(w.now), 0)+10*time.Millisecond)
}

// startSettle makes a new leader settle when some speakers did not report
// within the grace period: their VIPs, seeded from the previous leader's
// records, stay put for the settle window.
func (p *Planner) startSettle() {
	missing := 0
	for _, n := range p.speakers.Nodes() {
		if st, _ := p.speakers.State(n); !st.Connected {
			missing++
		}
	}
	if missing == 0 {
		return
	}
	now := time.Now()
	p.mu.Lock()
	p.settle = settle{active: true, since: now, until: now.Add(p.opts.SettleWindow)}
	p.mu.Unlock()
	p.log.Info("Some speakers have not reported yet; their VIPs stay where they are for the settle window", "missing", missing, "settleWindow", p.opts.SettleWindow)
	p.queue.AddAfter(allKey, p.opts.SettleWindow+10*time.Millisecond)
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
