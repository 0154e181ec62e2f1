package planner

import (
	"unicode/utf8"

	v1 "k8s.io/api/core/v1"
)

// Soft rules keep a node from announcing a VIP only while another node
// may: a VIP never goes dark because of them.
//
//   - Data plane (layer 2 and BGP): a node whose speaker reports its
//     kube-proxy unhealthy (State.DataPlane not ready) cannot deliver the
//     VIP's traffic. But when every node's kube-proxy is unhealthy, a
//     node that answers is still better than none.
//   - Cordon (layer 2 only): a node that is unschedulable, or tainted
//     ToBeDeletedByClusterAutoscaler, is being drained: its VIPs move
//     before its speaker stops, so that the drain costs no failover.
//     BGP advertisers stay: the routers spread traffic over every
//     advertiser, and one leaving is a route withdrawal, not a failover.
//
// A node held back by neither rule is preferred, then one held back only
// because it is cordoned (its kube-proxy works), then one whose data
// plane is down, then one that is both.

// TaintToBeDeletedByClusterAutoscaler is the taint the cluster autoscaler
// puts on a node it is about to remove.
const TaintToBeDeletedByClusterAutoscaler = "ToBeDeletedByClusterAutoscaler"

// softChoice sorts the nodes that pass every hard rule by how many soft
// rules hold them back.
type softChoice struct {
	tiers [4][]*nodeView
}

// add takes in a node that passes every hard rule; l2 applies the cordon
// rule.
func (s *softChoice) add(n *nodeView, l2 bool) {
	tier := 0
	if l2 && n.cordoned != nil {
		tier |= 1
	}
	if n.dataPlane != nil {
		tier |= 2
	}
	s.tiers[tier] = append(s.tiers[tier], n)
}

// eligible returns the nodes of the best tier that has any, and notes in
// why what holds back the others: the rule the best tier was not held
// back by (the data plane first).
func (s *softChoice) eligible(why map[string]verdict) []string {
	best := -1
	var out []string
	for tier, nodes := range s.tiers {
		switch {
		case len(nodes) == 0:
		case best < 0:
			best = tier
			for _, n := range nodes {
				out = append(out, n.name)
			}
		default:
			for _, n := range nodes {
				if extra := tier &^ best; extra&2 != 0 {
					why[n.name] = *n.dataPlane
				} else {
					why[n.name] = *n.cordoned
				}
			}
		}
	}
	return out
}

// cordoned says why a Node is being drained, or nil.
func cordoned(n *v1.Node) *verdict {
	if n.Spec.Unschedulable {
		return &verdict{NodeCordoned, "node is cordoned (unschedulable)"}
	}
	for _, t := range n.Spec.Taints {
		if t.Key == TaintToBeDeletedByClusterAutoscaler {
			return &verdict{NodeCordoned, "node is tainted " + TaintToBeDeletedByClusterAutoscaler}
		}
	}
	return nil
}

// maxReasonLen bounds text a speaker gives that the planner puts in logs
// and Events.
const maxReasonLen = 256

// clipText cuts s to maxReasonLen bytes on a rune boundary.
func clipText(s string) string {
	if len(s) <= maxReasonLen {
		return s
	}
	cut := maxReasonLen
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}
