package planner

import (
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/ipam/ippool"
)

func TestPlannerEligibility(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(3)...)
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b", "node-c")

	t.Run("sticky while eligible", func(t *testing.T) {
		// Another node joining does not take the VIP away.
		d := testNode("node-d", nil, true)
		m := e.mark(d)
		if _, err := e.cs.CoreV1().Nodes().Create(e.ctx, d, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.seen("*v1.Node", "node-d", m)
		e.owner(vip, first)
	})
	var second string
	t.Run("speaker lost", func(t *testing.T) {
		e.sp.set(first, lost())
		second = e.owner(vip, others(first)...)
	})
	t.Run("speaker back: no move back", func(t *testing.T) {
		e.sp.set(first, up())
		e.owner(vip, second)
	})
	var third string
	t.Run("node NotReady", func(t *testing.T) {
		e.updateNode(second, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
		third = e.owner(vip, others(second)...)
	})
	t.Run("excluded by label", func(t *testing.T) {
		e.updateNode(third, func(n *v1.Node) { n.Labels = map[string]string{LabelExcludeFromLB: ""} })
		e.owner(vip, others(second, third)...)
	})
	t.Run("speaker lacks the layer-2 capability", func(t *testing.T) {
		cur := e.owner(vip, others(second, third)...)
		old := up()
		old.Capabilities = []string{"bgp"}
		old.Version = "v9.0.0"
		e.sp.set(cur, old)
		e.owner(vip, others(second, third, cur)...)
		evs := strings.Join(e.events(), "\n")
		if !strings.Contains(evs, "speaker v9.0.0 cannot announce over layer 2") {
			t.Errorf("no Event names the missing capability:\n%s", evs)
		}
	})
	t.Run("deleted service withdraws", func(t *testing.T) {
		e.alloc.Release("uid-web")
		if err := e.cs.CoreV1().Services("default").Delete(e.ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.eventually(vip, "")
		e.owner(vip, "")
	})
}

func TestPlannerPoolSelectorAndLocalPolicy(t *testing.T) {
	sel, err := labels.Parse("rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	e := newPlannerEnv(t, envOptions{pools: newFakePools(map[string]ippool.Layer2{"lan": {Nodes: sel}})},
		testNode("node-a", map[string]string{"rack": "r1"}, true),
		testNode("node-b", map[string]string{"rack": "r2"}, true),
		testNode("node-c", map[string]string{"rack": "r1"}, true))
	vip := e.service("sel", false)
	e.owner(vip, "node-a", "node-c")

	local := e.service("local", true)
	e.owner(local, "") // no endpoint anywhere
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "local-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "local"}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("node-c"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.0.0.2"}, NodeName: ptr.To("node-a"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		},
	}
	e.applySlice(slice)
	e.owner(local, "node-c")
	// The endpoint moves to node-a: so does the VIP.
	slice.Endpoints[0].Conditions.Ready = ptr.To(false)
	slice.Endpoints[1].Conditions.Ready = ptr.To(true)
	e.applySlice(slice)
	e.owner(local, "node-a")
	// A node outside the selector never gets it, even with an endpoint.
	slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.3"}, NodeName: ptr.To("node-b")}}
	e.applySlice(slice)
	e.owner(local, "")
}

// localSlice is the IPv4 EndpointSlice of Service name with ready
// endpoints on the given nodes (one per entry) and a not-ready one on
// node-d.
func localSlice(name string, ready ...string) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name + "-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: name}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, n := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.0.0.%d", i+1)}, NodeName: ptr.To(n), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{"10.0.1.1"}, NodeName: ptr.To("node-d"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}})
	return s
}

// TestLocalVIPFollowsTheEndpoints: a layer-2 VIP of an
// externalTrafficPolicy Local Service serves only its announcer's
// endpoints. It starts on the node with the most ready endpoints, stays
// on its node while another has as many, or more for less than
// LocalRebalanceDelay, and moves once another has had more for that long.
func TestLocalVIPFollowsTheEndpoints(t *testing.T) {
	t.Run("first placement", func(t *testing.T) {
		e := newPlannerEnv(t, envOptions{}, nodes(4)...)
		e.applySlice(localSlice("web", "node-a", "node-c", "node-c", "node-b"))
		vip := e.service("web", true)
		e.owner(vip, "node-c")
	})
	t.Run("stays before the delay", func(t *testing.T) {
		e := newPlannerEnv(t, envOptions{}, nodes(4)...)
		vip := e.service("web", true)
		e.applySlice(localSlice("web", "node-a"))
		e.owner(vip, "node-a")
		// node-b gets as many endpoints: no reason to move.
		e.applySlice(localSlice("web", "node-a", "node-b"))
		e.owner(vip, "node-a")
		// node-b gets more, but not for an hour yet.
		e.applySlice(localSlice("web", "node-a", "node-b", "node-b"))
		e.owner(vip, "node-a")
		e.p.mu.Lock()
		since := e.p.vips[vip].uneven
		e.p.mu.Unlock()
		if since.IsZero() {
			t.Error("the planner did not note that node-b has more endpoints")
		}
		// Back to a tie: the imbalance is forgotten.
		e.applySlice(localSlice("web", "node-a", "node-a", "node-b", "node-b"))
		e.owner(vip, "node-a")
		e.p.mu.Lock()
		since = e.p.vips[vip].uneven
		e.p.mu.Unlock()
		if !since.IsZero() {
			t.Errorf("imbalance noted since %s after a tie", since)
		}
		// Its node loses its endpoints: it moves at once, to the node with most.
		e.applySlice(localSlice("web", "node-c", "node-b", "node-b"))
		e.owner(vip, "node-b")
	})
	t.Run("moves after the delay", func(t *testing.T) {
		const delay = 200 * time.Millisecond
		e := newPlannerEnv(t, envOptions{rebalance: delay}, nodes(4)...)
		vip := e.service("web", true)
		e.applySlice(localSlice("web", "node-a"))
		e.owner(vip, "node-a")
		start := time.Now()
		e.applySlice(localSlice("web", "node-a", "node-c", "node-c"))
		// The signal: the planner moves it when the delay ends.
		e.eventually(vip, "node-c")
		if took := time.Since(start); took < delay {
			t.Errorf("moved after %s, before the %s delay", took, delay)
		}
		var moved []string
		for _, ev := range e.events() {
			if strings.Contains(ev, "moved from node node-a to node node-c") {
				moved = append(moved, ev)
			}
		}
		if len(moved) != 1 || !strings.Contains(moved[0], "node node-a had 1 ready endpoints and node node-c 2") {
			t.Errorf("Events of the move: %q", moved)
		}
	})
	t.Run("never when negative", func(t *testing.T) {
		e := newPlannerEnv(t, envOptions{rebalance: -1}, nodes(4)...)
		vip := e.service("web", true)
		e.applySlice(localSlice("web", "node-a"))
		e.owner(vip, "node-a")
		e.applySlice(localSlice("web", "node-a", "node-c", "node-c"))
		e.owner(vip, "node-a")
		e.p.mu.Lock()
		since := e.p.vips[vip].uneven
		e.p.mu.Unlock()
		if !since.IsZero() {
			t.Errorf("imbalance noted since %s with rebalancing off", since)
		}
	})
	t.Run("cluster policy ignores endpoints", func(t *testing.T) {
		e := newPlannerEnv(t, envOptions{rebalance: 50 * time.Millisecond}, nodes(4)...)
		e.applySlice(localSlice("web", "node-a", "node-c", "node-c"))
		vip := e.service("web", false)
		owner := e.owner(vip, "node-a", "node-b", "node-c", "node-d")
		e.applySlice(localSlice("web", "node-b", "node-b", "node-b"))
		e.owner(vip, owner)
	})
}

func TestPlannerFailedVIPMovesAlone(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(2)...)
	addr := e.service("one", false)
	owner := e.owner(addr, "node-a", "node-b")
	failed := up()
	failed.Failed = map[string]string{addr.String(): "no such interface"}
	e.sp.set(owner, failed)
	other := e.owner(addr, others(owner)...)
	// The failing node recovers its state, but the VIP does not bounce back
	// and forth: the other node keeps it.
	e.sp.set(owner, up())
	e.owner(addr, other)
	// A failure on the new owner too: the VIP cannot go back to a node that
	// failed within the backoff, so nobody announces it for now.
	failed.Failed = map[string]string{addr.String(): "no such interface"}
	e.sp.set(other, failed)
	e.owner(addr, "")
}
