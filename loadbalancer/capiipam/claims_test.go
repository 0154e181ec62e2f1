package capiipam_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/capiipam"
)

var clusters = schema.GroupVersionResource{Group: "cluster.x-k8s.io", Version: "v1beta2", Resource: "clusters"}

// TestClaims runs the claim controller with the Balancer over a real API
// server that has Cluster API's CRDs, as the CCM's ServiceAccount: the
// subtests share the server and run in order (restart last).
func TestClaims(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	e := newEnv(t, ctx)
	s := e.start(t, ctx)
	for _, ns := range []string{"machines-a", "shared", "tenant-a", "paused"} {
		e.namespace(t, ctx, ns, nil)
	}
	e.namespace(t, ctx, "tenant-b", map[string]string{"team": "b"})
	e.pool(t, ctx, "machines", &v1alpha1.ClusterAPI{Prefix: 24, Gateway: "192.0.2.10"}, nil, "192.0.2.10-192.0.2.20")

	t.Run("answered", func(t *testing.T) {
		claim := e.claim(t, ctx, "machines-a", "m1", "machines", func(c *ipamv1.IPAddressClaim) {
			c.Labels = map[string]string{capiipam.ClusterNameLabel: ""}
			c.Spec.ClusterName = ""
		})
		e.waitReason(t, ctx, "machines-a", "m1", capiipam.ReasonReady)
		got, err := e.getAddress(ctx, "machines-a", "m1")
		if err != nil {
			t.Fatal(err)
		}
		pool, err := e.admin.Resource(v1alpha1.IPPoolResource).Get(ctx, "machines", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The gateway (.10) is never handed out.
		want := ipamv1.IPAddress{
			ObjectMeta: metav1.ObjectMeta{
				Name: "m1", Namespace: "machines-a", Finalizers: []string{capiipam.ProtectAddressFinalizer},
				Labels: map[string]string{capiipam.ClusterNameLabel: ""},
				OwnerReferences: []metav1.OwnerReference{
					{APIVersion: "ipam.cluster.x-k8s.io/v1beta2", Kind: "IPAddressClaim", Name: "m1", UID: claim.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)},
					{APIVersion: "ironlb.dev/v1alpha1", Kind: "IPPool", Name: "machines", UID: pool.GetUID(), Controller: ptr.To(false), BlockOwnerDeletion: ptr.To(true)},
				},
			},
			Spec: ipamv1.IPAddressSpec{
				ClaimRef: ipamv1.IPAddressClaimReference{Name: "m1"},
				PoolRef:  ipamv1.IPPoolReference{APIGroup: "ironlb.dev", Kind: "IPPool", Name: "machines"},
				Address:  "192.0.2.11", Prefix: ptr.To[int32](24), Gateway: "192.0.2.10",
			},
		}
		got.TypeMeta = metav1.TypeMeta{}
		got.UID, got.ResourceVersion, got.CreationTimestamp, got.ManagedFields, got.Generation = "", "", metav1.Time{}, nil, 0
		if diff := cmp.Diff(want, *got); diff != "" {
			t.Errorf("IPAddress (-want +got):\n%s", diff)
		}
		c, err := e.getClaim(ctx, "machines-a", "m1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff([]string{capiipam.ReleaseAddressFinalizer}, c.Finalizers); diff != "" {
			t.Errorf("claim finalizers (-want +got):\n%s", diff)
		}
		if c.Status.AddressRef.Name != "m1" {
			t.Errorf("status.addressRef = %+v, want m1", c.Status.AddressRef)
		}
	})

	t.Run("service and claim never share", func(t *testing.T) {
		e.pool(t, ctx, "single", &v1alpha1.ClusterAPI{Prefix: 24}, nil, "198.51.100.5/32")
		// A Service first: the claim is refused.
		svc, err := e.service(t, ctx, s, "shared", "s1", "single")
		if err != nil || svc.Status.LoadBalancer.Ingress[0].IP != "198.51.100.5" {
			t.Fatalf("Service s1: %v %+v", err, svc.Status.LoadBalancer)
		}
		e.claim(t, ctx, "shared", "c1", "single", nil)
		cond := e.waitReason(t, ctx, "shared", "c1", capiipam.ReasonPoolExhausted)
		if cond.Status != metav1.ConditionFalse {
			t.Errorf("Ready = %+v, want False", cond)
		}
		eventually(t, ctx, "a PoolExhausted Event", func() (bool, error) { return s.events.has("shared/c1 Warning PoolExhausted"), nil })
		if _, err := e.getAddress(ctx, "shared", "c1"); !apierrors.IsNotFound(err) {
			t.Errorf("IPAddress of a refused claim: %v, want NotFound", err)
		}
		// The Service goes: the claim gets the address; a new Service not.
		if err := s.bal.EnsureLoadBalancerDeleted(ctx, "kubernetes", svc); err != nil {
			t.Fatal(err)
		}
		if err := e.cp.Client.CoreV1().Services("shared").Delete(ctx, "s1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitReason(t, ctx, "shared", "c1", capiipam.ReasonReady)
		if a, err := e.getAddress(ctx, "shared", "c1"); err != nil || a.Spec.Address != "198.51.100.5" {
			t.Fatalf("IPAddress c1: %v %+v", err, a)
		}
		if _, err := e.service(t, ctx, s, "shared", "s2", "single"); err == nil {
			t.Fatal("Service s2 got the address claim c1 holds")
		}
		// The claim goes: its IPAddress first, then the address is free.
		if err := e.admin.Resource(capiipam.ClaimResource).Namespace("shared").Delete(ctx, "c1", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, ctx, "claim c1 and its IPAddress gone", func() (bool, error) {
			_, errC := e.getClaim(ctx, "shared", "c1")
			_, errA := e.getAddress(ctx, "shared", "c1")
			return apierrors.IsNotFound(errC) && apierrors.IsNotFound(errA), nil
		})
		svc, err = e.service(t, ctx, s, "shared", "s3", "single")
		if err != nil || svc.Status.LoadBalancer.Ingress[0].IP != "198.51.100.5" {
			t.Fatalf("Service s3 after the claim's deletion: %v %+v", err, svc.Status.LoadBalancer)
		}
	})

	t.Run("refusals fixed by editing pools", func(t *testing.T) {
		e.claim(t, ctx, "tenant-b", "r1", "later", nil)
		e.waitReason(t, ctx, "tenant-b", "r1", capiipam.ReasonPoolNotFound)
		e.pool(t, ctx, "later", &v1alpha1.ClusterAPI{Prefix: 29}, nil, "203.0.113.0/29")
		e.waitReason(t, ctx, "tenant-b", "r1", capiipam.ReasonReady)

		e.pool(t, ctx, "optout", nil, nil, "203.0.113.16/29")
		e.claim(t, ctx, "tenant-b", "r2", "optout", nil)
		e.waitReason(t, ctx, "tenant-b", "r2", capiipam.ReasonPoolNotEnabled)
		eventually(t, ctx, "a PoolNotEnabled Event", func() (bool, error) { return s.events.has("tenant-b/r2 Warning PoolNotEnabled"), nil })
		e.editPool(t, ctx, "optout", func(p *v1alpha1.IPPoolSpec) { p.ClusterAPI = &v1alpha1.ClusterAPI{Prefix: 29} })
		e.waitReason(t, ctx, "tenant-b", "r2", capiipam.ReasonReady)

		e.pool(t, ctx, "tenant-a-only", &v1alpha1.ClusterAPI{Prefix: 29},
			&v1alpha1.ServiceAllocation{Namespaces: []v1alpha1.NamespaceName{"tenant-a"}}, "203.0.113.32/29")
		e.claim(t, ctx, "tenant-b", "r3", "tenant-a-only", nil)
		e.waitReason(t, ctx, "tenant-b", "r3", capiipam.ReasonNamespaceNotAllowed)
		if _, err := e.getAddress(ctx, "tenant-b", "r3"); !apierrors.IsNotFound(err) {
			t.Errorf("IPAddress of a refused claim: %v, want NotFound", err)
		}
		e.editPool(t, ctx, "tenant-a-only", func(p *v1alpha1.IPPoolSpec) {
			p.ServiceAllocation.Namespaces = append(p.ServiceAllocation.Namespaces, "tenant-b")
		})
		e.waitReason(t, ctx, "tenant-b", "r3", capiipam.ReasonReady)
	})

	t.Run("pause", func(t *testing.T) {
		e.claim(t, ctx, "paused", "p1", "machines", func(c *ipamv1.IPAddressClaim) {
			c.Annotations = map[string]string{capiipam.PausedAnnotation: ""}
		})
		eventually(t, ctx, "a Paused Event", func() (bool, error) { return s.events.has("paused/p1 Normal Paused"), nil })
		if c, err := e.getClaim(ctx, "paused", "p1"); err != nil || len(c.Finalizers) > 0 || len(c.Status.Conditions) > 0 {
			t.Errorf("paused claim was touched: %v %+v", err, c)
		}
		patch := []byte(`{"metadata":{"annotations":{"cluster.x-k8s.io/paused":null}}}`)
		if _, err := e.admin.Resource(capiipam.ClaimResource).Namespace("paused").Patch(ctx, "p1", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitReason(t, ctx, "paused", "p1", capiipam.ReasonReady)

		cluster := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
			"metadata": map[string]any{"name": "c", "namespace": "paused"},
			"spec":     map[string]any{"paused": true},
		}}
		if _, err := e.admin.Resource(clusters).Namespace("paused").Create(ctx, cluster, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		e.claim(t, ctx, "paused", "p2", "machines", func(c *ipamv1.IPAddressClaim) { c.Spec.ClusterName = "c" })
		eventually(t, ctx, "a Paused Event for Cluster c", func() (bool, error) {
			return s.events.has("paused/p2 Normal Paused IronLB leaves this claim alone: its Cluster c is paused"), nil
		})
		if _, err := e.getAddress(ctx, "paused", "p2"); !apierrors.IsNotFound(err) {
			t.Errorf("IPAddress of a paused claim: %v, want NotFound", err)
		}
		patch = []byte(`{"spec":{"paused":false}}`)
		if _, err := e.admin.Resource(clusters).Namespace("paused").Patch(ctx, "c", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitReason(t, ctx, "paused", "p2", capiipam.ReasonReady)

		e.claim(t, ctx, "paused", "p3", "machines", func(c *ipamv1.IPAddressClaim) { c.Spec.ClusterName = "ghost" })
		eventually(t, ctx, "a Paused Event for a missing Cluster", func() (bool, error) {
			return s.events.has("paused/p3 Normal Paused IronLB leaves this claim alone: its Cluster ghost is not found"), nil
		})
	})

	t.Run("restart", func(t *testing.T) {
		s.cancel()
		// Every IPAddress IronLB made, and a conflict written while no CCM
		// runs: a Service's status and an IPAddress name 192.0.2.20.
		list, err := e.admin.Resource(capiipam.AddressResource).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		held := map[string]string{} // address → "IPAddressClaim ns/name"
		for i := range list.Items {
			a, err := decode[ipamv1.IPAddress](&list.Items[i])
			if err != nil {
				t.Fatal(err)
			}
			held[a.Spec.Address] = "IPAddressClaim " + a.Namespace + "/" + a.Name
		}
		if len(held) != 6 {
			t.Fatalf("IPAddresses before the restart: %v, want 6", held)
		}
		svc, err := e.cp.Client.CoreV1().Services("shared").Create(ctx, &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "conflict", Annotations: map[string]string{"ironlb.dev/pool": "machines"}},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "192.0.2.20"}}
		if _, err := e.cp.Client.CoreV1().Services("shared").UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		claim := e.claim(t, ctx, "machines-a", "conflicted", "machines", nil)
		addr := &ipamv1.IPAddress{
			TypeMeta: metav1.TypeMeta{APIVersion: "ipam.cluster.x-k8s.io/v1beta2", Kind: "IPAddress"},
			ObjectMeta: metav1.ObjectMeta{Name: "conflicted", Namespace: "machines-a", OwnerReferences: []metav1.OwnerReference{
				{APIVersion: "ipam.cluster.x-k8s.io/v1beta2", Kind: "IPAddressClaim", Name: "conflicted", UID: claim.UID, Controller: ptr.To(true)}}},
			Spec: ipamv1.IPAddressSpec{ClaimRef: ipamv1.IPAddressClaimReference{Name: "conflicted"}, PoolRef: claim.Spec.PoolRef,
				Address: "192.0.2.20", Prefix: ptr.To[int32](24)},
		}
		if _, err := e.admin.Resource(capiipam.AddressResource).Namespace("machines-a").Create(ctx, toU(t, addr), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}

		s2 := e.start(t, ctx)
		// Restored before the Balancer answers anything.
		for a, owner := range held {
			h, ok := s2.alloc.Holder(netip.MustParseAddr(a))
			if !ok || !slices.Equal(h.Owners, []string{owner}) {
				t.Errorf("after the restart %s is held by %+v (%v), want %s", a, h.Owners, ok, owner)
			}
		}
		if h, _ := s2.alloc.Holder(netip.MustParseAddr("192.0.2.20")); !slices.Equal(h.Owners, []string{"shared/conflict"}) {
			t.Errorf("192.0.2.20 is held by %v, want the Service shared/conflict (Services restore first)", h.Owners)
		}
		e.waitReason(t, ctx, "machines-a", "conflicted", capiipam.ReasonAddressConflict)
		eventually(t, ctx, "an AddressConflict Event", func() (bool, error) {
			return s2.events.has("machines-a/conflicted Warning AddressConflict"), nil
		})
		if _, err := e.getAddress(ctx, "machines-a", "conflicted"); err != nil {
			t.Errorf("the losing IPAddress must stay: %v", err)
		}
		// A Service created after the restart gets none of the machines'.
		svc, err = e.service(t, ctx, s2, "shared", "after", "machines")
		if err != nil {
			t.Fatal(err)
		}
		ip := svc.Status.LoadBalancer.Ingress[0].IP
		if _, taken := held[ip]; taken || ip == "192.0.2.10" || ip == "192.0.2.20" {
			t.Errorf("Service after the restart got %s, held by %q (gateway .10, conflict .20)", ip, held[ip])
		}
	})
}
