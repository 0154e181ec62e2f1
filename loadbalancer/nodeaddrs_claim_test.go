package loadbalancer

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

// TestNodeAddressOfItsMachineClaim: in a cluster whose machines take their
// addresses from an IronLB pool through Cluster API, a Node's InternalIP
// is its machine's claim: that is no clash (no NodeAddressInUse Event),
// while the same address held by a Service is one.
func TestNodeAddressOfItsMachineClaim(t *testing.T) {
	for _, tc := range []struct {
		name, owner string
		wantEvent   bool
	}{
		{name: "a machine's claim", owner: "ipaddressclaim/machines/node-a"},
		{name: "a Service", owner: "uid-1", wantEvent: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			node := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}, Status: v1.NodeStatus{Addresses: []v1.NodeAddress{
				{Type: v1.NodeInternalIP, Address: "192.0.2.2"}}}}
			client := fake.NewClientset(node)
			factory := informers.NewSharedInformerFactory(client, 0)
			alloc, pools, rec := ipam.New(), &fakePools{}, record.NewFakeRecorder(100)
			b := New(alloc, pools, rec)
			b.SetInformers(factory)
			pools.set(t, alloc, "lan", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"192.0.2.0/29"}})
			addr := netip.MustParseAddr("192.0.2.2")
			if _, err := alloc.Ensure(ipam.Request{Owner: tc.owner, Name: "holder", Pool: "lan", Families: []ipam.Family{ipam.IPv4},
				Addresses: []netip.Addr{addr}, Subject: ipam.Subject{Namespace: "machines"}}); err != nil {
				t.Fatal(err)
			}
			factory.Start(ctx.Done())
			go func() { _ = b.Run(ctx) }()
			// Run reserves the Nodes' addresses before it is ready.
			if !cache.WaitForCacheSync(ctx.Done(), b.Ready) {
				t.Fatal("the Balancer never got ready")
			}
			got := false
			for _, e := range drain(rec) {
				if strings.Contains(e, ReasonNodeAddressInUse) {
					got = true
				}
			}
			if got != tc.wantEvent {
				t.Errorf("NodeAddressInUse Event: %v, want %v", got, tc.wantEvent)
			}
		})
	}
}
