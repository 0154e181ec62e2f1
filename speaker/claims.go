package speaker

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// Claim is another host's packet claiming an address: an ARP request or
// reply with the address as sender IP from another MAC, a Neighbor
// Advertisement for it or a Solicitation from it, or an answer to a probe.
type Claim struct {
	Addr netip.Addr
	MAC  net.HardwareAddr
	// Kind is what the packet was: arp-request, arp-reply, arp-probe, na,
	// ns or dad.
	Kind string
	At   time.Time
}

// claimKinds are the kinds of claim counted by name; any other is
// "other", so that the label stays bounded.
var claimKinds = []string{"arp-request", "arp-reply", "arp-probe", "na", "ns", "dad"}

func claimKind(k string) string {
	if slices.Contains(claimKinds, k) {
		return k
	}
	return "other"
}

// Claims of one VIP by one host are recorded (and so reported) at most
// this often; lastClaim always moves.
const claimRefresh = time.Second

// recentClaim is how recent a claim makes a speaker that has just become
// cut off yield the VIP.
const recentClaim = time.Second

// cutOffFactor times the heartbeat interval is how long the speaker may
// hear nothing from the stream it follows before it holds itself cut off:
// two intervals (150 ms at the default 75 ms) leave a heartbeat late by
// up to one interval unnoticed, and are still well before the CCM
// declares the node lost and moves its VIPs (three intervals unanswered,
// plus planning), so the new owner's gratuitous ARP / NA always finds the
// old node cut off.
const cutOffFactor = 2

// claimed takes another host's claim of an address, seen on interface
// ifc. Claims of addresses the agent does not answer for on ifc are
// ignored. The announcer calls it from its receiving goroutine: it only
// records the claim (reported as VIPStatus.claimed_by) and, when the
// speaker is cut off from the CCM, hands the VIP to the timers goroutine
// to yield; it never waits for I/O.
func (a *Agent) claimed(ifc string, c Claim) {
	addr := c.Addr.Unmap()
	kind := claimKind(c.Kind)
	now := a.now()
	at := c.At
	if at.IsZero() {
		at = now
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	v := a.vips[addr]
	if v == nil || v.state != stateAnnouncing || !slices.Contains(v.announced, ifc) {
		return
	}
	claimsTotal.WithLabelValues(kind).Inc()
	v.lastClaim = now
	// At most one new record (and report) per VIP per claimRefresh, even
	// from hosts that take turns: claims must not drive reports.
	if v.claim == nil || at.Sub(v.claim.At) >= claimRefresh {
		v.claim = &Claim{Addr: addr, MAC: slices.Clone(c.MAC), Kind: kind, At: at}
		a.vipChangedLocked(addr)
		a.notifyLocked()
	}
	if a.cutOffLocked(now) && !a.toYield[addr] {
		a.toYield[addr] = true
		a.kick()
	}
}

// cutOffLocked reports whether the speaker has heard nothing from the
// stream it follows for cutOffFactor heartbeat intervals (never with an
// interval of 0: a CCM that does not say).
func (a *Agent) cutOffLocked(now time.Time) bool {
	return a.hbInterval > 0 && now.Sub(a.heard) > a.cutOffAfterLocked()
}

func (a *Agent) cutOffAfterLocked() time.Duration {
	return time.Duration(cutOffFactor * float64(a.hbInterval))
}

// heardFrom notes that stream id sent instruction in (a heartbeat may
// carry a new interval).
func (a *Agent) heardFrom(id uint64, in *speakerv1.Instruction) {
	now := a.now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if s := a.streams[id]; s != nil {
		s.lastHeard = now
	}
	if id != a.stream {
		return
	}
	a.heard = now
	kick := a.wasCut // the timers goroutine notes the end of the cut-off, and watches for the next
	if ms := in.GetHeartbeat().GetIntervalMs(); ms > 0 && time.Duration(ms)*time.Millisecond != a.hbInterval {
		// The CCM paces its heartbeats anew (Heartbeat.interval_ms): the
		// cut-off deadline follows.
		a.hbInterval = time.Duration(ms) * time.Millisecond
		kick = true
	}
	if kick {
		a.kick()
	}
}

// timers yields claimed VIPs and probes VIPs in CONFLICT again when due,
// until ctx ends: when the speaker becomes cut off it yields every VIP
// claimed within recentClaim; claimed hands it the VIPs claimed while cut
// off.
func (a *Agent) timers(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	// The VIPs are scanned for due probes only when kicked (a new
	// conflict kicks) or when the earliest known probe is due, not at
	// every wake-up for the cut-off deadline, which every heartbeat moves:
	// a scan is O(VIPs).
	scan := true
	var probeDue time.Time // the earliest probe found by the last scan; zero: none
	for {
		now := a.now()
		a.mu.Lock()
		cut := a.cutOffLocked(now)
		if cut && !a.wasCut && !a.closed {
			a.log.Info("Cut off from the CCM: giving up VIPs that another host claims", "silentFor", now.Sub(a.heard).Round(time.Millisecond), "heartbeatInterval", a.hbInterval)
			for addr, v := range a.vips {
				if v.answering() && !v.lastClaim.IsZero() && now.Sub(v.lastClaim) <= recentClaim {
					a.toYield[addr] = true
				}
			}
		} else if !cut && a.wasCut {
			a.log.Info("Hearing the CCM again")
		}
		a.wasCut = cut
		var yield, due []netip.Addr
		for addr := range a.toYield {
			yield = append(yield, addr)
		}
		clear(a.toYield)
		var next time.Time
		if !cut && a.hbInterval > 0 {
			next = a.heard.Add(a.cutOffAfterLocked() + time.Millisecond)
		}
		if scan || !probeDue.IsZero() && !probeDue.After(now) {
			probeDue = time.Time{}
			for addr, v := range a.vips {
				if v.state != stateConflict || a.closed {
					continue
				}
				if !v.probeAt.After(now) {
					due = append(due, addr)
				} else if probeDue.IsZero() || v.probeAt.Before(probeDue) {
					probeDue = v.probeAt
				}
			}
		}
		if !probeDue.IsZero() && (next.IsZero() || probeDue.Before(next)) {
			next = probeDue
		}
		a.mu.Unlock()
		scan = false
		if len(yield) > 0 {
			a.yield(yield)
		}
		if len(due) > 0 {
			a.reprobe(due)
		}
		if len(yield) > 0 || len(due) > 0 {
			scan = true
			continue
		}
		wait := time.Hour
		if !next.IsZero() {
			wait = max(next.Sub(now), time.Millisecond)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-a.yieldKick:
			scan = true
			if !t.Stop() {
				select {
				case <-t.C:
				default:
				}
			}
		case <-t.C:
		}
	}
}

// yield stops answering for addrs on every interface, if the speaker is
// still cut off: another host claimed them, most likely the node the CCM
// moved them to. A later snapshot or update that lists one announces it
// again.
func (a *Agent) yield(addrs []netip.Addr) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.mu.Lock()
	if a.closed || !a.cutOffLocked(a.now()) {
		a.mu.Unlock()
		return // the CCM decides again
	}
	var ops []vipOp
	for _, addr := range addrs {
		v := a.vips[addr]
		if v == nil || !v.answering() {
			continue
		}
		ops = append(ops, vipOp{addr: addr, v: v, service: v.service, withdraw: slices.Clone(v.announced), yield: true})
	}
	a.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	a.perform(ops)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recordLocked(ops)
	a.notifyLocked()
}

// reprobe probes the VIPs in CONFLICT among addrs that are due, all
// together, and announces those that are free now.
func (a *Agent) reprobe(addrs []netip.Addr) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.mu.Lock()
	now := a.now()
	var ops []vipOp
	for _, addr := range addrs {
		v := a.vips[addr]
		if a.closed || v == nil || v.state != stateConflict || v.probeAt.After(now) {
			continue
		}
		ops = append(ops, vipOp{addr: addr, v: v, service: v.service, announce: true, probe: true, ifcs: slices.Clone(v.interfaces)})
	}
	a.mu.Unlock()
	if len(ops) == 0 {
		return
	}
	a.perform(ops)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recordLocked(ops)
	a.notifyLocked()
}
