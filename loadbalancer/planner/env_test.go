package planner

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
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/google/go-cmp/cmp"
	"github.com/ironlb/ironlb/ipam"
)

// testNode returns a Node with an InternalIP of its own, Ready or not.
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

// plannerEnv runs a Planner on a fake clientset, the real allocator, fake
// pools and fake speakers (fakes_test.go), and waits for what it does: a
// change made through the clientset is waited for with seen (the delivered
// hook, hooks.go), then idle.
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
