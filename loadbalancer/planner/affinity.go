package planner

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/proto"
	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/placement"
)

// Session affinity over BGP. kube-proxy keeps a Service's ClientIP
// affinity per node: if the routers spread one client's connections over
// several nodes (ECMP hashes each connection on its ports), each node
// sends them to a pod of its own choosing and the affinity is gone. So
// for a VIP of Services with sessionAffinity ClientIP every eligible node
// still advertises it, but with a MULTI_EXIT_DISC that makes the routers
// prefer one: 0 from the preferred node, 1, 2, ... from the others in the
// order rendezvous hashing gives, which is also the order in which the
// planner would choose the next preferred node. When the preferred node
// dies the routers switch to the next at once (its session drops: BFD or
// the hold timer), before the CCM notices; the planner then makes that
// node the preferred one, so nothing moves twice. The preferred node
// stays while it advertises; with externalTrafficPolicy Local it is one
// with the most ready endpoints, and changes after LocalRebalanceDelay as
// in layer 2. Routers compare MEDs between paths from the same
// neighbouring AS (nodes of one myASN); FRR and most others do by default.

// clientIPAffinity reports whether a Service sharing v asks for
// sessionAffinity ClientIP.
func clientIPAffinity(v *vip) bool {
	for _, svc := range v.services {
		if svc != nil && svc.Spec.SessionAffinity == v1.ServiceAffinityClientIP {
			return true
		}
	}
	return false
}

// preferOneLocked gives adv's advertisements their MEDs and records the
// preferred node. Nodes whose speakers cannot send a MED advertise only
// if they are the preferred one: without a MED their route would tie with
// it.
func (p *Planner) preferOneLocked(v *vip, w *world, adv advertised, why map[string]verdict) advertised {
	if len(adv.nodes) == 0 {
		v.preferred, v.unevenBGP = "", time.Time{}
		return adv
	}
	counts := p.localEndpointCounts(v)
	preferred := v.preferred
	switch {
	case slices.Contains(adv.nodes, preferred) && counts != nil:
		if to := p.rebalanceLocked(v, w, preferred, adv.nodes, counts, why, &v.unevenBGP); to != "" {
			preferred = to
		}
	case slices.Contains(adv.nodes, preferred):
	default:
		v.unevenBGP = time.Time{}
		candidates := adv.nodes
		if counts != nil {
			candidates = mostEndpoints(candidates, counts)
		}
		preferred = placement.Choose(v.addr, "", candidates)
	}
	if preferred != v.preferred {
		p.log.Info("Preferring one node for VIP (sessionAffinity ClientIP)", "address", v.addr, "node", preferred, "was", v.preferred)
		p.event(v, v1.EventTypeNormal, ReasonAdvertised, fmt.Sprintf("%s preferred from node %s by the routers (MED 0): sessionAffinity ClientIP", v.addr, preferred))
		v.preferred = preferred
	}
	rest := slices.DeleteFunc(slices.Clone(adv.nodes), func(n string) bool { return n == preferred })
	slices.SortFunc(rest, func(a, b string) int {
		return cmp.Or(cmp.Compare(placement.Score(v.addr, b), placement.Score(v.addr, a)), cmp.Compare(a, b))
	})
	out := advertised{nodes: []string{preferred}, byNode: map[string][]*speakerv1.BGPAdvertisement{}}
	out.byNode[preferred] = withMED(adv.byNode[preferred], 0, w.byName[preferred])
	rank := uint32(0)
	for _, n := range rest {
		if nv := w.byName[n]; !nv.state.Has(speakerv1.CapabilityBGPMED) {
			why[n] = verdict{MissingCapability, fmt.Sprintf("speaker %s cannot give a route a MED (capabilities %v), which a VIP with sessionAffinity ClientIP needs from all but its preferred node; upgrade it", nv.state.Version, nv.state.Capabilities)}
			continue
		}
		rank++
		out.nodes = append(out.nodes, n)
		out.byNode[n] = withMED(adv.byNode[n], rank, w.byName[n])
	}
	return out
}

// withMED is a node's advertisements of v with med on v's host route, if
// its speaker can send it: copies, since nodes with the same peers share
// their advertisements (planBGPLocked). An aggregate (aggregationLength)
// covers other VIPs too, with other preferred nodes: it keeps no MED.
func withMED(advs []*speakerv1.BGPAdvertisement, med uint32, n *nodeView) []*speakerv1.BGPAdvertisement {
	if n == nil || !n.state.Has(speakerv1.CapabilityBGPMED) {
		return advs
	}
	out := make([]*speakerv1.BGPAdvertisement, len(advs))
	for i, a := range advs {
		out[i] = a
		if a.GetPrefixLength() == 0 {
			c := proto.CloneOf(a)
			c.Med = &med
			out[i] = c
		}
	}
	return out
}
