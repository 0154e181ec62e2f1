package planner

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// IronLB never announces an address another host on the LAN answers for
// (DESIGN.md, invariant 10). Speakers with the "probe" capability check
// the LAN before they first answer for a VIP when the announcement asks
// them to (Announcement.probe), report CONFLICT (State.Conflicts) when
// another host answers, and report other hosts' claims of the VIPs they
// answer for (State.Claimed).
//
// The planner asks for a probe:
//   - on a VIP's first placement: no node announced it before (it has no
//     record, no seed, and no speaker reports it), until its announcer
//     reports it announced. A move or a re-placement does not probe: the
//     old node may still answer, and would be taken for another host.
//   - while the announcer reports a claim from a hardware address that is
//     no speaker's (a claim from a speaker's is a move in progress), until
//     the announcer reports it announced with no such claim;
//   - while the VIP is in use by another host, also on the node it moves
//     to if its announcer becomes ineligible (the announcer does not
//     answer for it then, so nothing of IronLB's is there to mistake).
//
// A VIP in use by another host is not moved (it is not the node's
// failure: every node would find the same host) and keeps its address;
// its Services get a Warning Event once per episode, and a Normal one when
// its announcer answers for it again.

// Event reasons for addresses in use on the LAN.
const (
	ReasonAddressInUse         = "AddressInUse"
	ReasonAddressInUseResolved = "AddressInUseResolved"
)

// watchLANLocked takes in what v's layer-2 announcer (node, "" for none)
// reports of other hosts on the LAN: conflicts and claims. It is called
// on every planning pass of v, after placement. It reports whether a host
// that is no speaker has just begun claiming v: the announcer must then be
// sent its announcement again even if it asked for a probe already (the
// first placement's probe may still be asked for), as a speaker probes
// only when it receives an instruction.
func (p *Planner) watchLANLocked(v *vip, w *world, node string) (reprobe bool) {
	nv := w.byName[node]
	if nv == nil {
		return false
	}
	a := v.addr.String()
	st := nv.state
	// answers: the announcer reports that it answers for v; read only for
	// a VIP with a probe or conflict outstanding (most have none).
	answers := func() bool { return st.Connected && st.Announcing.Holds(v.addr) }
	if mac := st.Conflicts[a]; mac != "" {
		mac = canonicalMAC(mac)
		switch {
		case v.inUse == "":
			addressConflictsTotal.Inc()
			p.log.Info("VIP is in use by another host on the LAN; not announcing it while that host answers",
				"address", v.addr, "services", v.serviceKeys(), "node", node, "mac", mac)
			p.event(v, v1.EventTypeWarning, ReasonAddressInUse, fmt.Sprintf(
				"%s is in use by another host on the LAN (MAC %s, seen by node %s); IronLB does not announce it while that host answers for it. The Service keeps the address; free it or change the IPPool",
				v.addr, mac, node))
			if p.opts.AddressInUse != nil {
				p.opts.AddressInUse(v.addr)
			}
		case v.inUse != mac || v.inUseNode != node:
			p.log.V(2).Info("VIP still in use on the LAN", "address", v.addr, "node", node, "mac", mac)
		}
		v.inUse, v.inUseNode = mac, node
	} else if v.inUse != "" && answers() {
		p.log.Info("VIP no longer in use by another host; announcing it", "address", v.addr, "services", v.serviceKeys(), "node", node, "was", v.inUse)
		p.event(v, v1.EventTypeNormal, ReasonAddressInUseResolved, fmt.Sprintf(
			"%s is no longer in use by another host on the LAN (MAC %s); node %s announces it", v.addr, v.inUse, node))
		v.inUse, v.inUseNode = "", ""
	}
	claim := st.Claimed[a]
	foreign := claim != "" && !w.speakerMAC(claim)
	switch {
	case foreign && v.claimedBy == "":
		v.claimedBy = canonicalMAC(claim)
		p.log.Info("A host that is no speaker claims a VIP; its announcer probes the LAN again",
			"address", v.addr, "services", v.serviceKeys(), "node", node, "mac", v.claimedBy)
		reprobe = true
	case foreign:
		v.claimedBy = canonicalMAC(claim)
	case v.claimedBy != "" && answers():
		v.claimedBy = ""
	}
	if v.probe && v.inUse == "" && !foreign && answers() {
		v.probe = false // placed: the first probe found the address free
	}
	return reprobe
}

// probing reports whether v's announcement asks for a probe (see above).
func (v *vip) probing() bool { return v.probe || v.claimedBy != "" || v.inUse != "" }

// firstPlacement reports whether v, placed now on a node while it has no
// announcer, was never announced: no node had it (no record, no seed, not
// lost from one) and no speaker reports it.
func (w *world) firstPlacement(v *vip) bool {
	if v.last != "" {
		return false
	}
	for _, n := range w.nodes {
		st := n.state
		if st.Announcing.Holds(v.addr) || speakers.Holds(st.Initial, v.addr) || speakers.Holds(st.Yielded, v.addr) {
			return false
		}
	}
	return true
}

// speakerMAC reports whether mac is the hardware address of one of the
// speakers' interfaces (State.MACs).
func (w *world) speakerMAC(mac string) bool {
	if w.macs == nil {
		w.macs = map[string]bool{}
		for _, n := range w.nodes {
			for _, m := range n.state.MACs {
				w.macs[canonicalMAC(m)] = true
			}
		}
	}
	return w.macs[canonicalMAC(mac)]
}

// canonicalMAC is mac in the usual lower-case colon form, so that a
// speaker's way of writing it does not matter; text that is no hardware
// address is quoted and clipped (it goes into logs and Events).
func canonicalMAC(mac string) string {
	if hw, err := net.ParseMAC(mac); err == nil {
		return hw.String()
	}
	return strconv.Quote(clipText(strings.ToLower(mac)))
}

// probeOn reports whether node's announcement of v over layer 2 asks its
// speaker to probe: when v needs it and the speaker can.
func (w *world) probeOn(v *vip, node string) bool {
	nv := w.byName[node]
	return v.probing() && nv != nil && nv.state.Has(speakerv1.CapabilityProbe)
}
