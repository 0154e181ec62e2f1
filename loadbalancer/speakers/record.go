package speakers

import (
	"errors"
	"maps"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// record takes in a report of stream gen: it is checked against what this
// CCM configured and bounded (summarize) without the Manager's lock, then
// the summary is applied under it. It reports whether connection, health
// or the failed VIPs changed (see OnChange); a change of the BGP sessions
// alone goes to the OnBGPChange functions, which it calls.
func (s *session) record(gen uint64, r *speakerv1.Report) bool {
	sum := summarize(r, s.acceptor(gen))
	var lines []logLine
	changed, bgp := s.apply(gen, sum, &lines)
	s.emit(lines)
	if bgp {
		s.m.bgpChanged(s.node)
	}
	return changed
}

// acceptor is what a report of stream gen may name: the peers configured
// on the speaker and, in the stream's first report, the VIPs this CCM
// allocated (a new leader learns what the speaker announces, which a
// previous leader may have placed; see State.Initial); in later reports
// only the VIPs of this node (see knowsLocked), and its VIPs may be
// changes (see expandLocked).
func (s *session) acceptor(gen uint64) acceptor {
	acc := acceptor{peers: map[string]bool{}}
	if p := s.peers.Load(); p != nil {
		acc.peers = *p
	}
	if !s.firstTaken(gen) {
		if a := s.m.opts.Allocated; a != nil {
			acc.vips = a.HoldsEach // the allocator's lock once per report
		}
		return acc
	}
	acc.deltas = true
	acc.vips = func(addrs []netip.Addr) []bool {
		s.m.mu.Lock()
		defer s.m.mu.Unlock()
		ok := make([]bool, len(addrs))
		for i, a := range addrs {
			ok[i] = s.knowsLocked(a)
		}
		return ok
	}
	return acc
}

// firstTaken reports whether the first report of stream gen was taken in.
func (s *session) firstTaken(gen uint64) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.taken == gen
}

// nodeVIPCount bounds the number of VIPs a report may name (see
// knowsLocked); m.mu is held.
func (s *session) nodeVIPCount() int {
	return len(s.desired) + len(s.dirty) + len(s.state.Failed) + len(s.state.Initial) + s.state.Announcing.Len() +
		len(s.state.Conflicts) + len(s.state.Claimed) + len(s.state.Yielded)
}

// apply takes in the summary of a report of stream gen; m.mu is taken.
// Log lines go to lines, for after the lock. It reports whether
// connection, health or the failed VIPs changed, and whether the BGP
// sessions did.
func (s *session) apply(gen uint64, sum *summary, lines *[]logLine) (changed, bgp bool) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if gen != s.gen {
		return false, false
	}
	s.taken = gen
	for _, why := range ignoreReasons {
		if n := sum.dropped[why]; n > 0 {
			reportItemsIgnored.WithLabelValues(s.node, string(why)).Add(float64(n))
			*lines = append(*lines, logLine{msg: "Ignoring parts of the speaker's report that this CCM did not configure", kv: []any{"reason", why, "count", n}})
		}
	}
	now := time.Now()
	s.lastReport = now
	s.state.LastReport = now
	before := s.state
	if sum.applied > s.state.Applied {
		s.state.Applied = sum.applied
	}
	if sum.versionSet {
		s.state.Version = sum.version
	}
	s.state.Capabilities = sum.capabilities
	if n := sum.ignored; n > 0 && n != s.ignored {
		s.ignored = n
		*lines = append(*lines, logLine{msg: "Speaker ignored instructions it does not understand; upgrade it to the CCM's version", kv: []any{"ignored", n, "speakerVersion", s.state.Version}})
	}
	s.state.Fenced, s.state.Stopped = false, false
	failedChanged := false
	if sum.full {
		if sum.delta {
			s.expandLocked(sum)
		}
		failedChanged = s.recordVIPs(sum, lines)
		s.state.Healthy, s.state.Problem = sum.healthy, sum.problem
		if !slices.EqualFunc(sum.bgp, s.state.BGPSessions, func(a, b *speakerv1.BGPSessionStatus) bool { return proto.Equal(a, b) }) {
			*lines = append(*lines, s.recordFlaps(sum.bgp)...)
			s.state.BGPSessions = sum.bgp
			bgp = true
		}
	}
	s.state.Connected = true
	s.state.Reported = true
	if s.state.Restarting {
		s.state.Restarting = false
		*lines = append(*lines, logLine{always: true, msg: "Restarted speaker is back"})
	}
	if s.draining && s.state.Applied >= s.state.Sent && len(s.dirty) == 0 && s.state.Announcing.Len() == 0 {
		s.closeDrained()
	}
	if !before.Connected {
		s.state.Since = now
		*lines = append(*lines, logLine{always: true, msg: "Speaker connected", kv: []any{"healthy", s.state.Healthy, "announcing", s.state.Announcing.Len(), "version", s.state.Version, "capabilities", s.state.Capabilities}})
		return true, bgp
	}
	if before.Healthy != s.state.Healthy {
		*lines = append(*lines, logLine{msg: "Speaker health changed", kv: []any{"healthy", s.state.Healthy, "problem", s.state.Problem}})
		return true, bgp
	}
	return failedChanged, bgp
}

// recordFlaps counts the BGP sessions that were Established and are not
// now, and the BFD sessions that were Up and are not now; it returns the
// log lines to write. Both lists hold configured peers only.
func (s *session) recordFlaps(now []*speakerv1.BGPSessionStatus) []logLine {
	var lines []logLine
	for _, old := range s.state.BGPSessions {
		i := slices.IndexFunc(now, func(n *speakerv1.BGPSessionStatus) bool { return n.GetPeer() == old.GetPeer() })
		if i < 0 {
			continue
		}
		if old.GetState() == "Established" && now[i].GetState() != "Established" {
			bgpFlaps.WithLabelValues(s.node, old.GetPeer()).Inc()
			lines = append(lines, logLine{msg: "BGP session went down", kv: []any{"peer", old.GetPeer(), "state", now[i].GetState(), "lastError", now[i].GetLastError()}})
		}
		if ob, nb := old.GetBfd(), now[i].GetBfd(); ob != nil && nb != nil && nb.GetFlaps() > ob.GetFlaps() {
			bfdFlaps.WithLabelValues(s.node, old.GetPeer()).Add(float64(nb.GetFlaps() - ob.GetFlaps()))
			lines = append(lines, logLine{msg: "BFD session went down", kv: []any{"peer", old.GetPeer(), "state", nb.GetState(), "reason", nb.GetReason()}})
		}
	}
	return lines
}

// recordVIPs takes in the VIPs, data plane and hardware addresses of a
// full report; it reports whether the failed VIPs, conflicts, claims,
// yielded VIPs, data plane or hardware addresses changed.
func (s *session) recordVIPs(sum *summary, lines *[]logLine) bool {
	s.state.Announcing = sum.announced
	changed := s.recordClaims(sum, lines)
	if !proto.Equal(sum.dataPlane, s.state.DataPlane) {
		if sum.dataPlane != nil {
			*lines = append(*lines, logLine{msg: "Speaker's data plane changed", kv: []any{"ready", sum.dataPlane.GetReady(), "reason", sum.dataPlane.GetReason()}})
		}
		s.state.DataPlane = sum.dataPlane
		changed = true
	}
	if !slices.Equal(sum.macs, s.state.MACs) {
		s.state.MACs = sum.macs
		changed = true
	}
	for a, e := range sum.failed {
		if _, known := s.state.Failed[a]; !known {
			*lines = append(*lines, logLine{err: errors.New(e), msg: "Speaker cannot announce VIP", kv: []any{"address", a}})
		}
	}
	changed = changed || !maps.Equal(sum.failed, s.state.Failed)
	s.state.Failed = sum.failed
	return changed
}

// recordClaims takes in the conflicts, claims and yielded VIPs of a full
// report; it reports whether any changed. A VIP the speaker yielded that
// is still desired on its node is sent again. m.mu is held.
func (s *session) recordClaims(sum *summary, lines *[]logLine) bool {
	for a, mac := range sum.conflicts {
		if old, known := s.state.Conflicts[a]; !known || old != mac {
			*lines = append(*lines, logLine{msg: "Speaker found VIP in use by another host", kv: []any{"address", a, "mac", mac}})
		}
	}
	for a, mac := range sum.claimed {
		if old, known := s.state.Claimed[a]; !known || old != mac {
			*lines = append(*lines, logLine{msg: "Another host claimed a VIP the speaker announces", kv: []any{"address", a, "mac", mac}})
		}
	}
	was := make(map[netip.Addr]bool, len(s.state.Yielded))
	for _, a := range s.state.Yielded {
		was[a] = true
	}
	for _, a := range sum.yielded {
		if was[a] {
			continue
		}
		*lines = append(*lines, logLine{msg: "Speaker yielded VIP while cut off from the CCM", kv: []any{"address", a, "mac", sum.claimed[a.String()]}})
		// The CCM still places it here (the speaker only seemed cut off):
		// telling it again makes the speaker answer for it again.
		s.resendLocked(a.String())
	}
	changed := !maps.Equal(sum.conflicts, s.state.Conflicts) || !maps.Equal(sum.claimed, s.state.Claimed) || !slices.Equal(sum.yielded, s.state.Yielded)
	s.state.Conflicts, s.state.Claimed, s.state.Yielded = sum.conflicts, sum.claimed, sum.yielded
	return changed
}

// closeDrained marks a deleted node's speaker as done; m.mu is held.
func (s *session) closeDrained() {
	select {
	case <-s.drained:
	default:
		close(s.drained)
	}
}

// logLine is a line a report causes, written after the Manager's lock.
type logLine struct {
	err    error
	msg    string
	kv     []any
	always bool // not rate-limited: one per stream
}

// emit writes lines, at most logBurst at once and logRate a second
// for the session; the others are counted in the next line written.
func (s *session) emit(lines []logLine) {
	for _, l := range lines {
		if !l.always && s.logs != nil && !s.logs.Allow() {
			s.suppressed.Add(1)
			continue
		}
		kv := l.kv
		if n := s.suppressed.Swap(0); n > 0 {
			kv = append(slices.Clip(kv), "suppressedLines", n)
		}
		if l.err != nil {
			s.log.Error(l.err, l.msg, kv...)
		} else {
			s.log.Info(l.msg, kv...)
		}
	}
}
