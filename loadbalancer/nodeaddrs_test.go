package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
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
)

// TestNodeAddressesReservedBounded: a Node (its kubelet writes its status)
// that lists pool addresses as ExternalIPs and extra InternalIPs reserves
// none of them: they stay allocatable, and the Node gets a Warning Event
// naming them; its first InternalIP is still reserved.
func TestNodeAddressesReservedBounded(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
		{Type: v1.NodeInternalIP, Address: "192.0.2.2"},
		{Type: v1.NodeInternalIP, Address: "192.0.2.6"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.0"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.1"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.3"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.4"},
		{Type: v1.NodeExternalIP, Address: "192.0.2.5"},
		{Type: v1.NodeExternalIP, Address: "203.0.113.9"}, // in no pool
		{Type: v1.NodeHostName, Address: "node-a"},
	}}}
	var svcs []*v1.Service
	for i := range 7 {
		svcs = append(svcs, &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("s%d", i), UID: types.UID(fmt.Sprintf("uid-%d", i))},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
		})
	}
	client := fake.NewClientset(node, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	factory := informers.NewSharedInformerFactory(client, 0)
	alloc, pools, rec := ipam.New(), &fakePools{}, record.NewFakeRecorder(100)
	b := New(alloc, pools, rec)
	b.SetInformers(factory)
	pools.set(t, alloc, "lan", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"192.0.2.0/29"}})
	factory.Start(ctx.Done())
	go func() { _ = b.Run(ctx) }()

	var got []string
	for _, svc := range svcs {
		var st *v1.LoadBalancerStatus
		var err error
		deadline := time.Now().Add(10 * time.Second)
		for st, err = b.EnsureLoadBalancer(ctx, "", svc, nil); err != nil && time.Now().Before(deadline); st, err = b.EnsureLoadBalancer(ctx, "", svc, nil) {
			time.Sleep(20 * time.Millisecond) // waiting for Run's restore
		}
		if err != nil {
			t.Fatalf("%s: %v", svc.Name, err)
		}
		got = append(got, ingressIPs(st)...)
	}
	slices.Sort(got)
	if diff := cmp.Diff([]string{"192.0.2.0", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7"}, got); diff != "" {
		t.Errorf("addresses given out (-want +got): every one but the node's first InternalIP\n%s", diff)
	}
	if h, ok := alloc.Holder(mustAddr(t, "192.0.2.2")); !ok || !slices.Equal(h.Owners, []string{"Node node-a"}) {
		t.Errorf("192.0.2.2 held by %+v (%v), want Node node-a", h, ok)
	}
	waitEvent(t, rec, "Warning "+ReasonNodeAddressNotReserved+" This node's status lists InternalIP 192.0.2.6 (pool lan), ExternalIP 192.0.2.0 (pool lan), ExternalIP 192.0.2.1 (pool lan), ExternalIP 192.0.2.3 (pool lan), ExternalIP 192.0.2.4 (pool lan), and 1 more, inside IronLB's pools")
	for _, e := range drain(rec) {
		if strings.Contains(e, "203.0.113.9") {
			t.Errorf("Event names an address in no pool: %s", e)
		}
	}
}

func mustAddr(t *testing.T, s string) netip.Addr {
	t.Helper()
	a, err := netip.ParseAddr(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// drain returns the Events recorded and not read yet.
func drain(rec *record.FakeRecorder) []string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}
