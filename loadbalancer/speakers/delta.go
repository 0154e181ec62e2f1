package speakers

import (
	"errors"
	"maps"
	"net/netip"
	"slices"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// A speaker that advertises thousands of BGP VIPs is told of every BGP
// VIP placed anywhere, and used to answer each update with all of its
// VIPs: the CCM then decoded, checked and compared O(node VIPs) per
// report, O(nodes × BGP VIPs) per BGP change, which at 100 nodes and
// 1,500 BGP VIPs each kept the CCM too busy to read heartbeats. The CCM
// now asks every speaker for its VIPs as changes (Snapshot.vip_deltas):
// a report names the VIPs whose status changed and those gone (see
// Report.vips_delta), is checked entry by entry (knowsLocked), and
// patches what the CCM knows (expandLocked). What it patches is never
// changed in place, since readers of View share it, and is copied only
// when its members change: the VIPs announced, which every BGP change
// changes on every node, are an AddrSet, of which a patch copies only the
// chunks it changes; the yielded VIPs, a sorted list (few), are copied
// whole.

// Holds reports whether the sorted list holds a (State's Initial and
// Yielded are sorted; see AddrSet.Holds for Announcing).
func Holds(sorted []netip.Addr, a netip.Addr) bool {
	_, ok := slices.BinarySearchFunc(sorted, a, netip.Addr.Compare)
	return ok
}

// knowsLocked reports whether a is a VIP a speaker's report may name once
// its stream's first report was taken in: those placed on its node
// (desired, or changed and not yet sent), those it announced when the
// stream opened (State.Initial), and those its last report named (a VIP
// withdrawn stays known while the speaker still reports it). Each was
// placed on the node or was in its first report: a speaker cannot make
// the CCM keep VIPs of other nodes. It looks a up, O(log VIPs), without
// copying anything; m.mu is held.
func (s *session) knowsLocked(a netip.Addr) bool {
	if s.state.Announcing.Holds(a) || Holds(s.state.Initial, a) || Holds(s.state.Yielded, a) {
		return true
	}
	key := a.String()
	if s.desired[key] != nil || s.dirty[key] {
		return true
	}
	for _, m := range []map[string]string{s.state.Failed, s.state.Conflicts, s.state.Claimed} {
		if _, ok := m[key]; ok {
			return true
		}
	}
	// A VIP placed under another spelling (those keys are the CCM's own,
	// and few: the planner spells addresses canonically).
	for k := range s.oddKeys {
		if s.desired[k] == nil && !s.dirty[k] {
			delete(s.oddKeys, k)
			continue
		}
		if b, err := netip.ParseAddr(k); err == nil && b == a {
			return true
		}
	}
	return false
}

// expandLocked turns the summary of a report of VIP changes into the
// summary of the complete report it stands for: what the speaker last
// reported, with the VIPs it names replaced by their new status and the
// gone ones removed. m.mu is held.
func (s *session) expandLocked(sum *summary) {
	sum.announced = s.state.Announcing.Patch(sum.touched, sum.announcing)
	sum.yielded = patchSorted(s.state.Yielded, sum.touched, sum.yielded)
	sum.failed = patchMap(s.state.Failed, sum.touched, sum.failed)
	sum.conflicts = patchMap(s.state.Conflicts, sum.touched, sum.conflicts)
	sum.claimed = patchMap(s.state.Claimed, sum.touched, sum.claimed)
	sum.delta, sum.touched, sum.gone = false, nil, nil
}

// patchSorted is base without the addresses of remove and with those of
// add (all three sorted; add ⊆ remove); base itself when that changes
// nothing, a new list otherwise.
func patchSorted(base, remove, add []netip.Addr) []netip.Addr {
	same := true
	for _, a := range remove {
		if Holds(base, a) != Holds(add, a) {
			same = false
			break
		}
	}
	if same {
		return base
	}
	out := make([]netip.Addr, 0, len(base)+len(add))
	i := 0
	for _, b := range base {
		for i < len(add) && add[i].Less(b) {
			out = append(out, add[i])
			i++
		}
		if !Holds(remove, b) {
			out = append(out, b)
		}
	}
	return append(out, add[i:]...)
}

// patchMap is base without the keys of remove and with the entries of
// add (whose keys are among remove's); a new map, or base when remove
// names none of base's keys and add is empty.
func patchMap(base map[string]string, remove []netip.Addr, add map[string]string) map[string]string {
	if len(add) == 0 && !slices.ContainsFunc(remove, func(a netip.Addr) bool { _, ok := base[a.String()]; return ok }) {
		return base
	}
	out := maps.Clone(base)
	if out == nil {
		out = map[string]string{}
	}
	for _, a := range remove {
		delete(out, a.String())
	}
	maps.Copy(out, add)
	return out
}

// errMergeTooLarge is why a stream failed whose reports, merged while
// they came too fast (see merge), named more VIPs than its node holds.
var errMergeTooLarge = errors.New("the speaker's reports, merged while they came too fast, name more VIPs than its node holds")

// mergeVIPs folds the VIPs of r, a report of changes, into pending, a
// full report (complete or of changes) that came before it: r's entries
// replace pending's for the same address (compared in canonical form
// where they parse), r's gone addresses remove them. The result is a
// list of changes when pending was one, complete otherwise.
func mergeVIPs(pending, r *speakerv1.Report) (vips []*speakerv1.VIPStatus, gone []string) {
	key := func(s string) string {
		if a, err := netip.ParseAddr(s); err == nil {
			return a.String()
		}
		return s
	}
	replaced := make(map[string]bool, len(r.GetVips())+len(r.GetVipsGone()))
	for _, v := range r.GetVips() {
		replaced[key(v.GetAddress())] = true
	}
	for _, g := range r.GetVipsGone() {
		replaced[key(g)] = true
	}
	for _, v := range pending.GetVips() {
		if !replaced[key(v.GetAddress())] {
			vips = append(vips, v)
		}
	}
	vips = append(vips, r.GetVips()...)
	if !pending.GetVipsDelta() {
		return vips, nil // complete: a gone VIP is simply not listed
	}
	for _, g := range pending.GetVipsGone() {
		if !replaced[key(g)] {
			gone = append(gone, g)
		}
	}
	return vips, append(gone, r.GetVipsGone()...)
}
