package loadbalancer

import (
	"context"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/record"

	"github.com/ironlb/ironlb/ipam"
)

func TestServiceOf(t *testing.T) {
	svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", UID: "uid-1"}}
	b, _, _, _ := informedBalancer(t, svc)
	for _, tc := range []struct {
		name string
		ref  ipam.OwnerRef
		want bool
	}{
		{name: "the Service", ref: ipam.OwnerRef{Owner: "uid-1", Name: "web/front"}, want: true},
		{name: "a Service recreated under its name", ref: ipam.OwnerRef{Owner: "uid-0", Name: "web/front"}},
		{name: "a deleted Service", ref: ipam.OwnerRef{Owner: "uid-2", Name: "web/gone"}},
		{name: "a Node's reservation", ref: ipam.OwnerRef{Owner: nodeOwner("node-a"), Name: "Node node-a"}},
		{name: "a Cluster API claim", ref: ipam.OwnerRef{Owner: "ipaddressclaim/web/front", Name: "IPAddressClaim web/front"}},
		{name: "a claim named like the Service", ref: ipam.OwnerRef{Owner: "ipaddressclaim/web/front", Name: "web/front"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := b.serviceOf(tc.ref)
			if ok != tc.want {
				t.Fatalf("serviceOf(%+v) found a Service: %v, want %v", tc.ref, ok, tc.want)
			}
			if ok && got.UID != svc.UID {
				t.Errorf("serviceOf(%+v) = %s, want %s", tc.ref, got.UID, svc.UID)
			}
		})
	}
}

// informedBalancer returns a Balancer (not running) whose informers hold
// objs and have synced, with its allocator, pools and recorder.
func informedBalancer(t *testing.T, objs ...runtime.Object) (*Balancer, *ipam.Allocator, *fakePools, *record.FakeRecorder) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	factory := informers.NewSharedInformerFactory(fake.NewClientset(objs...), 0)
	alloc, pools, rec := ipam.New(), &fakePools{}, record.NewFakeRecorder(10)
	b := New(alloc, pools, rec)
	b.SetInformers(factory)
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	return b, alloc, pools, rec
}
