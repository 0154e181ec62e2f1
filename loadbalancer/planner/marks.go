package planner

import (
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
)

// A change of one speaker's state (a lost speaker, a failed VIP, a data
// plane gone unready) re-plans only the VIPs it can change, not every VIP
// against every node: at 1,000 nodes and 10,000 VIPs a full pass takes
// seconds, and a lost node's VIPs would wait for it (invariant 7: work in
// proportion to the change).
//
// The planner keeps, per node, a mark of what of its speaker's state
// planning depends on, as the last pass that covered every VIP saw it
// (or the last pass for that node). A pass for one node compares its mark
// with the node's state now and re-plans:
//   - the VIPs its speaker's per-address state names, before or now
//     (failed, in conflict, claimed, yielded);
//   - if what layer 2 depends on changed (the speaker's verdict, its
//     capabilities, the soft rules): the VIPs the node announces, the VIPs
//     without an announcer, those whose announcer is held back by any
//     rule (the node may now take them) and those of Services with
//     externalTrafficPolicy Local (the node may now have more endpoints
//     than their announcer). An address check (conflict.go) reads the
//     announcer's state and the speakers' hardware addresses: the
//     announcer's changes re-plan its VIPs, and a change of hardware
//     addresses plans every VIP (below);
//   - if what BGP depends on changed (the session, the capabilities, the
//     data plane; not the stream: a speaker cut off from the CCM keeps
//     advertising, bgp.go): every VIP advertised over BGP.
//
// Whatever else planning reads changes through other keys (Nodes, pools,
// peers and failure back-offs plan every VIP; Services and their
// endpoints plan theirs). A change of the settle state, of a speaker's
// hardware addresses (other hosts' claims are told apart by them) or a
// node without a mark plans every VIP.

// nodeMark is what planning depends on of one node's speaker.
type nodeMark struct {
	speaker   verdict // the zero verdict: none
	session   bool
	reported  bool
	caps      string
	dataPlane bool // held back by the data-plane rule
	cordoned  bool
	macs      string
	// addrs are the VIPs its state names: failed, in conflict, claimed or
	// yielded.
	addrs map[netip.Addr]bool
}

func markOf(n *nodeView) nodeMark {
	st := n.state
	m := nodeMark{session: n.session, reported: st.Reported, caps: strings.Join(st.Capabilities, ","),
		dataPlane: n.dataPlane != nil, cordoned: n.cordoned != nil, macs: strings.Join(st.MACs, ",")}
	if n.speaker != nil {
		m.speaker = *n.speaker
	}
	count := len(st.Failed) + len(st.Conflicts) + len(st.Claimed) + len(st.Yielded)
	if count == 0 {
		return m
	}
	m.addrs = make(map[netip.Addr]bool, count)
	for _, set := range []map[string]string{st.Failed, st.Conflicts, st.Claimed} {
		for a := range set {
			if addr, err := netip.ParseAddr(a); err == nil {
				m.addrs[addr] = true
			}
		}
	}
	for _, a := range st.Yielded {
		m.addrs[a] = true
	}
	return m
}

// layer2Same reports whether what layer 2 depends on is the same in m and o.
func (m nodeMark) layer2Same(o nodeMark) bool {
	return m.speaker == o.speaker && m.session == o.session && m.reported == o.reported && m.caps == o.caps &&
		m.dataPlane == o.dataPlane && m.cordoned == o.cordoned
}

// bgpSame reports whether what BGP depends on is the same in m and o.
func (m nodeMark) bgpSame(o nodeMark) bool {
	return m.session == o.session && m.reported == o.reported && m.caps == o.caps && m.dataPlane == o.dataPlane
}

// markAllLocked records every node's mark after a pass over every VIP.
func (p *Planner) markAllLocked(w *world) {
	p.marks = make(map[string]nodeMark, len(w.nodes))
	for _, n := range w.nodes {
		p.marks[n.name] = markOf(n)
	}
}

// planNode re-plans the VIPs that a change of node's speaker can affect
// (see above).
func (p *Planner) planNode(node string) {
	w := p.gather()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	was := p.settle
	p.updateSettleLocked(w)
	n := w.byName[node]
	old, known := p.marks[node]
	if n == nil || !known || p.settle != was {
		p.planAllLocked(w)
		return
	}
	cur := markOf(n)
	if cur.macs != old.macs {
		p.planAllLocked(w)
		return
	}
	p.marks[node] = cur
	l2, bgp := !cur.layer2Same(old), !cur.bgpSame(old)
	for _, v := range p.vips {
		if old.addrs[v.addr] || cur.addrs[v.addr] || bgp && v.scope.bgp != nil || l2 && layer2Affected(v, w, node) {
			p.planLocked(v, w)
		}
	}
}

// layer2Affected reports whether a change of node's layer-2 standing can
// change where v is announced.
func layer2Affected(v *vip, w *world, node string) bool {
	if v.scope.l2Off {
		return false
	}
	if len(v.announcers) == 0 || slices.Contains(v.announcers, node) || hasLocal(v) {
		return true
	}
	for _, a := range v.announcers {
		if n := w.byName[a]; n == nil || n.node != nil || n.speaker != nil || n.dataPlane != nil || n.cordoned != nil {
			return true
		}
	}
	return false
}

// hasLocal reports whether a Service sharing v has externalTrafficPolicy
// Local.
func hasLocal(v *vip) bool {
	for _, svc := range v.services {
		if svc != nil && svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
			return true
		}
	}
	return false
}
