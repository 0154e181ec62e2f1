package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// fakeSpeakers records assignments; tests set each node's state.
type fakeSpeakers struct {
	mu       sync.Mutex
	addrs    map[string]netip.Addr
	states   map[string]speakers.State
	assigned map[string]map[string]bool
}

func newFakeSpeakers() *fakeSpeakers {
	return &fakeSpeakers{addrs: map[string]netip.Addr{}, states: map[string]speakers.State{}, assigned: map[string]map[string]bool{}}
}

func (f *fakeSpeakers) SetNode(node string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[node] = addr
	if _, ok := f.states[node]; !ok {
		f.states[node] = speakers.State{Connected: true, Healthy: true, Reported: true}
	}
}
func (f *fakeSpeakers) RemoveNode(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, node)
}
func (f *fakeSpeakers) Nodes() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n := range f.addrs {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}
func (f *fakeSpeakers) State(node string) (speakers.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.addrs[node]; !ok {
		return speakers.State{}, false
	}
	return f.states[node], true
}
func (f *fakeSpeakers) Assign(node string, a *speakerv1.Announcement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.assigned[node] == nil {
		f.assigned[node] = map[string]bool{}
	}
	f.assigned[node][a.GetAddress()] = true
}
func (f *fakeSpeakers) Unassign(node, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.assigned[node], addr)
}
func (f *fakeSpeakers) SetReady() {}
func (f *fakeSpeakers) set(node string, st speakers.State) {
	f.mu.Lock()
	f.states[node] = st
	f.mu.Unlock()
}

// holders returns the nodes told to announce addr.
func (f *fakeSpeakers) holders(addr string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for n, m := range f.assigned {
		if m[addr] {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

type fakePools struct{ l2 map[string]ippool.Layer2 }

func (p fakePools) Layer2(pool string) ippool.Layer2 {
	if l, ok := p.l2[pool]; ok {
		return l
	}
	return ippool.AnyNode
}
func (p fakePools) OnLayer2Change(func(string)) {}

func testNode(name string, lbls map[string]string, ready bool) *v1.Node {
	st := v1.ConditionTrue
	if !ready {
		st = v1.ConditionFalse
	}
	return &v1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Status: v1.NodeStatus{
			Addresses:  []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: fmt.Sprintf("192.0.2.%d", 10+int(name[len(name)-1]-'a'))}},
			Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: st}},
		},
	}
}

type plannerEnv struct {
	t     *testing.T
	ctx   context.Context
	cs    *fake.Clientset
	alloc *ipam.Allocator
	sp    *fakeSpeakers
	p     *Planner
}

func newPlannerEnv(t *testing.T, pools fakePools, objs ...*v1.Node) *plannerEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs := fake.NewClientset()
	for _, n := range objs {
		if _, err := cs.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	alloc := ipam.New()
	ranges, err := ipam.ParseRanges([]string{"192.0.2.200-192.0.2.250"})
	if err != nil {
		t.Fatal(err)
	}
	alloc.SetPool(ipam.Pool{Name: "lan", Ranges: ranges, AutoAssign: true})
	sp := newFakeSpeakers()
	p := NewPlanner(alloc, pools, sp, record.NewFakeRecorder(1000))
	p.grace = 0
	factory := informers.NewSharedInformerFactory(cs, 0)
	p.SetInformers(factory, func() bool { return true })
	go p.Run(ctx)
	return &plannerEnv{t: t, ctx: ctx, cs: cs, alloc: alloc, sp: sp, p: p}
}

// service creates a Service and its allocation, as EnsureLoadBalancer does.
func (e *plannerEnv) service(name string, local bool) netip.Addr {
	e.t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	al, err := e.alloc.Ensure(ipam.Request{Owner: string(svc.UID), Name: "default/" + name, Families: []ipam.Family{ipam.IPv4}})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.cs.CoreV1().Services("default").Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	return al.Addresses[0]
}

// owner waits until exactly one node is told to announce vip and it is one
// of want ("" for none), and returns it.
func (e *plannerEnv) owner(vip netip.Addr, want ...string) string {
	e.t.Helper()
	var got []string
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		got = e.sp.holders(vip.String())
		owner := e.p.Owner(vip)
		if len(want) == 1 && want[0] == "" {
			if len(got) == 0 && owner == "" {
				return ""
			}
		} else if len(got) == 1 && got[0] == owner && slices.Contains(want, owner) {
			return owner
		}
		time.Sleep(10 * time.Millisecond)
	}
	e.e("VIP %s held by %v (planner owner %q), want one of %v", vip, got, e.p.Owner(vip), want)
	return ""
}

func (e *plannerEnv) e(format string, args ...any) {
	e.t.Helper()
	e.t.Fatalf(format, args...)
}

func (e *plannerEnv) updateNode(name string, mutate func(*v1.Node)) {
	e.t.Helper()
	n, err := e.cs.CoreV1().Nodes().Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	mutate(n)
	if _, err := e.cs.CoreV1().Nodes().Update(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func TestPlannerEligibility(t *testing.T) {
	e := newPlannerEnv(t, fakePools{},
		testNode("node-a", nil, true), testNode("node-b", nil, true), testNode("node-c", nil, true))
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b", "node-c")

	t.Run("sticky while eligible", func(t *testing.T) {
		// Another node joining does not take the VIP away.
		if _, err := e.cs.CoreV1().Nodes().Create(e.ctx, testNode("node-d", nil, true), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		e.owner(vip, first)
	})
	var second string
	t.Run("speaker lost", func(t *testing.T) {
		e.sp.set(first, speakers.State{Connected: false, Problem: "stream broke"})
		e.p.SpeakerChanged(first)
		second = e.owner(vip, others(first)...)
	})
	t.Run("speaker back: no move back", func(t *testing.T) {
		e.sp.set(first, speakers.State{Connected: true, Healthy: true, Reported: true})
		e.p.SpeakerChanged(first)
		time.Sleep(100 * time.Millisecond)
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
	t.Run("deleted service withdraws", func(t *testing.T) {
		e.alloc.Release("uid-web")
		if err := e.cs.CoreV1().Services("default").Delete(e.ctx, "web", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.owner(vip, "")
	})
}

func others(not ...string) []string {
	var out []string
	for _, n := range []string{"node-a", "node-b", "node-c", "node-d"} {
		if !slices.Contains(not, n) {
			out = append(out, n)
		}
	}
	return out
}

func TestPlannerPoolSelectorAndLocalPolicy(t *testing.T) {
	sel, err := labels.Parse("rack=r1")
	if err != nil {
		t.Fatal(err)
	}
	e := newPlannerEnv(t, fakePools{l2: map[string]ippool.Layer2{"lan": {Nodes: sel}}},
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
	if _, err := e.cs.DiscoveryV1().EndpointSlices("default").Create(e.ctx, slice, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.owner(local, "node-c")
	// The endpoint moves to node-a: so does the VIP.
	slice.Endpoints[0].Conditions.Ready = ptr.To(false)
	slice.Endpoints[1].Conditions.Ready = ptr.To(true)
	if _, err := e.cs.DiscoveryV1().EndpointSlices("default").Update(e.ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.owner(local, "node-a")
	// A node outside the selector never gets it, even with an endpoint.
	slice.Endpoints = []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.3"}, NodeName: ptr.To("node-b")}}
	if _, err := e.cs.DiscoveryV1().EndpointSlices("default").Update(e.ctx, slice, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.owner(local, "")
}

func TestPlannerFailedVIPMovesAlone(t *testing.T) {
	e := newPlannerEnv(t, fakePools{}, testNode("node-a", nil, true), testNode("node-b", nil, true))
	v1addr := e.service("one", false)
	owner := e.owner(v1addr, "node-a", "node-b")
	e.sp.set(owner, speakers.State{Connected: true, Healthy: true, Reported: true, Failed: map[string]string{v1addr.String(): "no such interface"}})
	e.p.SpeakerChanged(owner)
	other := e.owner(v1addr, others(owner)...)
	// The failing node recovers its state, but the VIP does not bounce back
	// and forth: the other node keeps it.
	e.sp.set(owner, speakers.State{Connected: true, Healthy: true, Reported: true})
	e.p.SpeakerChanged(owner)
	time.Sleep(100 * time.Millisecond)
	e.owner(v1addr, other)
	// A failure on the new owner too: the VIP cannot go back to a node that
	// failed within the backoff, so nobody announces it for now.
	e.sp.set(other, speakers.State{Connected: true, Healthy: true, Reported: true, Failed: map[string]string{v1addr.String(): "no such interface"}})
	e.p.SpeakerChanged(other)
	e.owner(v1addr, "")
}
