package loadbalancer

import (
	"context"
	"fmt"
	"strings"
	"testing"

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

// TestBadAnnotationKeepsAddress: a Service whose annotation stops
// following its grammar is refused with the typed reason (the service
// controller makes it a Warning Event) and keeps the address it holds:
// no release, no new address. Fixed, it goes on as before.
func TestBadAnnotationKeepsAddress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ns := &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-b"}}
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-b", Name: "web", UID: types.UID("uid-web"),
			Annotations: map[string]string{AnnotationAllowShared: "web"}},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	client := fake.NewClientset(ns, svc)
	factory := informers.NewSharedInformerFactory(client, 0)
	alloc, pools, rec := ipam.New(), &fakePools{}, record.NewFakeRecorder(100)
	b := New(alloc, pools, rec)
	b.SetInformers(factory)
	pools.set(t, alloc, "open", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"192.0.2.0/29"}})
	factory.Start(ctx.Done())
	go func() { _ = b.Run(ctx) }()

	st, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr := ingressIPs(st)
	waitEvent(t, rec, "Normal IPAllocated Assigned "+addr[0])

	for _, tc := range []struct {
		name        string
		annotations map[string]string
		reason      RequestErrorReason
	}{
		{name: "sharing key forging a record entry", annotations: map[string]string{AnnotationAllowShared: fmt.Sprintf("x, %s=node-evil", addr[0])}, reason: ReasonInvalidSharingKey},
		{name: "MetalLB sharing key with an escape sequence", annotations: map[string]string{"metallb.io/allow-shared-ip": "\x1b[2J"}, reason: ReasonInvalidSharingKey},
		{name: "pool name", annotations: map[string]string{AnnotationAllowShared: "web", AnnotationPool: "open,other"}, reason: ReasonInvalidPoolName},
		{name: "addresses", annotations: map[string]string{AnnotationAllowShared: "web", AnnotationIPs: addr[0] + ";192.0.2.7"}, reason: ReasonInvalidAddresses},
		{name: "namespaces", annotations: map[string]string{AnnotationAllowShared: "web", AnnotationSharingCrossNamespace: "team a"}, reason: ReasonInvalidSharingNamespaces},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := svc.DeepCopy()
			bad.Annotations = tc.annotations
			_, err := b.EnsureLoadBalancer(ctx, "", bad, nil)
			if got := ReasonOf(err); got != tc.reason {
				t.Fatalf("EnsureLoadBalancer: reason %q (error %v), want %q", got, err, tc.reason)
			}
			if err != nil && strings.ContainsAny(err.Error(), "\x1b\n") {
				t.Errorf("the error, which becomes an Event, holds raw control characters: %q", err)
			}
			al, ok := alloc.Lookup(string(svc.UID))
			if got := []string{}; ok {
				for _, a := range al.Addresses {
					got = append(got, a.String())
				}
				if diff := cmp.Diff(addr, got); diff != "" {
					t.Errorf("addresses after a bad annotation (-want +got):\n%s", diff)
				}
			} else {
				t.Errorf("the Service lost %v", addr)
			}
		})
	}
	// Nothing was released meanwhile; back to a good key, it keeps its
	// address.
	select {
	case e := <-rec.Events:
		t.Errorf("unexpected Event %q", e)
	default:
	}
	st, err = b.EnsureLoadBalancer(ctx, "", svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(addr, ingressIPs(st)); diff != "" {
		t.Errorf("addresses once fixed (-want +got):\n%s", diff)
	}
}
