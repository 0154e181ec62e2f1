package planner

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
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
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"

	"github.com/google/go-cmp/cmp"
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
	anns     map[string]map[string]*speakerv1.Announcement // node → address → last announcement
	resent   map[string]map[string]int                     // node → address → Resend calls
	onChange []func(string)
}

func newFakeSpeakers() *fakeSpeakers {
	return &fakeSpeakers{addrs: map[string]netip.Addr{}, states: map[string]speakers.State{}, assigned: map[string]map[string]bool{},
		anns: map[string]map[string]*speakerv1.Announcement{}, resent: map[string]map[string]int{}}
}

func up() speakers.State {
	now := time.Now()
	return speakers.State{Connected: true, Healthy: true, Reported: true, Since: now, LastReport: now,
		Capabilities: []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing}}
}

func lost() speakers.State {
	return speakers.State{Reported: true, Since: time.Now(), Problem: "stream broke"}
}

func (f *fakeSpeakers) SetNode(node string, addr netip.Addr) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.addrs[node] = addr
	if _, ok := f.states[node]; !ok {
		f.states[node] = up()
	}
}
func (f *fakeSpeakers) RemoveNode(node string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.addrs, node)
	delete(f.assigned, node)
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
func (f *fakeSpeakers) View(node string) (speakers.State, bool) { return f.State(node) }

func (f *fakeSpeakers) State(node string) (speakers.State, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.addrs[node]; !ok {
		return speakers.State{}, false
	}
	st := f.states[node]
	if st.Connected {
		st.LastReport = time.Now() // a connected fake speaker answers every heartbeat
	}
	return st, true
}
func (f *fakeSpeakers) Assign(node string, a *speakerv1.Announcement) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.assigned[node] == nil {
		f.assigned[node] = map[string]bool{}
	}
	f.assigned[node][a.GetAddress()] = true
	if f.anns[node] == nil {
		f.anns[node] = map[string]*speakerv1.Announcement{}
	}
	f.anns[node][a.GetAddress()] = a
}

// announcement returns what node was last told about addr.
func (f *fakeSpeakers) announcement(node, addr string) *speakerv1.Announcement {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.anns[node][addr]
}
func (f *fakeSpeakers) Unassign(node, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.assigned[node], addr)
}
func (f *fakeSpeakers) Resend(node, addr string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.resent[node] == nil {
		f.resent[node] = map[string]int{}
	}
	f.resent[node][addr]++
}

// resends returns how often node was sent its announcement of addr again.
func (f *fakeSpeakers) resends(node, addr string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.resent[node][addr]
}
func (f *fakeSpeakers) SetReady() {}
func (f *fakeSpeakers) OnChange(fn func(string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onChange = append(f.onChange, fn)
}
func (f *fakeSpeakers) LossLimit() time.Duration { return time.Second }
func (f *fakeSpeakers) Heartbeat() time.Duration { return 200 * time.Millisecond }

// set changes a node's speaker state and tells the planner.
func (f *fakeSpeakers) set(node string, st speakers.State) {
	f.mu.Lock()
	f.states[node] = st
	fns := slices.Clone(f.onChange)
	f.mu.Unlock()
	for _, fn := range fns {
		fn(node)
	}
}

// told returns, per node, the addresses it was told to announce.
func (f *fakeSpeakers) told() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string][]string{}
	for n, m := range f.assigned {
		for a, ok := range m {
			if ok {
				out[n] = append(out[n], a)
			}
		}
		slices.Sort(out[n])
	}
	return out
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

// fakePools holds layer-2 settings per pool; deleting one tells the
// planner as the IPPool controller does.
type fakePools struct {
	mu       sync.Mutex
	l2       map[string]ippool.Layer2
	bgp      map[string]ippool.BGP
	onChange []func(string)
}

func newFakePools(l2 map[string]ippool.Layer2) *fakePools {
	if l2 == nil {
		l2 = map[string]ippool.Layer2{"lan": ippool.AnyNode}
	}
	return &fakePools{l2: l2}
}

func (p *fakePools) Layer2(pool string) (ippool.Layer2, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	l, ok := p.l2[pool]
	return l, ok
}
func (p *fakePools) BGP(pool string) (ippool.BGP, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	b, ok := p.bgp[pool]
	return b, ok
}
func (p *fakePools) OnChange(fn func(string)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.onChange = append(p.onChange, fn)
}
func (p *fakePools) remove(pool string) {
	p.mu.Lock()
	delete(p.l2, pool)
	fns := slices.Clone(p.onChange)
	p.mu.Unlock()
	for _, fn := range fns {
		fn(pool)
	}
}

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
	mu       sync.Mutex
	handed   map[string]bool // kind/name@mark handed to the planner
	seq      int
	t        *testing.T
	ctx      context.Context
	cs       *fake.Clientset
	alloc    *ipam.Allocator
	pools    *fakePools
	sp       *fakeSpeakers
	p        *Planner
	recorder *record.FakeRecorder
	opts     envOptions
	stop     func() // stops the planner and waits for it
}

type envOptions struct {
	record    bool // write the Announced condition
	peers     Peers
	pools     *fakePools
	settle    time.Duration
	rebalance time.Duration // LocalRebalanceDelay (default: an hour)
	services  []*v1.Service // exist before the planner starts
	before    func(*plannerEnv)
}

func newPlannerEnv(t *testing.T, o envOptions, nodes ...*v1.Node) *plannerEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cs := fake.NewClientset()
	for _, n := range nodes {
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
	if o.pools == nil {
		o.pools = newFakePools(nil)
	}
	if o.settle == 0 {
		o.settle = time.Hour // tests that need the window to end set it
	}
	e := &plannerEnv{t: t, ctx: ctx, cs: cs, alloc: alloc, pools: o.pools, sp: newFakeSpeakers(), recorder: record.NewFakeRecorder(10000), handed: map[string]bool{}}
	for _, svc := range o.services {
		e.createService(svc)
	}
	if o.before != nil {
		o.before(e)
	}
	if o.rebalance == 0 {
		o.rebalance = time.Hour // tests that need it to end set it
	}
	e.opts = o
	e.start()
	return e
}

// start starts a planner on the env's API objects and allocations and
// waits until it is idle.
func (e *plannerEnv) start() {
	o := e.opts
	opts := Options{Grace: time.Millisecond, SettleWindow: o.settle, LocalRebalanceDelay: o.rebalance, Recorder: e.recorder, Peers: o.peers}
	if o.record {
		opts.Client = e.cs
	}
	e.p = New(e.alloc, e.pools, e.sp, opts)
	e.p.hooks = &hooks{delivered: e.record}
	factory := informers.NewSharedInformerFactory(e.cs, 0)
	e.p.SetInformers(factory)
	ctx, cancel := context.WithCancel(e.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		e.p.Run(ctx)
	}()
	e.stop = func() {
		cancel()
		<-done
	}
	e.idle()
}

// restart stops the planner and starts another on the same API objects
// and allocations, with speakers that announce nothing yet: what a new
// leader does. between runs while no planner runs.
func (e *plannerEnv) restart(between func()) {
	e.t.Helper()
	e.stop()
	if between != nil {
		between()
	}
	e.sp = newFakeSpeakers()
	e.start()
}

func lbService(name string, local bool) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", UID: types.UID("uid-" + name)},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	if local {
		svc.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}
	return svc
}

// createService creates a Service and its allocation, as EnsureLoadBalancer
// does, and returns its VIP.
func (e *plannerEnv) createService(svc *v1.Service) netip.Addr {
	e.t.Helper()
	al, err := e.alloc.Ensure(ipam.Request{Owner: string(svc.UID), Name: svc.Namespace + "/" + svc.Name, Families: []ipam.Family{ipam.IPv4}})
	if err != nil {
		e.t.Fatal(err)
	}
	m := e.mark(svc)
	if _, err := e.cs.CoreV1().Services(svc.Namespace).Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.seen("*v1.Service", svc.Name, m)
	return al.Addresses[0]
}

// markKey is an annotation tests set on every object they write: the fake
// clientset keeps no resource versions, so it tells which version of an
// object the informers handed the planner.
const markKey = "planner.test/mark"

// mark sets a new mark on obj and returns it.
func (e *plannerEnv) mark(obj metav1.Object) string {
	e.mu.Lock()
	e.seq++
	m := fmt.Sprint(e.seq)
	e.mu.Unlock()
	a := obj.GetAnnotations()
	if a == nil {
		a = map[string]string{}
	}
	a[markKey] = m
	obj.SetAnnotations(a)
	return m
}

// seen waits until the planner's informers handed it the object with mark
// m, so that idle then means the planner handled the change.
func (e *plannerEnv) seen(kind, name, m string) {
	e.t.Helper()
	if e.p == nil {
		return // the planner lists everything when it starts
	}
	deadline := time.Now().Add(10 * time.Second)
	for !e.deliveredObj(kind, name, m) {
		if time.Now().After(deadline) {
			e.t.Fatalf("the planner was not handed %s %s with mark %q", kind, name, m)
		}
		time.Sleep(time.Millisecond)
	}
}

// record notes what the informers handed the planner.
func (e *plannerEnv) record(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	o, ok := obj.(metav1.Object)
	if !ok {
		return
	}
	kind := fmt.Sprintf("%T", obj)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.handed[kind+"/"+o.GetName()+"@"+o.GetAnnotations()[markKey]] = true
}

func (e *plannerEnv) deliveredObj(kind, name, rv string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.handed[kind+"/"+name+"@"+rv]
}

func (e *plannerEnv) service(name string, local bool) netip.Addr {
	e.t.Helper()
	vip := e.createService(lbService(name, local))
	e.idle()
	return vip
}

// idle waits until the planner has nothing to do. Changes made through
// the clientset are waited for with seen first: the informers deliver them
// asynchronously.
func (e *plannerEnv) idle() {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	if err := e.p.WaitIdle(ctx); err != nil {
		e.t.Fatalf("planner not idle after 10s")
	}
	e.checkFullPass()
}

// checkFullPass checks that a pass over every VIP, now, changes no VIP's
// announcers or advertisers nor what the speakers were told: the passes
// for one node's change (marks.go) left nothing undone.
func (e *plannerEnv) checkFullPass() {
	e.t.Helper()
	before, told, settled := e.p.plans(), e.sp.told(), e.p.settleState()
	e.p.planAll()
	if e.p.settleState() != settled {
		return // the settle window ended meanwhile: the pass had its own work
	}
	if diff := cmp.Diff(before, e.p.plans()); diff != "" {
		e.t.Errorf("a full pass changed the plan the passes before left (-before +after):\n%s", diff)
	}
	if diff := cmp.Diff(told, e.sp.told()); diff != "" {
		e.t.Errorf("a full pass changed what the speakers were told (-before +after):\n%s", diff)
	}
}

func (p *Planner) settleState() settle {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.settle
}

// plans returns each VIP's announcers and advertisers.
func (p *Planner) plans() map[netip.Addr][2][]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := map[netip.Addr][2][]string{}
	for a, v := range p.vips {
		out[a] = [2][]string{slices.Clone(v.announcers), slices.Clone(v.advertisers)}
	}
	return out
}

// owner checks, once the planner is idle, that exactly one node is told to
// announce vip and it is one of want ("" for none), and returns it.
func (e *plannerEnv) owner(vip netip.Addr, want ...string) string {
	e.t.Helper()
	e.idle()
	return e.eventually(vip, want...)
}

// eventually waits until exactly one node is told to announce vip and it
// is one of want ("" for none), and returns it. Changes the test made are
// already waited for (seen, idle); the planner's own follow-ups (such as
// writing its record) may still run.
func (e *plannerEnv) eventually(vip netip.Addr, want ...string) string {
	e.t.Helper()
	var got, planned []string
	deadline := time.Now().Add(5 * time.Second)
	for {
		got = e.sp.holders(vip.String())
		planned = e.p.Announcers(vip)
		if len(want) == 1 && want[0] == "" {
			if len(got) == 0 && len(planned) == 0 {
				return ""
			}
		} else if len(got) == 1 && slices.Equal(got, planned) && slices.Contains(want, got[0]) {
			return got[0]
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if len(want) == 1 && want[0] == "" {
		e.t.Fatalf("VIP %s held by %v (planned %v), want no announcer", vip, got, planned)
	}
	e.t.Fatalf("VIP %s held by %v (planned %v), want one of %v", vip, got, planned, want)
	return ""
}

func (e *plannerEnv) updateNode(name string, mutate func(*v1.Node)) {
	e.t.Helper()
	n, err := e.cs.CoreV1().Nodes().Get(e.ctx, name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	mutate(n)
	m := e.mark(n)
	if _, err := e.cs.CoreV1().Nodes().Update(e.ctx, n, metav1.UpdateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.seen("*v1.Node", name, m)
}

// applySlice creates or updates an EndpointSlice and waits until the
// planner's informer has it.
func (e *plannerEnv) applySlice(slice *discoveryv1.EndpointSlice) {
	e.t.Helper()
	cl := e.cs.DiscoveryV1().EndpointSlices(slice.Namespace)
	m := e.mark(slice)
	_, err := cl.Update(e.ctx, slice, metav1.UpdateOptions{})
	if err != nil {
		_, err = cl.Create(e.ctx, slice, metav1.CreateOptions{})
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.seen("*v1.EndpointSlice", slice.Name, m)
}

// events returns the Events recorded so far.
func (e *plannerEnv) events() []string {
	var out []string
	for {
		select {
		case ev := <-e.recorder.Events:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func nodes(n int) []*v1.Node {
	var out []*v1.Node
	for i := range n {
		out = append(out, testNode(fmt.Sprintf("node-%c", 'a'+i), nil, true))
	}
	return out
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

// spread creates n Services and returns their VIPs with their announcers.
func (e *plannerEnv) spread(n int) map[netip.Addr]string {
	e.t.Helper()
	out := map[netip.Addr]string{}
	for i := range n {
		e.createService(lbService(fmt.Sprintf("svc-%02d", i), false))
	}
	e.idle()
	for i := range n {
		al, _ := e.alloc.Lookup(fmt.Sprintf("uid-svc-%02d", i))
		out[al.Addresses[0]] = e.owner(al.Addresses[0], "node-a", "node-b", "node-c", "node-d")
	}
	return out
}

func (e *plannerEnv) checkOwners(want map[netip.Addr]string) {
	e.t.Helper()
	e.idle()
	moved := 0
	for vip, node := range want {
		if got := e.sp.holders(vip.String()); !slices.Equal(got, []string{node}) {
			moved++
			e.t.Errorf("VIP %s on %v, want it still on %s", vip, got, node)
		}
	}
	if moved > 0 {
		e.t.Fatalf("%d of %d VIPs moved", moved, len(want))
	}
}

// TestMassReconnectKeepsVIPs: every speaker drops at once (the CCM's
// network blipped), then they come back one by one in any order. Without
// the settle window the first one back took every VIP; now every VIP stays
// on its announcer.
func TestMassReconnectKeepsVIPs(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprintf("order %d", seed), func(t *testing.T) {
			e := newPlannerEnv(t, envOptions{}, nodes(3)...)
			owners := e.spread(30)
			if counts := countNodes(owners); len(counts) < 3 {
				t.Fatalf("VIPs not spread: %v", counts)
			}
			for _, n := range []string{"node-a", "node-b", "node-c"} {
				e.sp.set(n, lost())
			}
			e.checkOwners(owners)
			order := []string{"node-a", "node-b", "node-c"}
			rand.New(rand.NewPCG(seed, seed)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, n := range order {
				e.sp.set(n, up())
				e.checkOwners(owners)
			}
			if got := strings.Join(e.events(), "\n"); strings.Contains(got, "VIPMoved") {
				t.Errorf("a VIP moved:\n%s", got)
			}
		})
	}
}

// TestMassLossSettles: three of four speakers are lost within one
// heartbeat window. Two come back within the settle window and keep their
// VIPs; the VIPs of the one that stays away move when the window ends, and
// spread over the live nodes.
func TestMassLossSettles(t *testing.T) {
	const settle = 300 * time.Millisecond
	e := newPlannerEnv(t, envOptions{settle: settle}, nodes(4)...)
	owners := e.spread(40)
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		e.sp.set(n, lost())
	}
	e.checkOwners(owners)
	if !e.p.settle.active {
		t.Fatal("the planner is not settling after losing 3 of 4 speakers at once")
	}
	e.sp.set("node-b", up())
	e.sp.set("node-a", up())
	e.checkOwners(owners)
	// The signal: the settle window ends and the planner re-plans.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.idle()
		e.p.mu.Lock()
		active := e.p.settle.active
		e.p.mu.Unlock()
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still settling 10s after the window should have ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.idle()
	movedTo := map[string]int{}
	for vip, was := range owners {
		got := e.sp.holders(vip.String())
		switch {
		case was == "node-c" && len(got) == 1 && got[0] != "node-c":
			movedTo[got[0]]++
		case was == "node-c":
			t.Errorf("VIP %s of the lost node-c is on %v", vip, got)
		case !slices.Equal(got, []string{was}):
			t.Errorf("VIP %s moved from %s to %v, though %s came back in time", vip, was, got, was)
		}
	}
	if len(movedTo) < 2 {
		t.Errorf("node-c's VIPs went to %v; want them spread over the live nodes", movedTo)
	}
	t.Logf("node-c's %d VIPs moved to %v", countNodes(owners)["node-c"], movedTo)
}

// TestSingleLossMovesAtOnce: one speaker lost while the others answer is a
// node problem: no settle window, its VIPs move at once.
func TestSingleLossMovesAtOnce(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(3)...)
	owners := e.spread(12)
	e.sp.set("node-b", lost())
	e.idle()
	if e.p.settle.active {
		t.Fatal("settling after a single loss")
	}
	for vip, was := range owners {
		got := e.sp.holders(vip.String())
		if was == "node-b" && (len(got) != 1 || got[0] == "node-b") {
			t.Errorf("VIP %s still on %v after node-b's speaker was lost", vip, got)
		}
		if was != "node-b" && !slices.Equal(got, []string{was}) {
			t.Errorf("VIP %s moved from %s to %v", vip, was, got)
		}
	}
}

// TestLostSpeakerKeepsVIPWhenNowhereElse: with no other node eligible, a
// VIP stays with its unreachable speaker (which keeps announcing) instead
// of losing its announcer, so that it is still there when the speaker
// returns.
func TestLostSpeakerKeepsVIPWhenNowhereElse(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(1)...)
	vip := e.service("solo", false)
	e.owner(vip, "node-a")
	e.sp.set("node-a", lost())
	e.owner(vip, "node-a")
	e.sp.set("node-a", up())
	e.owner(vip, "node-a")
	// A speaker that shut down withdrew its VIPs: nothing is kept there.
	stopped := lost()
	stopped.Stopped = true
	e.sp.set("node-a", stopped)
	e.owner(vip, "")
}

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

func countNodes(owners map[netip.Addr]string) map[string]int {
	out := map[string]int{}
	for _, n := range owners {
		out[n]++
	}
	return out
}

// TestRecordsAnnouncers: the Announced condition on a Service's status says
// where each VIP is, follows moves, and goes away with the VIPs.
func TestRecordsAnnouncers(t *testing.T) {
	e := newPlannerEnv(t, envOptions{record: true}, nodes(2)...)
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b")
	condition := func() *metav1.Condition {
		t.Helper()
		e.idle()
		svc, err := e.cs.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range svc.Status.Conditions {
			if c.Type == ConditionAnnounced {
				return &c
			}
		}
		return nil
	}
	if c := condition(); c == nil || c.Status != metav1.ConditionTrue || c.Message != vip.String()+"="+first {
		t.Fatalf("Announced = %+v, want True with %s=%s", c, vip, first)
	}
	e.sp.set(first, lost())
	second := e.owner(vip, others(first)...)
	if c := condition(); c == nil || c.Message != vip.String()+"="+second {
		t.Fatalf("Announced after the move = %+v, want %s=%s", c, vip, second)
	}
	e.sp.set(second, lost())
	e.owner(vip, second) // kept: nowhere else to go
	e.updateNode(second, func(n *v1.Node) { n.Status.Conditions[0].Status = v1.ConditionFalse })
	e.owner(vip, "")
	if c := condition(); c == nil || c.Status != metav1.ConditionFalse || c.Reason != ReasonNoAnnouncer || c.Message != vip.String()+"=-" {
		t.Fatalf("Announced without a node = %+v, want False/NoAnnouncingNode with %s=-", c, vip)
	}
	e.alloc.Release("uid-web")
	svc, _ := e.cs.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
	svc.Spec.Type = v1.ServiceTypeClusterIP
	m := e.mark(svc)
	if _, err := e.cs.CoreV1().Services("default").Update(e.ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.seen("*v1.Service", "web", m)
	if c := condition(); c != nil {
		t.Fatalf("Announced = %+v on a Service without VIPs, want none", c)
	}
}

// TestRecordsTheSharingKey: an address shared under a key is recorded with
// it, which a restarted CCM uses to keep it with that key's sharers.
func TestRecordsTheSharingKey(t *testing.T) {
	e := newPlannerEnv(t, envOptions{record: true}, nodes(2)...)
	var vip netip.Addr
	for i, name := range []string{"dns-tcp", "dns-udp"} {
		svc := lbService(name, false)
		al, err := e.alloc.Ensure(ipam.Request{Owner: string(svc.UID), Name: "default/" + name, Families: []ipam.Family{ipam.IPv4},
			Sharing: ipam.Sharing{Key: "dns", TrafficPolicy: "Cluster", Ports: []ipam.Port{{Protocol: []string{"TCP", "UDP"}[i], Port: 53}}}})
		if err != nil {
			t.Fatal(err)
		}
		vip = al.Addresses[0]
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: vip.String()}}
		m := e.mark(svc)
		if _, err := e.cs.CoreV1().Services("default").Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.seen("*v1.Service", name, m)
	}
	owner := e.owner(vip, "node-a", "node-b")
	err := pollFor(5*time.Second, func() error {
		for _, name := range []string{"dns-tcp", "dns-udp"} {
			svc, err := e.cs.CoreV1().Services("default").Get(e.ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got, want := Records(svc)[vip], (Record{Node: owner, SharedAs: "dns"}); got != want {
				return fmt.Errorf("%s records %+v, want %+v", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func pollFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}
