package planner

import (
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// fakePeers gives nodes their BGP peers and set-ups.
type fakePeers struct {
	mu       sync.Mutex
	byNode   map[string][]*v1alpha1.BGPPeer
	configs  map[string]*speakerv1.BGPConfig
	onChange []func()
}

func (f *fakePeers) PeersOf(node string) []*v1alpha1.BGPPeer {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.byNode[node]
}

func (f *fakePeers) BGPConfigs() map[string]*speakerv1.BGPConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.configs
}

func (f *fakePeers) OnChange(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = append(f.onChange, fn)
}

func (f *fakePeers) Synced() bool { return true }

// setConfigs replaces every node's set-up and tells the planner.
func (f *fakePeers) setConfigs(configs map[string]*speakerv1.BGPConfig) {
	f.mu.Lock()
	f.configs = configs
	fns := slices.Clone(f.onChange)
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

func (f *fakePeers) set(node string, peers ...*v1alpha1.BGPPeer) {
	f.mu.Lock()
	f.byNode[node] = peers
	fns := slices.Clone(f.onChange)
	f.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
}

var tor = &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1alpha1.BGPPeerSpec{PeerAddress: "192.0.2.1", PeerASN: 64512, MyASN: 64513}}

func bgpUp() speakers.State {
	st := up()
	st.Capabilities = append(st.Capabilities, speakerv1.CapabilityBGP)
	return st
}

func bgpPools(l2Off bool) *fakePools {
	p := newFakePools(map[string]ippool.Layer2{"lan": {Off: l2Off, Nodes: labels.Everything()}})
	p.bgp = map[string]ippool.BGP{"lan": {Nodes: labels.Everything(), Spec: &v1alpha1.BGP{
		Advertisements: []v1alpha1.BGPAdvertisement{{Communities: []v1alpha1.Community{"65000:1"}}},
	}}}
	if l2Off {
		p.l2["lan"] = ippool.Layer2{Off: true, Nodes: labels.Nothing()}
	}
	return p
}

// advertisers waits for the planner to go idle and checks the nodes told
// to advertise vip over BGP, in the plan and at the speakers.
func (e *plannerEnv) advertisers(vip netip.Addr, want ...string) {
	e.t.Helper()
	e.idle()
	if got := e.p.Advertisers(vip); !slices.Equal(got, want) {
		e.t.Fatalf("%s advertised from %v, want %v", vip, got, want)
	}
	for _, n := range want {
		a := e.sp.announcement(n, vip.String())
		if a == nil || len(a.GetBgp()) == 0 {
			e.t.Fatalf("node %s was told %v about %s, want BGP advertisements", n, a, vip)
		}
	}
}

// TestBGPAdvertisers: every eligible node with a peer advertises a BGP
// pool's VIP; a speaker that lost its stream keeps advertising (the
// routers judge its node's health), a node that is not Ready or lacks a
// local endpoint does not.
func TestBGPAdvertisers(t *testing.T) {
	peers := &fakePeers{byNode: map[string][]*v1alpha1.BGPPeer{"node-a": {tor}, "node-b": {tor}, "node-c": {tor}}}
	e := newPlannerEnv(t, envOptions{pools: bgpPools(true), peers: peers, before: func(e *plannerEnv) {
		for _, n := range []string{"node-a", "node-b", "node-c", "node-d"} {
			e.sp.states[n] = bgpUp()
		}
		e.sp.states["node-d"] = up() // an older speaker, without BGP
	}}, nodes(4)...)
	vip := e.service("web", false)
	e.advertisers(vip, "node-a", "node-b", "node-c")
	want := &speakerv1.Announcement{Address: vip.String(), Service: "default/web", BgpOnly: true, Bgp: []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", Communities: []string{"65000:1"}}}}
	if diff := cmp.Diff(want, e.sp.announcement("node-a", vip.String()), protocmp.Transform()); diff != "" {
		t.Errorf("node-a's announcement (-want +got):\n%s", diff)
	}
	if got := e.p.Announcers(vip); len(got) != 0 {
		t.Errorf("layer-2 announcers %v for a BGP-only pool", got)
	}
	if a := e.sp.announcement("node-d", vip.String()); a != nil {
		t.Errorf("node-d, whose speaker cannot do BGP, was told %v", a)
	}

	// A lost speaker keeps advertising.
	gone := lost()
	gone.Capabilities = bgpUp().Capabilities // what it said before its stream broke
	e.sp.set("node-b", gone)
	e.advertisers(vip, "node-a", "node-b", "node-c")

	// A node that is not Ready stops.
	e.updateNode("node-c", func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	e.advertisers(vip, "node-a", "node-b")
	if a := e.sp.announcement("node-c", vip.String()); a != nil && e.sp.holders(vip.String()) != nil && slices.Contains(e.sp.holders(vip.String()), "node-c") {
		t.Errorf("node-c still holds %s", vip)
	}

	// A node whose network is unavailable stops.
	e.updateNode("node-b", func(n *v1.Node) {
		n.Status.Conditions = append(n.Status.Conditions, v1.NodeCondition{Type: v1.NodeNetworkUnavailable, Status: v1.ConditionTrue})
	})
	e.advertisers(vip, "node-a")
	e.updateNode("node-b", func(n *v1.Node) { n.Status.Conditions = n.Status.Conditions[:1] })
	e.advertisers(vip, "node-a", "node-b")

	// A node that loses its peers stops.
	peers.set("node-a")
	e.advertisers(vip, "node-b")

	// externalTrafficPolicy Local: only nodes with a ready endpoint.
	peers.set("node-a", tor)
	local := e.service("local", true)
	e.advertisers(local)
	e.applySlice(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "local-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "local"}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("node-a"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		},
	})
	e.advertisers(local, "node-a")
	evs := e.events()
	if !slices.ContainsFunc(evs, func(s string) bool {
		return s == "Normal VIPAdvertised "+vip.String()+" advertised over BGP from node-a, node-b, node-c"
	}) {
		t.Errorf("no VIPAdvertised Event naming the nodes; events: %v", evs)
	}
}

// TestBGPAndLayer2: a pool announced both ways has one layer-2 announcer
// and every eligible node advertising; the announcer's announcement carries
// both.
func TestBGPAndLayer2(t *testing.T) {
	peers := &fakePeers{byNode: map[string][]*v1alpha1.BGPPeer{"node-a": {tor}, "node-b": {tor}}}
	e := newPlannerEnv(t, envOptions{pools: bgpPools(false), peers: peers, before: func(e *plannerEnv) {
		e.sp.states["node-a"], e.sp.states["node-b"] = bgpUp(), bgpUp()
	}}, nodes(2)...)
	vip := e.service("web", false)
	e.advertisers(vip, "node-a", "node-b")
	ann := e.p.Announcers(vip)
	if len(ann) != 1 {
		t.Fatalf("layer-2 announcers %v, want one", ann)
	}
	l2 := ann[0]
	a := e.sp.announcement(l2, vip.String())
	if a.GetBgpOnly() || len(a.GetBgp()) != 1 {
		t.Errorf("the layer-2 announcer %s was told %v, want layer 2 and BGP", l2, a)
	}
	other := "node-a"
	if l2 == "node-a" {
		other = "node-b"
	}
	if a := e.sp.announcement(other, vip.String()); !a.GetBgpOnly() || len(a.GetBgp()) != 1 {
		t.Errorf("node %s was told %v, want BGP only", other, a)
	}
	// Deleting the Service withdraws it everywhere.
	if err := e.cs.CoreV1().Services("default").Delete(e.ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.sp.holders(vip.String())) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%s still held by %v after its Service was deleted", vip, e.sp.holders(vip.String()))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBGPAffinityPrefersOneNode: every eligible node advertises the VIP of
// a Service with sessionAffinity ClientIP, but one with MED 0 and the
// others with 1, 2, ... (so the routers send a client to one node, whose
// kube-proxy keeps its affinity); a speaker that cannot send a MED
// advertises only if it is the preferred node. When the preferred node
// stops advertising, the node with MED 1, which the routers fall back to,
// becomes the preferred one. Without affinity, no MEDs: ECMP.
func TestBGPAffinityPrefersOneNode(t *testing.T) {
	all := []string{"node-a", "node-b", "node-c", "node-d"}
	peers := &fakePeers{byNode: map[string][]*v1alpha1.BGPPeer{}}
	for _, n := range all {
		peers.byNode[n] = []*v1alpha1.BGPPeer{tor}
	}
	e := newPlannerEnv(t, envOptions{pools: bgpPools(true), peers: peers, before: func(e *plannerEnv) {
		for _, n := range all {
			st := bgpUp()
			st.Capabilities = append(st.Capabilities, speakerv1.CapabilityBGPMED)
			e.sp.states[n] = st
		}
		e.sp.states["node-d"] = bgpUp() // an older speaker: no MED
	}}, nodes(4)...)
	svc := lbService("sticky", false)
	svc.Spec.SessionAffinity = v1.ServiceAffinityClientIP
	vip := e.createService(svc)
	e.idle()

	// meds returns each advertiser's MED (-1: none).
	meds := func() map[string]int {
		out := map[string]int{}
		for _, n := range e.p.Advertisers(vip) {
			out[n] = -1
			for _, a := range e.sp.announcement(n, vip.String()).GetBgp() {
				if a.Med != nil {
					out[n] = int(a.GetMed())
				}
			}
		}
		return out
	}
	check := func() (preferred, next string) {
		t.Helper()
		m := meds()
		byMED := map[int]string{}
		for n, med := range m {
			if prev, ok := byMED[med]; ok {
				t.Fatalf("nodes %s and %s both advertise with MED %d: %v", prev, n, med, m)
			}
			byMED[med] = n
		}
		preferred = byMED[0]
		if n, ok := byMED[-1]; ok && preferred == "" && n == "node-d" {
			preferred = n // the older speaker, preferred, sends none
		}
		if preferred == "" {
			t.Fatalf("no preferred advertiser: %v", m)
		}
		if _, ok := m["node-d"]; ok && preferred != "node-d" {
			t.Errorf("node-d, which cannot send a MED, advertises though %s is preferred: %v", preferred, m)
		}
		for i := 1; i < len(m); i++ {
			if byMED[i] == "" {
				t.Errorf("MEDs %v are not 0, 1, 2, ...", m)
			}
		}
		return preferred, byMED[1]
	}
	preferred, next := check()
	if next == "" {
		t.Fatalf("one advertiser only: %v", meds())
	}
	// The preferred node loses its peer: the next one takes over, and is
	// the preferred node from then on.
	peers.set(preferred)
	e.idle()
	if now, _ := check(); now != next {
		t.Errorf("after %s stopped, %s is preferred; the routers fall back to %s (MED 1)", preferred, now, next)
	}
	// It comes back: the preferred node stays.
	peers.set(preferred, tor)
	e.idle()
	if now, _ := check(); now != next {
		t.Errorf("%s came back and took the VIP from %s", preferred, now)
	}
	// Without affinity: every node, no MED.
	s, err := e.cs.CoreV1().Services("default").Get(e.ctx, "sticky", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	s.Spec.SessionAffinity = v1.ServiceAffinityNone
	m := e.mark(s)
	if _, err := e.cs.CoreV1().Services("default").Update(e.ctx, s, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.seen("*v1.Service", "sticky", m)
	e.advertisers(vip, all...)
	for n, med := range meds() {
		if med != -1 {
			t.Errorf("node %s advertises with MED %d without affinity", n, med)
		}
	}
}

// TestNodesDiff: the nodes added to and removed from a VIP's advertisers,
// which a log line names instead of every advertiser.
func TestNodesDiff(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		was, now               []string
		wantAdded, wantRemoved []string
	}{
		{name: "none before", now: []string{"a", "b"}, wantAdded: []string{"a", "b"}},
		{name: "none after", was: []string{"a", "b"}, wantRemoved: []string{"a", "b"}},
		{name: "same", was: []string{"a", "b"}, now: []string{"a", "b"}},
		{name: "one in, one out", was: []string{"a", "b", "d"}, now: []string{"a", "c", "d", "e"}, wantAdded: []string{"c", "e"}, wantRemoved: []string{"b"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			added, removed := nodesDiff(tc.was, tc.now)
			if diff := cmp.Diff(tc.wantAdded, added); diff != "" {
				t.Errorf("added (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRemoved, removed); diff != "" {
				t.Errorf("removed (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBGPSetUpsReachEveryNode: the planner is the one path of BGP peer
// configuration to the speakers. Every node's set-up, as Peers gives it,
// reaches the node's speaker, nodes that hold no VIP included, and so does
// a change (nil: the node's sessions close).
func TestBGPSetUpsReachEveryNode(t *testing.T) {
	cfg := func(peers ...string) *speakerv1.BGPConfig {
		c := &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513}
		for _, p := range peers {
			c.Peers = append(c.Peers, &speakerv1.BGPPeer{Name: p, Address: "192.0.2.1", PeerAsn: 64512})
		}
		return c
	}
	peers := &fakePeers{byNode: map[string][]*v1alpha1.BGPPeer{"node-a": {tor}, "node-c": {tor}}}
	e := newPlannerEnv(t, envOptions{pools: bgpPools(true), peers: peers, before: func(e *plannerEnv) {
		for _, n := range []string{"node-a", "node-b", "node-c"} {
			e.sp.states[n] = bgpUp()
		}
	}}, nodes(3)...)
	check := func(want map[string]*speakerv1.BGPConfig) {
		t.Helper()
		for n, w := range want {
			got, ok := e.sp.bgpConfig(n)
			if !ok {
				t.Fatalf("node %s's speaker was given no BGP set-up", n)
			}
			if diff := cmp.Diff(w, got, protocmp.Transform()); diff != "" {
				t.Errorf("node %s's BGP set-up (-want +got):\n%s", n, diff)
			}
		}
	}
	first := map[string]*speakerv1.BGPConfig{"node-a": cfg("tor"), "node-b": nil, "node-c": cfg("tor")}
	peers.setConfigs(first)
	check(first) // no Service, no VIP: the sessions are set up all the same
	second := map[string]*speakerv1.BGPConfig{"node-a": nil, "node-b": cfg("tor"), "node-c": cfg("tor", "spine")}
	peers.setConfigs(second)
	check(second)
	e.idle()
}
