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
// an InternalIP that is loopback, link-local, multicast or a VIP is never
// dialled (the CCM is not a probe for a compromised node), and the Node
// gets a Warning Event; a usable one is dialled as before.
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
	if diff := cmp.Diff(map[string]netip.Addr{"node-a": netip.MustParseAddr("192.0.2.10")}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("speakers dialled (-want +got):\n%s", diff)
	}
	var warned []string
	for _, ev := range e.events() {
		if strings.HasPrefix(ev, "Warning "+ReasonUnusableNodeAddress+" ") {
			warned = append(warned, ev)
		}
	}
	for _, want := range []string{"127.0.0.1: a loopback address", "169.254.169.254: a link-local address", "239.1.2.3: a multicast address", vip.String() + ": held by 1 other owner(s)"} {
		if !slices.ContainsFunc(warned, func(ev string) bool { return strings.Contains(ev, want) }) {
			t.Errorf("no Warning %s Event with %q; got %q", ReasonUnusableNodeAddress, want, warned)
		}
	}
}
