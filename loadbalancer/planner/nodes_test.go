package planner

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
)

// TestNodeAddressNotDialled: a Node's status is written by its own kubelet;
// an InternalIP that is loopback, link-local or multicast is never dialled
// (the CCM is not a probe for a compromised node), and the Node gets a
// Warning Event; a usable one is dialled as before, also one that a
// Service holds as its VIP (NodeAddressInUse: the node still announces the
// other VIPs; the speaker's certificate must name the node, so an address
// that is not the node's yields no session).
func TestNodeAddressNotDialled(t *testing.T) {
	withIP := func(name, ip string) *v1.Node {
		n := testNode(name, nil, true)
		n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
		return n
	}
	e := newPlannerEnv(t, envOptions{},
		testNode("node-a", nil, true), // 192.0.2.10
		withIP("node-b", "127.0.0.1"),
		withIP("node-c", "169.254.169.254"),
		withIP("node-d", "239.1.2.3"),
		withIP("node-e", "192.0.2.14"))
	vip := e.service("web", false)
	e.updateNode("node-e", func(n *v1.Node) { n.Status.Addresses[0].Address = vip.String() })
	e.idle()

	e.sp.mu.Lock()
	got := map[string]netip.Addr{}
	for n, a := range e.sp.addrs {
		got[n] = a
	}
	e.sp.mu.Unlock()
	want := map[string]netip.Addr{"node-a": netip.MustParseAddr("192.0.2.10"), "node-e": vip}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("speakers dialled (-want +got):\n%s", diff)
	}
	var warned []string
	for _, ev := range e.events() {
		if strings.HasPrefix(ev, "Warning "+ReasonUnusableNodeAddress+" ") {
			warned = append(warned, ev)
		}
	}
	for _, want := range []string{"127.0.0.1: a loopback address", "169.254.169.254: a link-local address", "239.1.2.3: a multicast address"} {
		if !slices.ContainsFunc(warned, func(ev string) bool { return strings.Contains(ev, want) }) {
			t.Errorf("no Warning %s Event with %q; got %q", ReasonUnusableNodeAddress, want, warned)
		}
	}
	if slices.ContainsFunc(warned, func(ev string) bool { return strings.Contains(ev, vip.String()) }) {
		t.Errorf("Warning %s Event for the node whose address a Service holds: %q", ReasonUnusableNodeAddress, warned)
	}
}

// TestNodeAddressCopiedStillDialled: a compromised kubelet copies node-a's
// InternalIP into its own Node's status (node-evil), and node-evil got the
// address's reservation first (reservations are first come, first served
// and their order after a leader change is random). node-a's speaker is
// still dialled at its address, by this planner and by the next leader's
// (before, it was not: the whole node went dark). node-evil is dialled at the same address,
// which gets it no session: node-a's speaker's certificate names node-a
// (speakers.TestCertificateOfAnotherNode).
func TestNodeAddressCopiedStillDialled(t *testing.T) {
	addrA := netip.MustParseAddr("192.0.2.10")
	evil := testNode("node-evil", nil, true)
	evil.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: addrA.String()}}
	e := newPlannerEnv(t, envOptions{before: func(e *plannerEnv) {
		if refused := e.alloc.Reserve("node/node-evil", "Node node-evil", []netip.Addr{addrA}); len(refused) != 0 {
			t.Fatalf("reserving node-a's address for node-evil: refused %v", refused)
		}
		e.alloc.Reserve("node/node-a", "Node node-a", []netip.Addr{addrA})
	}}, testNode("node-a", nil, true), evil)
	dialled := func() map[string]netip.Addr {
		e.sp.mu.Lock()
		defer e.sp.mu.Unlock()
		got := map[string]netip.Addr{}
		for n, a := range e.sp.addrs {
			got[n] = a
		}
		return got
	}
	want := map[string]netip.Addr{"node-a": addrA, "node-evil": addrA}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	if diff := cmp.Diff(want, dialled(), cmpAddr); diff != "" {
		t.Errorf("speakers dialled (-want +got):\n%s", diff)
	}
	for _, ev := range e.events() {
		if strings.HasPrefix(ev, "Warning "+ReasonUnusableNodeAddress+" ") {
			t.Errorf("Event: %s", ev)
		}
	}
	e.restart(nil) // a new leader
	if diff := cmp.Diff(want, dialled(), cmpAddr); diff != "" {
		t.Errorf("speakers dialled by the next leader (-want +got):\n%s", diff)
	}
}
