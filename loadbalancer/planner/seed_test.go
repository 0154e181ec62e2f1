package planner

import (
	"net/netip"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// TestSeedsFollowTheRecordOverClaims: a new leader places VIPs where the
// CCMs' record says, whatever a speaker claims: node-b, announcing a's VIP
// recorded on node-a, does not get it (a lying or stale speaker cannot pull
// a VIP to itself). A VIP without a record stays with the speaker that
// announces it.
func TestSeedsFollowTheRecordOverClaims(t *testing.T) {
	a, b, c := lbService("a", false), lbService("b", false), lbService("c", false)
	e := newPlannerEnv(t, envOptions{
		services: []*v1.Service{a, b, c},
		before: func(e *plannerEnv) {
			va, _ := e.alloc.Lookup("uid-a")
			vb, _ := e.alloc.Lookup("uid-b")
			vc, _ := e.alloc.Lookup("uid-c")
			for name, rec := range map[string]string{"a": va.Addresses[0].String() + "=node-a", "b": vb.Addresses[0].String() + "=node-c"} {
				cur, _ := e.cs.CoreV1().Services("default").Get(e.ctx, name, metav1.GetOptions{})
				al, _ := e.alloc.Lookup(string(cur.UID))
				cur.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: al.Addresses[0].String()}}
				cur.Status.Conditions = []metav1.Condition{{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAllAnnounced, Message: rec}}
				if _, err := e.cs.CoreV1().Services("default").UpdateStatus(e.ctx, cur, metav1.UpdateOptions{}); err != nil {
					e.t.Fatal(err)
				}
			}
			// node-b claims a (recorded on node-a) and c (no record);
			// node-c has not reported.
			for _, n := range []string{"node-a", "node-b", "node-c"} {
				e.sp.SetNode(n, netip.Addr{})
			}
			stB := up()
			stB.Initial = []netip.Addr{va.Addresses[0], vc.Addresses[0]}
			e.sp.states["node-b"] = stB
			e.sp.states["node-c"] = speakers.State{Problem: "not connected yet"}
		},
	}, nodes(3)...)
	va, _ := e.alloc.Lookup("uid-a")
	vb, _ := e.alloc.Lookup("uid-b")
	vc, _ := e.alloc.Lookup("uid-c")
	e.owner(va.Addresses[0], "node-a")
	e.owner(vb.Addresses[0], "node-c")
	e.owner(vc.Addresses[0], "node-b")
}
