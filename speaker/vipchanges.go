package speaker

import (
	"net/netip"
	"slices"
	"time"
)

// A stream that takes VIP changes (Snapshot.vip_deltas) is sent, in each
// report, the VIPs whose report changed since its previous one. Finding
// them by comparing every VIP with what the stream was told costs O(VIPs)
// per report: at 1,500 BGP VIPs a node, most of what a speaker spent on an
// update that moved one. The agent logs instead the address of every VIP
// whose report may have changed (vipChangedLocked, called wherever a VIP's
// reported fields change: apply.go, execute.go, claims.go), and a report
// compares only the VIPs logged since the stream's previous one. The log
// is dropped when it grows past twice the VIPs (a stream that stopped
// taking reports); streams then compare every VIP once, as they also do
// for their first report. Run's maintenance checks the log against a full
// comparison every reportAuditEvery (auditReportsLocked): a change the log
// missed is a bug, logged and then reported.

// vipChanges is the log of VIPs whose report may have changed, in order.
// Entries are numbered from 0; a stream remembers the number of the next
// entry when it took its report (streamState.seen).
type vipChanges struct {
	first uint64       // the number of addrs[0]
	addrs []netip.Addr // may repeat an address
}

// minChangeLog is the length the log may always reach before it is
// dropped, however few VIPs the node holds.
const minChangeLog = 1024

// reportAuditEvery is how often Run's maintenance compares every VIP with
// what each stream taking VIP changes was told.
const reportAuditEvery = 30 * time.Second

// next is the number the next entry gets.
func (c *vipChanges) next() uint64 { return c.first + uint64(len(c.addrs)) }

// since are the entries from number seq on; false when some were dropped.
func (c *vipChanges) since(seq uint64) ([]netip.Addr, bool) {
	if seq < c.first || seq > c.next() {
		return nil, false
	}
	return c.addrs[seq-c.first:], true
}

// drop forgets every entry, so that every stream compares all VIPs.
func (c *vipChanges) drop() {
	c.first = c.next() + 1
	c.addrs = c.addrs[:0]
}

// trim forgets the entries before number seq.
func (c *vipChanges) trim(seq uint64) {
	if seq <= c.first {
		return
	}
	k := int(min(seq-c.first, uint64(len(c.addrs))))
	n := copy(c.addrs, c.addrs[k:])
	c.addrs = c.addrs[:n]
	c.first += uint64(k)
}

// vipChangedLocked logs that what a report says of addr may have changed.
// a.mu is held.
func (a *Agent) vipChangedLocked(addr netip.Addr) {
	if len(a.changes.addrs) >= max(minChangeLog, 2*len(a.vips)) {
		a.changes.drop()
	}
	a.changes.addrs = append(a.changes.addrs, addr)
}

// trimChangesLocked forgets the entries every stream taking VIP changes
// has seen. With no such stream the log is left to its bound (see
// vipChangedLocked). a.mu is held.
func (a *Agent) trimChangesLocked() {
	seen, found := uint64(0), false
	for _, s := range a.streams {
		if s.deltas && s.base != nil && s.seen >= a.changes.first {
			if !found || s.seen < seen {
				seen = s.seen
			}
			found = true
		}
	}
	if found {
		a.changes.trim(seen)
	}
}

// unloggedLocked are the VIPs (and addresses gone) whose report differs
// from what stream s was told, though the log has no entry for them since
// s's report: none unless a change was not logged. Nil when s takes no
// VIP changes or the log was dropped since. O(VIPs); a.mu is held.
func (a *Agent) unloggedLocked(s *streamState) []netip.Addr {
	if s == nil || !s.deltas || s.base == nil {
		return nil
	}
	logged, ok := a.changes.since(s.seen)
	if !ok {
		return nil
	}
	pending := make(map[netip.Addr]bool, len(logged))
	for _, addr := range logged {
		pending[addr] = true
	}
	var out []netip.Addr
	for addr, v := range a.vips {
		if old, ok := s.base[addr]; !pending[addr] && (!ok || old != reportOf(v)) {
			out = append(out, addr)
		}
	}
	for addr := range s.base {
		if _, ok := a.vips[addr]; !ok && !pending[addr] {
			out = append(out, addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// auditReportsLocked checks, every reportAuditEvery, that the log holds
// every change of a VIP's report since each stream's report; a change it
// missed is logged as a bug and then reported. a.mu is held.
func (a *Agent) auditReportsLocked(now time.Time) {
	if now.Sub(a.lastAudit) < reportAuditEvery {
		return
	}
	a.lastAudit = now
	var missed []netip.Addr
	for _, s := range a.streams {
		missed = append(missed, a.unloggedLocked(s)...)
	}
	if len(missed) == 0 {
		return
	}
	slices.SortFunc(missed, netip.Addr.Compare)
	missed = slices.Compact(missed)
	a.log.Error(nil, "Bug: VIP changes were not logged for the report; reporting them now", "addresses", missed)
	for _, addr := range missed {
		a.vipChangedLocked(addr)
	}
	a.notifyLocked()
}
