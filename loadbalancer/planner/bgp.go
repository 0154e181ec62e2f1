package planner

import (
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/bgppeers"
)

// In BGP every eligible node advertises a VIP, and the routers spread
// traffic over them (ECMP). The routers' sessions are the health signal:
// a speaker whose stream to the CCM broke keeps advertising what it was
// told, and its node stays an advertiser; a dead node's sessions drop and
// the routers remove it on their own. A VIP of Services with
// sessionAffinity ClientIP is the exception (affinity.go): the routers
// are made to prefer one node.

// Reasons a node may not advertise a VIP over BGP (besides the layer-2
// ones that apply: NodeNotReady, NodeExcluded, NotSelected,
// NoLocalEndpoint, MissingCapability, NoNodeAddress, DataPlaneDown).
const (
	NoPeer             Reason = "no_bgp_peer"
	NetworkUnavailable Reason = "network_unavailable"
)

// advertised is the BGP plan of one VIP: the advertising nodes, sorted,
// and each one's advertisements.
type advertised struct {
	nodes  []string
	byNode map[string][]*speakerv1.BGPAdvertisement
}

// planBGPLocked chooses the nodes that advertise v, and sends an Event
// when that set changes.
func (p *Planner) planBGPLocked(v *vip, w *world) advertised {
	adv := advertised{byNode: map[string][]*speakerv1.BGPAdvertisement{}}
	// Nodes with the same peers share one list of advertisements (and,
	// in tellLocked, one announcement): every node advertises every BGP
	// VIP, and a list per node cost O(nodes × BGP VIPs) of memory.
	shared := map[string][]*speakerv1.BGPAdvertisement{}
	if v.scope.bgp == nil || p.opts.Peers == nil {
		if len(v.advertisers) > 0 {
			p.log.Info("VIP no longer advertised over BGP", "address", v.addr, "nodes", len(v.advertisers), "removed", nodeList(v.advertisers))
			for key := range v.services {
				p.enqueueRecord(key)
			}
		}
		return adv
	}
	why := map[string]verdict{}
	local := p.localEndpointNodes(v)
	var soft softChoice // the data-plane rule (soft.go)
	for _, n := range w.nodes {
		switch {
		case n.node != nil:
			why[n.name] = *n.node
		case n.netDown:
			why[n.name] = verdict{NetworkUnavailable, "node's NetworkUnavailable condition is True"}
		case !v.scope.bgp.Nodes.Matches(n.labels):
			why[n.name] = verdict{NotSelected, fmt.Sprintf("node does not match IPPool %s's bgp.nodeSelector", v.scope.pool)}
		case local != nil && !local[n.name]:
			why[n.name] = verdict{NoLocalEndpoint, "no ready endpoint on the node (externalTrafficPolicy: Local)"}
		case !n.session:
			why[n.name] = verdict{NoNodeAddress, "node has no InternalIP to reach its speaker"}
		case !n.state.Reported:
			// Its capabilities are unknown: an older speaker would take
			// a BGP-only VIP for a layer-2 one.
			why[n.name] = verdict{SpeakerLost, "speaker has not reported yet"}
		case !n.state.Has(speakerv1.CapabilityBGP):
			why[n.name] = verdict{MissingCapability, fmt.Sprintf("speaker %s cannot advertise over BGP (capabilities %v); upgrade it", n.state.Version, n.state.Capabilities)}
		default:
			peers := p.opts.Peers.PeersOf(n.name)
			key := peersKey(peers)
			advs, ok := shared[key]
			var err error
			if !ok {
				advs, err = bgppeers.Advertisements(v.addr, v.scope.bgp.Spec, peers)
				if err == nil {
					shared[key] = advs
				}
			}
			if err != nil {
				why[n.name] = verdict{NotSelected, err.Error()}
				continue
			}
			if len(advs) == 0 {
				why[n.name] = verdict{NoPeer, fmt.Sprintf("no BGPPeer of the node is selected by IPPool %s's advertisements", v.scope.pool)}
				continue
			}
			soft.add(n, false)
			adv.byNode[n.name] = advs
		}
	}
	adv.nodes = soft.eligible(why)
	for n := range adv.byNode {
		if !slices.Contains(adv.nodes, n) {
			delete(adv.byNode, n)
		}
	}
	if clientIPAffinity(v) {
		adv = p.preferOneLocked(v, w, adv, why)
	} else {
		v.preferred, v.unevenBGP = "", time.Time{}
	}
	slices.Sort(adv.nodes)
	if !slices.Equal(adv.nodes, v.advertisers) {
		for key := range v.services {
			p.enqueueRecord(key)
		}
		if len(adv.nodes) == 0 {
			p.log.Info("No node can advertise VIP over BGP", "address", v.addr, "reasons", summarize(why))
			p.event(v, v1.EventTypeWarning, ReasonNoAnnouncer, fmt.Sprintf("No node can advertise %s over BGP: %s", v.addr, summarize(why)))
		} else {
			added, removed := nodesDiff(v.advertisers, adv.nodes)
			p.log.Info("Advertising VIP over BGP", "address", v.addr, "nodes", len(adv.nodes), "added", nodeList(added), "removed", nodeList(removed))
			p.event(v, v1.EventTypeNormal, ReasonAdvertised, fmt.Sprintf("%s advertised over BGP from %s", v.addr, nodeList(adv.nodes)))
		}
	}
	return adv
}

// nodesDiff are the nodes of the sorted list now not in the sorted list
// was, and those of was not in now.
func nodesDiff(was, now []string) (added, removed []string) {
	i, j := 0, 0
	for i < len(was) || j < len(now) {
		switch {
		case j == len(now) || i < len(was) && was[i] < now[j]:
			removed = append(removed, was[i])
			i++
		case i == len(was) || now[j] < was[i]:
			added = append(added, now[j])
			j++
		default:
			i++
			j++
		}
	}
	return added, removed
}

// nodeList names nodes for a log line or an Event, shortened past ten:
// every node may advertise a BGP VIP, and a thousand names per VIP would
// make a new leader's log megabytes.
func nodeList(nodes []string) string {
	if len(nodes) > 10 {
		return fmt.Sprintf("%s and %d more nodes", strings.Join(nodes[:10], ", "), len(nodes)-10)
	}
	return strings.Join(nodes, ", ")
}

// peersKey names a set of BGPPeers (by object name, in order).
func peersKey(peers []*v1alpha1.BGPPeer) string {
	var b strings.Builder
	for _, p := range peers {
		b.WriteString(p.Name)
		b.WriteByte(0)
	}
	return b.String()
}
