package planner

import (
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// planLocked chooses the announcers of one VIP and tells the speakers about
// a change. A move withdraws from the old node and announces on the new one
// in the same step: the old node is usually unreachable, and a reachable
// one stops answering within milliseconds.
func (p *Planner) planLocked(v *vip, w *world) {
	eligible, why := p.eligibleLocked(v, w)
	want := p.chooseLocked(v, w, eligible, why)
	ann := p.announcement(v)
	old := v.announcers
	if slices.Equal(old, want) {
		for _, n := range want {
			p.speakers.Assign(n, ann) // no-op unless the announcement changed
		}
		if len(want) == 0 && !v.warned {
			v.warned = true
			p.log.Info("No eligible node for VIP", "address", v.addr, "reasons", summarize(why))
			p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, fmt.Sprintf("No node can announce %s: %s", v.addr, summarize(why)))
		}
		return
	}
	v.announcers = want
	for key := range v.services {
		p.enqueue(recPrefix + key)
	}
	for _, n := range old {
		if !slices.Contains(want, n) {
			p.speakers.Unassign(n, v.addr.String())
		}
	}
	if len(want) == 0 {
		if len(old) > 0 {
			v.last = old[0]
		}
		v.warned = true
		p.log.Info("No eligible node for VIP", "address", v.addr, "reasons", summarize(why))
		p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, fmt.Sprintf("No node can announce %s: %s", v.addr, summarize(why)))
		return
	}
	v.warned = false
	v.last = want[0]
	for _, n := range want {
		p.speakers.Assign(n, ann)
	}
	switch {
	case len(old) == 0:
		p.log.Info("Announcing VIP", "address", v.addr, "nodes", want, "services", v.serviceKeys())
		p.event(v, v1.EventTypeNormal, ReasonAnnounced, fmt.Sprintf("%s announced from node %s", v.addr, strings.Join(want, ", ")))
	default:
		from := old[0]
		r := why[from]
		p.log.Info("Moving VIP", "address", v.addr, "from", from, "to", want[0], "reason", r.msg)
		failoversTotal.WithLabelValues(string(r.reason)).Inc()
		p.event(v, v1.EventTypeNormal, ReasonMoved, fmt.Sprintf("%s moved from node %s to node %s: %s", v.addr, from, want[0], r.msg))
	}
}

// chooseLocked returns the nodes that should announce v (layer 2: one, or
// none). The current announcer keeps v while it is eligible, and also while
// its speaker is only unreachable and either the planner is settling after
// a mass loss (settle.go) or no other node could take v: an unreachable
// speaker keeps announcing, and cannot be told to stop anyway. Otherwise v
// goes to the node that last had it, to a node whose speaker says it
// announces v already, or by rendezvous hashing over the eligible nodes.
func (p *Planner) chooseLocked(v *vip, w *world, eligible []string, why map[string]verdict) []string {
	for _, n := range v.announcers {
		if slices.Contains(eligible, n) {
			return []string{n}
		}
		if r, ok := why[n]; ok && r.reason == SpeakerLost && (p.settle.active || len(eligible) == 0) {
			return []string{n}
		}
	}
	if len(eligible) == 0 {
		return nil
	}
	if v.last != "" && slices.Contains(eligible, v.last) {
		return []string{v.last}
	}
	var already []string
	for _, n := range eligible {
		if slices.Contains(w.byName[n].state.Announcing, v.addr) {
			already = append(already, n)
		}
	}
	if len(already) > 0 {
		return []string{placement.Choose(v.addr, "", already)}
	}
	return []string{placement.Choose(v.addr, "", eligible)}
}

// announcement is what the speakers are told about v.
func (p *Planner) announcement(v *vip) *speakerv1.Announcement {
	return &speakerv1.Announcement{
		Address:    v.addr.String(),
		Service:    strings.Join(v.serviceKeys(), ","),
		Interfaces: v.scope.interfaces,
	}
}
