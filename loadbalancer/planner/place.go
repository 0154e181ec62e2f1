package planner

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// planLocked chooses the announcers of one VIP and tells the speakers about
// a change. A move withdraws from the old node and announces on the new one
// in the same step: the old node is usually unreachable, and a reachable
// one stops answering within milliseconds.
func (p *Planner) planLocked(v *vip, w *world) {
	adv := p.planBGPLocked(v, w)
	if v.scope.l2Off {
		// Advertised over BGP only.
		v.probe, v.claimedBy, v.inUse, v.inUseNode = false, "", "", ""
		p.tellLocked(v, w, v.announcers, nil, adv)
		if len(v.announcers) > 0 {
			v.announcers = nil
			for key := range v.services {
				p.enqueueRecord(key)
			}
		}
		return
	}
	var want []string
	var why map[string]verdict
	if p.keepsLocked(v, w) {
		want, v.uneven = v.announcers, time.Time{}
	} else {
		var eligible []string
		eligible, why = p.eligibleLocked(v, w)
		want = p.chooseLocked(v, w, eligible, why)
	}
	old := v.announcers
	switch {
	case len(want) == 0 || slices.Equal(old, want):
	case len(old) == 0:
		v.probe = w.firstPlacement(v)
	default:
		// A move: the old node may still answer (conflict.go).
		v.probe, v.claimedBy = false, ""
	}
	if len(want) > 0 && p.watchLANLocked(v, w, want[0]) {
		// After the announcement is told below (unchanged when it asked
		// for a probe already): the announcer probes on receiving it.
		defer p.speakers.Resend(want[0], v.addr.String())
	}
	if slices.Equal(old, want) {
		p.tellLocked(v, w, old, want, adv) // no-op unless an announcement changed
		if len(want) == 0 && !v.warned {
			v.warned = true
			p.log.Info("No eligible node for VIP", "address", v.addr, "reasons", summarize(why))
			p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, fmt.Sprintf("No node can announce %s: %s", v.addr, summarize(why)))
		}
		return
	}
	v.announcers = want
	for key := range v.services {
		p.enqueueRecord(key)
	}
	p.tellLocked(v, w, old, want, adv)
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
//
// A VIP of Services with externalTrafficPolicy Local serves only the
// announcing node's endpoints, so it goes to an eligible node with the
// most ready endpoints; and it leaves an eligible announcer when another
// node has had more for LocalRebalanceDelay (rebalanceLocked): which pod
// happened to be ready first must not decide the capacity of a Service
// for good, and the delay keeps rollouts from moving it back and forth.
func (p *Planner) chooseLocked(v *vip, w *world, eligible []string, why map[string]verdict) []string {
	counts := p.localEndpointCounts(v)
	if counts == nil {
		v.uneven = time.Time{}
	}
	for _, n := range v.announcers {
		if slices.Contains(eligible, n) {
			if counts != nil && v.inUse == "" { // an address in use stays put (conflict.go)
				if to := p.rebalanceLocked(v, w, n, eligible, counts, why, &v.uneven); to != "" {
					return []string{to}
				}
			}
			return []string{n}
		}
		if r, ok := why[n]; ok && (r.reason == SpeakerRestarting || r.reason == SpeakerLost && (p.settle.active || len(eligible) == 0)) {
			return []string{n}
		}
	}
	if len(eligible) == 0 {
		return nil
	}
	v.uneven = time.Time{}
	if counts != nil {
		eligible = mostEndpoints(eligible, counts)
	}
	if v.last != "" && slices.Contains(eligible, v.last) {
		return []string{v.last}
	}
	var already []string
	for _, n := range eligible {
		if w.byName[n].state.Announcing.Holds(v.addr) {
			already = append(already, n)
		}
	}
	if len(already) > 0 {
		return []string{placement.Choose(v.addr, "", already)}
	}
	return []string{placement.Choose(v.addr, "", eligible)}
}

// rebalanceLocked returns where a Local VIP announced by cur should go
// because another eligible node has had more ready endpoints than cur for
// LocalRebalanceDelay, or "" to stay. It notes in uneven when the
// imbalance began and asks for a re-plan when the delay ends.
func (p *Planner) rebalanceLocked(v *vip, w *world, cur string, eligible []string, counts map[string]int, why map[string]verdict, uneven *time.Time) string {
	top := mostEndpoints(eligible, counts)
	if slices.Contains(top, cur) || p.opts.LocalRebalanceDelay < 0 {
		*uneven = time.Time{}
		return ""
	}
	if uneven.IsZero() {
		*uneven = w.now
		for name := range v.services {
			p.queue.AddAfter(serviceKey(name), p.opts.LocalRebalanceDelay+10*time.Millisecond)
		}
	}
	if w.now.Sub(*uneven) < p.opts.LocalRebalanceDelay {
		return ""
	}
	since := *uneven
	*uneven = time.Time{}
	to := placement.Choose(v.addr, "", top)
	why[cur] = verdict{FewerLocalEndpoints, fmt.Sprintf("node %s had %d ready endpoints and node %s %d since %s (externalTrafficPolicy: Local)",
		cur, counts[cur], to, counts[to], since.Format(time.RFC3339))}
	return to
}

// mostEndpoints returns the nodes of eligible with the most endpoints.
func mostEndpoints(eligible []string, counts map[string]int) []string {
	best := -1
	var out []string
	for _, n := range eligible {
		switch c := counts[n]; {
		case c > best:
			best, out = c, []string{n}
		case c == best:
			out = append(out, n)
		}
	}
	return out
}

// tellLocked gives every node that announces v over layer 2 (l2) or
// advertises it over BGP (v.advertisers, already set to adv) its
// announcement, and withdraws v from the nodes of oldL2 and the previous
// advertisers that have no part any more. The speakers are sent only what
// changed.
func (p *Planner) tellLocked(v *vip, w *world, oldL2, l2 []string, adv advertised) {
	oldAdv := v.advertisers
	v.advertisers = adv.nodes
	// Nodes that only advertise v over BGP, with the same advertisements,
	// share one announcement (the speakers' Manager keeps it, and never
	// changes it): one per node cost O(nodes × BGP VIPs) of memory.
	var bgpOnly map[**speakerv1.BGPAdvertisement]*speakerv1.Announcement // by the advertisements' backing array
	for _, n := range union(l2, adv.nodes) {
		advs := adv.byNode[n]
		if !slices.Contains(l2, n) && len(advs) > 0 {
			if bgpOnly == nil {
				bgpOnly = map[**speakerv1.BGPAdvertisement]*speakerv1.Announcement{}
			}
			a := bgpOnly[&advs[0]]
			if a == nil {
				a = p.announcement(v, false, advs)
				bgpOnly[&advs[0]] = a
			}
			p.speakers.Assign(n, a)
			continue
		}
		a := p.announcement(v, slices.Contains(l2, n), advs)
		a.Probe = !a.BgpOnly && w.probeOn(v, n)
		p.speakers.Assign(n, a)
	}
	for _, n := range union(oldL2, oldAdv) {
		if !slices.Contains(l2, n) && !slices.Contains(adv.nodes, n) {
			p.speakers.Unassign(n, v.addr.String())
		}
	}
}

// announcement is what one node's speaker is told about v: layer 2 on
// v's interfaces when l2, and the BGP advertisements bgp.
func (p *Planner) announcement(v *vip, l2 bool, bgp []*speakerv1.BGPAdvertisement) *speakerv1.Announcement {
	a := &speakerv1.Announcement{
		Address: v.addr.String(),
		Service: strings.Join(v.serviceKeys(), ","),
		Bgp:     bgp,
	}
	if l2 {
		a.Interfaces = v.scope.interfaces
	} else {
		a.BgpOnly = true
	}
	return a
}

// union returns the nodes of a and then those of b not in a.
func union(a, b []string) []string {
	out := slices.Clone(a)
	for _, n := range b {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}
