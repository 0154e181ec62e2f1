package loadbalancer

import (
	"context"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
)

// fakePools stands in for the IPPool controller: the test sets pools in
// the allocator and announces the change.
type fakePools struct {
	mu    sync.Mutex
	fns   []func(string)
	names []string
}

func (f *fakePools) Touch(...string)                           {}
func (f *fakePools) HasSynced() bool                           { return true }
func (f *fakePools) SetNodeAddresses(map[netip.Addr]string)    {}
func (f *fakePools) SetControlPlaneVIPs(map[netip.Addr]string) {}
func (f *fakePools) OnChange(fn func(string)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fns = append(f.fns, fn)
}

func (f *fakePools) Pools() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.names
}

// set puts an IPPool into alloc and announces it, as the controller does.
func (f *fakePools) set(t *testing.T, alloc *ipam.Allocator, name string, spec v1alpha1.IPPoolSpec) {
	t.Helper()
	p, err := ippool.ToPool(&v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec})
	if err != nil {
		t.Fatal(err)
	}
	alloc.SetPool(p)
	f.mu.Lock()
	f.names = append(f.names, name)
	fns := f.fns
	f.mu.Unlock()
	for _, fn := range fns {
		fn(name)
	}
}

// waitEvent reads recorded Events until one starts with want.
func waitEvent(t *testing.T, rec *record.FakeRecorder, want string) {
	t.Helper()
	var seen []string
	timeout := time.After(10 * time.Second)
	for {
		select {
		case e := <-rec.Events:
			if strings.HasPrefix(e, want) {
				return
			}
			seen = append(seen, e)
		case <-timeout:
			t.Fatalf("no Event %q; saw %q", want, seen)
		}
	}
}

// TestBalancerNamespaceBoundary runs the Balancer on fake informers: a
// Service whose namespace is not in the cache gets no address from any
// pool while a pool that selects by namespace could serve it, and says
// why; once the namespace is known it gets its pool's address; a pool edit
// that stops allowing it keeps the address, with a Warning Event and the
// gauge, until the pool allows it again.
func TestBalancerNamespaceBoundary(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "web", UID: types.UID("uid-web")},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	client := fake.NewClientset(svc)
	factory := informers.NewSharedInformerFactory(client, 0)
	alloc, pools, rec := ipam.New(), &fakePools{}, record.NewFakeRecorder(100)
	b := New(alloc, pools, rec)
	b.SetInformers(factory)
	tenant := func(ns string) v1alpha1.IPPoolSpec {
		return v1alpha1.IPPoolSpec{
			Addresses:         []v1alpha1.AddressRange{"192.0.2.0/30"},
			Priority:          10,
			ServiceAllocation: &v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{v1alpha1.NamespaceName(ns)}},
		}
	}
	pools.set(t, alloc, "tenant", tenant("team-a"))
	pools.set(t, alloc, "open", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"198.51.100.0/30"}})
	factory.Start(ctx.Done())
	go func() { _ = b.Run(ctx) }()

	_, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if want := `pool "tenant" cannot tell whether it allows it: namespace unknown: the pool selects by namespace and namespace team-a cannot be looked up: namespace team-a is not in the CCM's cache (yet)`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("EnsureLoadBalancer with the namespace missing: error %v, want one containing %q", err, want)
	}
	if al, ok := alloc.Lookup(string(svc.UID)); ok {
		t.Fatalf("the Service got %v while its namespace was unknown", al.Addresses)
	}

	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{v1.LabelMetadataName: "team-a"}}}
	if _, err := client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ensure := func(want string) {
		t.Helper()
		var st *v1.LoadBalancerStatus
		deadline := time.Now().Add(10 * time.Second)
		for st, err = b.EnsureLoadBalancer(ctx, "", svc, nil); err != nil && time.Now().Before(deadline); st, err = b.EnsureLoadBalancer(ctx, "", svc, nil) {
			time.Sleep(20 * time.Millisecond) // the namespace informer catching up is the signal
		}
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{want}, ingressIPs(st)); diff != "" {
			t.Fatalf("EnsureLoadBalancer (-want +got):\n%s", diff)
		}
	}
	ensure("192.0.2.0")

	pools.set(t, alloc, "tenant", tenant("team-z"))
	waitEvent(t, rec, "Warning AddressNoLongerAllowed Keeping 192.0.2.0, but IPPool tenant no longer allows this Service: namespace team-a is not among spec.serviceAllocation.namespaces")
	if diff := cmp.Diff(map[string]int{"tenant": 1}, b.policy.outside()); diff != "" {
		t.Errorf("outside after the edit (-want +got):\n%s", diff)
	}
	ensure("192.0.2.0") // kept

	pools.set(t, alloc, "tenant", tenant("team-a"))
	waitEvent(t, rec, "Normal AddressAllowedAgain 192.0.2.0 is no longer outside the serviceAllocation of IPPool tenant")
	if diff := cmp.Diff(map[string]int{}, b.policy.outside()); diff != "" {
		t.Errorf("outside after the pool was restored (-want +got):\n%s", diff)
	}
}

func ingressIPs(st *v1.LoadBalancerStatus) []string {
	var out []string
	for _, ing := range st.Ingress {
		out = append(out, ing.IP)
	}
	return out
}
