package planner

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// restarting is a speaker that ended its stream with ReasonRestarting and
// whose host still refuses connections (it is up).
func restarting() speakers.State {
	st := lost()
	st.Restarting = true
	st.Problem = "speaker is restarting"
	st.Capabilities = []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing, speakerv1.CapabilityRestart}
	return st
}

// TestRestartingSpeakerKeepsVIPs: a speaker restarting (a rolling update)
// keeps its node's VIPs while its Node is Ready and schedulable, gets no
// new one, and loses them as for a lost speaker when the restart ends
// without it coming back.
func TestRestartingSpeakerKeepsVIPs(t *testing.T) {
	tests := []struct {
		name string
		// end changes the restarting speaker or its node.
		end   func(e *plannerEnv, node string)
		moves bool
	}{
		{"new speaker reports", func(e *plannerEnv, node string) { e.sp.set(node, up()) }, false},
		{"restart ends without it", func(e *plannerEnv, node string) { e.sp.set(node, lost()) }, true},
		{"node NotReady", func(e *plannerEnv, node string) {
			e.updateNode(node, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
		}, true},
		{"node cordoned", func(e *plannerEnv, node string) {
			e.updateNode(node, func(n *v1.Node) { n.Spec.Unschedulable = true })
		}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newPlannerEnv(t, envOptions{}, nodes(3)...)
			vip := e.service("web", false)
			first := e.owner(vip, "node-a", "node-b", "node-c")

			e.sp.set(first, restarting())
			e.owner(vip, first)
			// New VIPs go elsewhere meanwhile.
			var placed []netip.Addr
			for i := range 6 {
				placed = append(placed, e.createService(lbService(fmt.Sprintf("new-%d", i), false)))
			}
			e.idle()
			for _, a := range placed {
				e.owner(a, others(first, "node-d")...)
			}

			tc.end(e, first)
			if tc.moves {
				e.owner(vip, others(first, "node-d")...)
			} else {
				e.owner(vip, first)
			}
		})
	}
}

// TestRestartingIsNoMassLoss: speakers restarting together in a rolling
// update are a planned event, not a mass loss: the planner does not
// settle (which would hold VIPs of speakers lost meanwhile).
func TestRestartingIsNoMassLoss(t *testing.T) {
	e := newPlannerEnv(t, envOptions{settle: time.Hour}, nodes(3)...)
	owners := e.spread(12)
	e.sp.set("node-a", restarting())
	e.sp.set("node-b", restarting())
	e.checkOwners(owners)
	e.p.mu.Lock()
	settling := e.p.settle.active
	e.p.mu.Unlock()
	if settling {
		t.Fatal("the planner settles while two of three speakers restart")
	}
}
