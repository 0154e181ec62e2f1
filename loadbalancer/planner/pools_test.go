package planner

import (
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/ipam/ippool"
)

// TestPoolDeletionKeepsScope: a VIP whose pool is deleted keeps where it
// may be announced (the pool's node selector), its Service hears of it at
// once, and a metric counts it.
func TestPoolDeletionKeepsScope(t *testing.T) {
	sel, err := labels.Parse("rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	e := newPlannerEnv(t, envOptions{pools: newFakePools(map[string]ippool.Layer2{"lan": {Nodes: sel, Interfaces: []string{"eth1"}}})},
		testNode("node-a", map[string]string{"rack": "r1"}, true),
		testNode("node-b", map[string]string{"rack": "r2"}, true),
		testNode("node-c", map[string]string{"rack": "r1"}, true))
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-c")
	e.events()

	e.alloc.DeletePool("lan")
	e.pools.remove("lan")
	e.owner(vip, first)
	if evs := strings.Join(e.events(), "\n"); !strings.Contains(evs, "AddressOutsidePools") || !strings.Contains(evs, "as IPPool lan said") {
		t.Errorf("no AddressOutsidePools Event when the pool was deleted:\n%s", evs)
	}
	e.p.mu.Lock()
	outside := 0
	for _, v := range e.p.vips {
		if v.pool == "" {
			outside++
		}
	}
	ifcs := e.p.vips[vip].scope.interfaces
	e.p.mu.Unlock()
	if outside != 1 || !slices.Equal(ifcs, []string{"eth1"}) {
		t.Errorf("outside pools: %d (want 1), interfaces %v (want [eth1])", outside, ifcs)
	}
	// Its node fails: the VIP goes to the other r1 node only, never to
	// node-b, which the deleted pool did not select.
	e.updateNode(first, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	second := e.owner(vip, others(first, "node-b", "node-d")...)
	e.updateNode(second, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	e.owner(vip, "")
}

// TestRestartOutsidePoolsStaysPinned: after a restart the planner does not
// know the scope of a VIP whose pool was deleted before; the VIP stays on
// the node the previous leader recorded and goes nowhere else.
func TestRestartOutsidePoolsStaysPinned(t *testing.T) {
	svc := lbService("orphan", false)
	e := newPlannerEnv(t, envOptions{
		services: []*v1.Service{svc},
		before: func(e *plannerEnv) {
			al, _ := e.alloc.Lookup("uid-orphan")
			cur, _ := e.cs.CoreV1().Services("default").Get(e.ctx, "orphan", metav1.GetOptions{})
			cur.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: al.Addresses[0].String()}}
			cur.Status.Conditions = []metav1.Condition{{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAllAnnounced, Message: al.Addresses[0].String() + "=node-c"}}
			if _, err := e.cs.CoreV1().Services("default").UpdateStatus(e.ctx, cur, metav1.UpdateOptions{}); err != nil {
				e.t.Fatal(err)
			}
			e.alloc.DeletePool("lan")
			e.pools.remove("lan")
		},
	}, nodes(3)...)
	al, _ := e.alloc.Lookup("uid-orphan")
	vip := al.Addresses[0]
	e.owner(vip, "node-c")
	e.updateNode("node-c", func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	e.owner(vip, "")
	if evs := strings.Join(e.events(), "\n"); !strings.Contains(evs, "does not know the pool it came from") {
		t.Errorf("no Event explains why the VIP went nowhere else:\n%s", evs)
	}
}
