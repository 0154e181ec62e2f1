package planner

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// LabelExcludeFromLB keeps a node from announcing any VIP.
const LabelExcludeFromLB = v1.LabelNodeExcludeBalancers

// Reason says why a node may not announce a VIP. Reasons are the label of
// ironlb_failovers_total.
type Reason string

// Reasons a node may not announce a VIP.
const (
	NodeNotReady    Reason = "node_not_ready"
	NodeExcluded    Reason = "node_excluded"
	NodeDeleted     Reason = "node_deleted"
	NoNodeAddress   Reason = "no_node_address"
	NotSelected     Reason = "node_selector"
	NoLocalEndpoint Reason = "no_local_endpoint"
	// FewerLocalEndpoints: the node is eligible, but another has had more
	// ready endpoints of the VIP's Local Services for LocalRebalanceDelay.
	FewerLocalEndpoints Reason = "fewer_local_endpoints"
	SpeakerLost         Reason = "speaker_lost"
	SpeakerStopped      Reason = "speaker_stopped"
	SpeakerUnhealthy    Reason = "speaker_unhealthy"
	MissingCapability   Reason = "missing_capability"
	AnnounceFailed      Reason = "announce_failed"
	OutsidePools        Reason = "outside_pools"
	// SpeakerRestarting: the speaker said it is restarting (a rolling
	// update) and its node is up: the node keeps the VIPs it announces,
	// but gets no new one until its new speaker reports (restart.go).
	SpeakerRestarting Reason = "speaker_restarting"
	// DataPlaneDown: the node's kube-proxy is unhealthy, as its speaker
	// reports (soft.go).
	DataPlaneDown Reason = "data_plane_down"
	// NodeCordoned: the node is unschedulable or about to be removed by
	// the cluster autoscaler: it is being drained (layer 2 only; soft.go).
	NodeCordoned Reason = "node_cordoned"
)

// verdict is why one node may not announce one VIP.
type verdict struct {
	reason Reason
	msg    string
}

// world is what placement needs of the nodes and their speakers, gathered
// once per planning pass rather than once per VIP.
type world struct {
	now    time.Time
	nodes  []*nodeView
	byName map[string]*nodeView
	// macs are the speakers' hardware addresses, read when first needed
	// (speakerMAC).
	macs map[string]bool
}

type nodeView struct {
	name   string
	labels labels.Set
	node   *verdict // why the Node itself cannot announce; nil if it can
	// netDown: the Node's NetworkUnavailable condition is True (BGP
	// advertisers skip it).
	netDown bool
	speaker *verdict // why its speaker cannot; nil if it can
	state   speakers.State
	session bool // a speaker session exists
	// dataPlane and cordoned are the soft rules (soft.go): why the node
	// should not announce if another can; nil when they do not apply.
	dataPlane *verdict
	cordoned  *verdict
}

// gather reads the nodes and their speakers' state.
func (p *Planner) gather() *world {
	nodes, _ := p.nodes.List(labels.Everything())
	w := &world{now: time.Now(), byName: make(map[string]*nodeView, len(nodes))}
	for _, n := range nodes {
		nv := &nodeView{name: n.Name, labels: labels.Set(n.Labels), netDown: networkUnavailable(n), cordoned: cordoned(n)}
		switch {
		case !nodeReady(n):
			nv.node = &verdict{NodeNotReady, "node is not Ready"}
		case hasLabel(n, LabelExcludeFromLB):
			nv.node = &verdict{NodeExcluded, "node is labelled " + LabelExcludeFromLB}
		}
		st, ok := p.speakers.View(n.Name) // read only: not copied per node and sync
		nv.state, nv.session = st, ok
		switch {
		case !ok:
			nv.speaker = &verdict{NoNodeAddress, "node has no InternalIP to reach its speaker"}
		case !st.Connected && st.Stopped:
			nv.speaker = &verdict{SpeakerStopped, "speaker shut down and withdrew its VIPs"}
		case !st.Connected && st.Restarting:
			nv.speaker = restartVerdict(n)
		case !st.Connected && st.Fenced:
			nv.speaker = &verdict{SpeakerLost, "speaker follows a newer CCM leader: " + st.Problem}
		case !st.Connected:
			nv.speaker = &verdict{SpeakerLost, "speaker not connected: " + st.Problem}
		case !st.Healthy:
			nv.speaker = &verdict{SpeakerUnhealthy, "speaker unhealthy: " + st.Problem}
		}
		if dp := st.DataPlane; ok && dp != nil && !dp.GetReady() {
			nv.dataPlane = &verdict{DataPlaneDown, "node's data plane is not ready: " + clipText(dp.GetReason())}
		}
		w.nodes = append(w.nodes, nv)
		w.byName[n.Name] = nv
	}
	return w
}

// eligibleLocked lists the nodes that may announce v, and why each other
// node (including a deleted announcer) may not. The soft rules (soft.go)
// keep a node out only while a node they do not hold back is eligible.
func (p *Planner) eligibleLocked(v *vip, w *world) ([]string, map[string]verdict) {
	local := p.localEndpointNodes(v)
	var soft softChoice
	why := map[string]verdict{}
	for _, n := range w.nodes {
		if r, ok := p.layer2VerdictLocked(v, w, n, local); ok {
			soft.add(n, true)
		} else {
			why[n.name] = r
		}
	}
	out := soft.eligible(why)
	for _, n := range v.announcers {
		if _, known := w.byName[n]; !known {
			why[n] = verdict{NodeDeleted, "node was deleted"}
		}
	}
	return out, why
}

// layer2VerdictLocked reports whether node n passes every hard rule for
// announcing v over layer 2 (the soft rules are softChoice's), or why not.
// local is localEndpointNodes(v).
func (p *Planner) layer2VerdictLocked(v *vip, w *world, n *nodeView, local map[string]bool) (verdict, bool) {
	a := v.addr.String()
	switch {
	case n.node != nil:
		return *n.node, false
	case !v.scope.known && !slices.Contains(v.announcers, n.name) && n.name != v.last:
		return verdict{OutsidePools, fmt.Sprintf("%s is in no IPPool and IronLB does not know the pool it came from; it stays on the node announcing it", v.addr)}, false
	case v.scope.known && v.scope.nodes != nil && !v.scope.nodes.Matches(n.labels):
		return verdict{NotSelected, fmt.Sprintf("node does not match IPPool %s's layer2.nodeSelector", v.scope.pool)}, false
	case local != nil && !local[n.name]:
		return verdict{NoLocalEndpoint, "no ready endpoint on the node (externalTrafficPolicy: Local)"}, false
	case n.speaker != nil:
		return *n.speaker, false
	case !n.state.Has(speakerv1.CapabilityLayer2):
		return verdict{MissingCapability, fmt.Sprintf("speaker %s cannot announce over layer 2 (capabilities %v); upgrade it", n.state.Version, n.state.Capabilities)}, false
	case n.state.Conflicts[a] != "" && slices.Contains(v.announcers, n.name):
		// Another host answers for it (conflict.go): it stays where it
		// is, and is not the node's failure.
		return verdict{}, true
	case n.state.Failed[a] != "":
		p.noteFailureLocked(v.addr, n.name)
		return verdict{AnnounceFailed, "speaker cannot announce it: " + n.state.Failed[a]}, false
	case p.recentlyFailedLocked(v.addr, n.name, w.now):
		return verdict{AnnounceFailed, fmt.Sprintf("speaker failed to announce it less than %s ago", failureBackoff)}, false
	default:
		return verdict{}, true
	}
}

// keepsLocked reports whether v's one layer-2 announcer passes every hard
// rule and is held back by no soft rule. It then keeps v (chooseLocked's
// first rule: a node of the best tier is eligible), and planning v needs
// no pass over every node: a full pass over 10,000 VIPs at 1,000 nodes
// (a new leader's, a Node's change) is then O(VIPs), not O(VIPs × nodes).
// Not for a VIP of Local Services: its announcer may have to make way for
// a node with more endpoints (rebalanceLocked).
func (p *Planner) keepsLocked(v *vip, w *world) bool {
	if len(v.announcers) != 1 || hasLocal(v) {
		return false
	}
	n := w.byName[v.announcers[0]]
	if n == nil || n.cordoned != nil || n.dataPlane != nil {
		return false
	}
	_, ok := p.layer2VerdictLocked(v, w, n, nil)
	return ok
}

// failureBackoff keeps a VIP off a node whose speaker could not announce
// it (say, a pool names an interface the node lacks), so that the VIP does
// not bounce between failing nodes.
const failureBackoff = 30 * time.Second

func (p *Planner) noteFailureLocked(a netip.Addr, node string) {
	m := p.failures[a]
	if m == nil {
		m = map[string]time.Time{}
		p.failures[a] = m
	}
	if _, ok := m[node]; !ok {
		p.queue.AddAfter(allKey, failureBackoff+time.Second)
	}
	m[node] = time.Now()
}

func (p *Planner) recentlyFailedLocked(a netip.Addr, node string, now time.Time) bool {
	t, ok := p.failures[a][node]
	if ok && now.Sub(t) > failureBackoff {
		delete(p.failures[a], node)
		return false
	}
	return ok
}

// nodeRelevantChange ignores heartbeat-only Node updates.
func nodeRelevantChange(old, cur *v1.Node) bool {
	return nodeReady(old) != nodeReady(cur) || networkUnavailable(old) != networkUnavailable(cur) || !labels.Equals(old.Labels, cur.Labels) ||
		nodeAddress(old) != nodeAddress(cur) || (cordoned(old) == nil) != (cordoned(cur) == nil) ||
		(old.DeletionTimestamp == nil) != (cur.DeletionTimestamp == nil)
}

func networkUnavailable(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeNetworkUnavailable {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func nodeReady(n *v1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			return c.Status == v1.ConditionTrue
		}
	}
	return false
}

func hasLabel(n *v1.Node, key string) bool {
	_, ok := n.Labels[key]
	return ok
}
