package planner

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// dataPlaneDown is a connected speaker whose node's kube-proxy is
// unhealthy.
func dataPlaneDown(base speakers.State) speakers.State {
	base.Capabilities = append(slices.Clone(base.Capabilities), speakerv1.CapabilityDataPlane)
	base.DataPlane = &speakerv1.DataPlane{Ready: false, Reason: "kube-proxy healthz: connection refused"}
	return base
}

// dataPlaneUp is a connected speaker whose node's kube-proxy is healthy.
func dataPlaneUp(base speakers.State) speakers.State {
	base.Capabilities = append(slices.Clone(base.Capabilities), speakerv1.CapabilityDataPlane)
	base.DataPlane = &speakerv1.DataPlane{Ready: true}
	return base
}

// TestSoftRulesTiers: a node held back by a soft rule is eligible only
// when no node held back by fewer is; a working kube-proxy on a cordoned
// node beats a broken one on a schedulable node.
func TestSoftRulesTiers(t *testing.T) {
	dp := &verdict{DataPlaneDown, "dp"}
	co := &verdict{NodeCordoned, "co"}
	clean := func(n string) *nodeView { return &nodeView{name: n} }
	down := func(n string) *nodeView { return &nodeView{name: n, dataPlane: dp} }
	cord := func(n string) *nodeView { return &nodeView{name: n, cordoned: co} }
	both := func(n string) *nodeView { return &nodeView{name: n, dataPlane: dp, cordoned: co} }
	tests := []struct {
		name    string
		nodes   []*nodeView
		l2      bool
		want    []string
		wantWhy map[string]Reason
	}{
		{"all clean", []*nodeView{clean("a"), clean("b")}, true, []string{"a", "b"}, map[string]Reason{}},
		{"data plane down", []*nodeView{clean("a"), down("b")}, true, []string{"a"}, map[string]Reason{"b": DataPlaneDown}},
		{"every data plane down: waived", []*nodeView{down("a"), down("b")}, true, []string{"a", "b"}, map[string]Reason{}},
		{"cordoned", []*nodeView{cord("a"), clean("b")}, true, []string{"b"}, map[string]Reason{"a": NodeCordoned}},
		{"every node cordoned: waived", []*nodeView{cord("a"), cord("b")}, true, []string{"a", "b"}, map[string]Reason{}},
		{"cordoned beats data plane down", []*nodeView{down("a"), cord("b"), both("c")}, true, []string{"b"},
			map[string]Reason{"a": DataPlaneDown, "c": DataPlaneDown}},
		{"data plane down beats both", []*nodeView{down("a"), both("b")}, true, []string{"a"}, map[string]Reason{"b": NodeCordoned}},
		{"BGP ignores the cordon", []*nodeView{cord("a"), down("b")}, false, []string{"a"}, map[string]Reason{"b": DataPlaneDown}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var s softChoice
			for _, n := range tc.nodes {
				s.add(n, tc.l2)
			}
			why := map[string]verdict{}
			got := s.eligible(why)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("eligible (-want +got):\n%s", diff)
			}
			gotWhy := map[string]Reason{}
			for n, v := range why {
				gotWhy[n] = v.reason
			}
			if diff := cmp.Diff(tc.wantWhy, gotWhy); diff != "" {
				t.Errorf("why (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDataPlaneDownMovesVIPs: a layer-2 VIP leaves a node whose
// kube-proxy is unhealthy, but when every node's is, it stays where it
// is rather than going dark; it goes to the first node that recovers.
func TestDataPlaneDownMovesVIPs(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(3)...)
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b", "node-c")

	e.sp.set(first, dataPlaneDown(up()))
	second := e.owner(vip, others(first, "node-d")...)
	evs := strings.Join(e.events(), "\n")
	if !strings.Contains(evs, "moved from node "+first+" to node "+second+": node's data plane is not ready: kube-proxy healthz: connection refused") {
		t.Errorf("no Event tells why the VIP moved:\n%s", evs)
	}

	e.sp.set(second, dataPlaneDown(up()))
	third := e.owner(vip, others(first, second, "node-d")...)

	// Every node's data plane is down: the rule is waived, and the VIP
	// stays on its announcer.
	e.sp.set(third, dataPlaneDown(up()))
	e.owner(vip, third)

	// first recovers: it is the only node that can deliver.
	e.sp.set(first, dataPlaneUp(up()))
	e.owner(vip, first)
}

// TestCordonMovesLayer2VIPs: a drained node (unschedulable, or about to
// be removed by the cluster autoscaler) hands its layer-2 VIPs over before
// its speaker stops, unless no other node can take them.
func TestCordonMovesLayer2VIPs(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(2)...)
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b")
	second := others(first, "node-c", "node-d")[0]

	e.updateNode(first, func(n *v1.Node) { n.Spec.Unschedulable = true })
	e.owner(vip, second)

	// The other node is about to be removed too: nowhere better to go.
	e.updateNode(second, func(n *v1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, v1.Taint{Key: TaintToBeDeletedByClusterAutoscaler, Effect: v1.TaintEffectNoSchedule})
	})
	e.owner(vip, second)

	// Uncordoned: the VIP goes to the node that is not being removed.
	e.updateNode(first, func(n *v1.Node) { n.Spec.Unschedulable = false })
	e.owner(vip, first)
}

// TestNodeRelevantChangeDrain: cordoning and the autoscaler's taint are
// worth a planning pass; a heartbeat is not.
func TestNodeRelevantChangeDrain(t *testing.T) {
	base := testNode("node-a", nil, true)
	tests := []struct {
		name   string
		mutate func(n *v1.Node)
		want   bool
	}{
		{"heartbeat", func(n *v1.Node) { n.Status.Conditions[0].Message = "still ready" }, false},
		{"cordoned", func(n *v1.Node) { n.Spec.Unschedulable = true }, true},
		{"to be deleted", func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: TaintToBeDeletedByClusterAutoscaler, Effect: v1.TaintEffectNoSchedule}}
		}, true},
		{"another taint", func(n *v1.Node) {
			n.Spec.Taints = []v1.Taint{{Key: "example.com/other", Effect: v1.TaintEffectNoSchedule}}
		}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cur := base.DeepCopy()
			tc.mutate(cur)
			if got := nodeRelevantChange(base, cur); got != tc.want {
				t.Errorf("nodeRelevantChange = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestBGPDataPlaneDown: a node whose kube-proxy is unhealthy stops
// advertising a BGP VIP, unless every node's is; a cordoned node goes on
// advertising.
func TestBGPDataPlaneDown(t *testing.T) {
	peers := &fakePeers{byNode: map[string][]*v1alpha1.BGPPeer{"node-a": {tor}, "node-b": {tor}}}
	e := newPlannerEnv(t, envOptions{pools: bgpPools(true), peers: peers, before: func(e *plannerEnv) {
		e.sp.states["node-a"] = bgpUp()
		e.sp.states["node-b"] = bgpUp()
	}}, nodes(2)...)
	vip := e.service("web", false)
	e.advertisers(vip, "node-a", "node-b")

	e.sp.set("node-a", dataPlaneDown(bgpUp()))
	e.advertisers(vip, "node-b")
	e.sp.set("node-b", dataPlaneDown(bgpUp()))
	e.advertisers(vip, "node-a", "node-b") // waived: no VIP goes dark
	e.sp.set("node-a", dataPlaneUp(bgpUp()))
	e.advertisers(vip, "node-a")

	e.sp.set("node-b", bgpUp())
	e.updateNode("node-b", func(n *v1.Node) { n.Spec.Unschedulable = true })
	e.advertisers(vip, "node-a", "node-b")
}
