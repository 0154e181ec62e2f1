package speaker

import (
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// reporter sends the reports of one Sync stream. A report is built and
// sent under its lock, so that reports go out in the order they were
// built: on a stream that asked for VIP changes (Snapshot.vip_deltas)
// each report's VIPs are changes since the one before, and an older one
// must never overtake a newer.
type reporter struct {
	a      *Agent
	id     uint64
	stream speakerv1.Speaker_SyncServer

	mu sync.Mutex
	// last is the stream's latest full report, without its VIPs when
	// they were changes (the next report's changes are then against it).
	last *speakerv1.Report
}

// send sends r, a report that names no VIPs (a heartbeat's answer, an
// attestation).
func (rp *reporter) send(r *speakerv1.Report) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	return rp.stream.Send(r)
}

// sendFirst sends the stream's first report, complete, with the
// enrollment token; later reports compare with it as if it had none.
func (rp *reporter) sendFirst() error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	first := rp.a.report(rp.id, true)
	offer := proto.CloneOf(first)
	offer.Enrollment = rp.a.enrollment()
	if err := rp.stream.Send(offer); err != nil {
		return err
	}
	rp.last = first
	return nil
}

// sendState sends a full report of the agent's state now; with
// onlyIfChanged, not when it would say nothing the latest full report
// did not.
func (rp *reporter) sendState(onlyIfChanged bool) error {
	rp.mu.Lock()
	defer rp.mu.Unlock()
	r := rp.a.report(rp.id, true)
	if r.GetVipsDelta() {
		if onlyIfChanged && len(r.GetVips()) == 0 && len(r.GetVipsGone()) == 0 && proto.Equal(r, rp.last) {
			return nil
		}
		if err := rp.stream.Send(r); err != nil {
			return err
		}
		last := proto.CloneOf(r)
		last.Vips, last.VipsGone = nil, nil
		rp.last = last
		return nil
	}
	if onlyIfChanged && proto.Equal(r, rp.last) {
		return nil
	}
	if err := rp.stream.Send(r); err != nil {
		return err
	}
	rp.last = r
	return nil
}

// vipReport is what a report says of one VIP, comparable: a stream that
// takes VIP changes is sent a VIP whose vipReport differs from the one
// it was sent last.
type vipReport struct {
	state      speakerv1.VIPStatus_State
	interfaces string // joined with "\x00"
	err        string
	claimedBy  string
	claimedMs  int64
}

// reportOf is what a report says of v.
func reportOf(v *vip) vipReport {
	r := vipReport{state: speakerv1.VIPStatus_ANNOUNCING}
	switch len(v.announced) {
	case 0:
	case 1:
		r.interfaces = v.announced[0]
	default:
		r.interfaces = strings.Join(v.announced, "\x00")
	}
	switch {
	case v.err != nil:
		r.state, r.err = speakerv1.VIPStatus_FAILED, v.err.Error()
	case v.state == stateConflict:
		r.state = speakerv1.VIPStatus_CONFLICT
	case v.state == stateYielded:
		r.state = speakerv1.VIPStatus_YIELDED
	}
	if c := v.claim; c != nil {
		r.claimedBy, r.claimedMs = c.MAC.String(), c.At.UnixMilli()
	}
	return r
}

// statusOf is the VIPStatus of the VIP v at addr, whose report is r.
func statusOf(addr netip.Addr, v *vip, r vipReport) *speakerv1.VIPStatus {
	return &speakerv1.VIPStatus{
		Address: addr.String(), State: r.state, Interfaces: v.announced, Error: r.err,
		ClaimedBy: r.claimedBy, ClaimedUnixMs: r.claimedMs,
	}
}

// vipsLocked are the VIPs of a full report to stream s (nil: a stream
// that ended): every VIP, sorted, or, once s took a report naming VIPs
// after asking for changes, the VIPs whose report changed since and the
// addresses gone (delta). The changes are found among the VIPs logged
// since s's previous report (vipChanges), or, when the log was dropped
// since, by comparing every VIP. a.mu is held.
func (a *Agent) vipsLocked(s *streamState) (vips []*speakerv1.VIPStatus, gone []string, delta bool) {
	if s == nil || !s.deltas || s.base == nil {
		if s != nil && s.deltas {
			s.base = make(map[netip.Addr]vipReport, len(a.vips))
			s.seen = a.changes.next()
		}
		for _, addr := range slices.SortedFunc(maps.Keys(a.vips), netip.Addr.Compare) {
			v := a.vips[addr]
			r := reportOf(v)
			vips = append(vips, statusOf(addr, v, r))
			if s != nil && s.deltas {
				s.base[addr] = r
			}
		}
		return vips, nil, false
	}
	var changed, removed []netip.Addr
	if logged, ok := a.changes.since(s.seen); ok {
		for _, addr := range logged { // an address logged twice is found changed once
			v := a.vips[addr]
			if v == nil {
				if _, ok := s.base[addr]; ok {
					delete(s.base, addr)
					removed = append(removed, addr)
				}
				continue
			}
			r := reportOf(v)
			if old, ok := s.base[addr]; !ok || old != r {
				s.base[addr] = r
				changed = append(changed, addr)
			}
		}
	} else {
		changed, removed = a.compareAllLocked(s)
	}
	s.seen = a.changes.next()
	a.trimChangesLocked()
	slices.SortFunc(changed, netip.Addr.Compare)
	slices.SortFunc(removed, netip.Addr.Compare)
	for _, addr := range changed {
		vips = append(vips, statusOf(addr, a.vips[addr], s.base[addr]))
	}
	for _, addr := range removed {
		gone = append(gone, addr.String())
	}
	return vips, gone, true
}

// compareAllLocked brings s.base up to date by comparing every VIP with
// it; it returns the VIPs whose report changed and the addresses gone.
func (a *Agent) compareAllLocked(s *streamState) (changed, removed []netip.Addr) {
	for addr, v := range a.vips {
		r := reportOf(v)
		if old, ok := s.base[addr]; !ok || old != r {
			s.base[addr] = r
			changed = append(changed, addr)
		}
	}
	if len(s.base) > len(a.vips) { // base holds every VIP now: the others are gone
		for addr := range s.base {
			if _, ok := a.vips[addr]; !ok {
				delete(s.base, addr)
				removed = append(removed, addr)
			}
		}
	}
	return changed, removed
}
