package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
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
	"github.com/ironlb/ironlb/test/rig"
)

// TestControlPlaneVIP: with the control-plane VIP in the cloud config, a
// Service whose status lists it (from before) loses it with a Warning
// Event and gets another address, written to its status; a Service that
// asks for it is refused with a Warning Event; no Service is given it
// from the pool; a VIP learnt later (kubeadm-config) is taken too.
func TestControlPlaneVIP(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	vip := netip.MustParseAddr("192.0.2.2")
	later := netip.MustParseAddr("192.0.2.5")
	svc := func(name string, status []string, annotations map[string]string) *v1.Service {
		s := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name, UID: types.UID("uid-" + name), Annotations: annotations},
			Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
		}
		for _, ip := range status {
			s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
		}
		return s
	}
	old := svc("old", []string{"192.0.2.2"}, nil)
	keeper := svc("keeper", []string{"192.0.2.5"}, nil)
	asks := svc("asks", nil, map[string]string{AnnotationIPs: "192.0.2.2"})
	client := fake.NewClientset(old, keeper, asks, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}})
	factory := informers.NewSharedInformerFactory(client, 0)
	alloc, pools, rec := ipam.New(), &cpPools{}, record.NewFakeRecorder(100)
	b := New(alloc, pools, rec, WithClient(client), WithControlPlaneVIPs([]netip.Addr{vip}))
	b.SetInformers(factory)
	pools.set(t, alloc, "lan", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"192.0.2.0/29"}})
	factory.Start(ctx.Done())
	go func() { _ = b.Run(ctx) }()

	waitEvent(t, rec, "Warning "+ReasonControlPlaneVIPReserved+" Released 192.0.2.2: it is the cluster's control-plane VIP (the kube-apiserver's address, from the cloud config)")
	var got []string
	if err := rig.Eventually(10*time.Second, func() error {
		s, err := client.CoreV1().Services("default").Get(ctx, "old", metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = ingressOf(&s.Status.LoadBalancer)
		if len(got) != 1 || got[0] == vip.String() {
			return fmt.Errorf("status of old lists %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"192.0.2.0"}, got); diff != "" {
		t.Errorf("old's new address (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[netip.Addr]string{vip: ControlPlaneFromConfig}, pools.get()); diff != "" {
		t.Errorf("control-plane VIPs told to the pools (-want +got):\n%s", diff)
	}

	if _, err := b.EnsureLoadBalancer(ctx, "", asks, nil); err == nil {
		t.Fatal("a Service asking for the control-plane VIP got it")
	}
	waitEvent(t, rec, "Warning "+ReasonControlPlaneVIPReserved+" 192.0.2.2 is the cluster's control-plane VIP")

	// The pool gives out everything else.
	var given []string
	for i := range 10 {
		st, err := b.EnsureLoadBalancer(ctx, "", svc(fmt.Sprintf("s%d", i), nil, nil), nil)
		if err != nil {
			break
		}
		given = append(given, ingressOf(st)...)
	}
	if diff := cmp.Diff([]string{"192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.6", "192.0.2.7"}, given); diff != "" {
		t.Errorf("addresses given out (-want +got):\n%s", diff)
	}

	// kubeadm-config names another VIP, which keeper holds: it loses it.
	b.SetControlPlaneVIPs(ControlPlaneFromKubeadm, []netip.Addr{later})
	waitEvent(t, rec, "Warning "+ReasonControlPlaneVIPReserved+" Released 192.0.2.5: it is the cluster's control-plane VIP (the kube-apiserver's address, from kube-system/kubeadm-config)")
	if h, ok := alloc.Holder(later); !ok || !cmp.Equal(h.Owners, []string{"the control-plane VIP"}) {
		t.Errorf("192.0.2.5 held by %+v (%v), want the control-plane VIP", h, ok)
	}
	// The pool is full: keeper's status ends up empty (pending).
	if err := rig.Eventually(10*time.Second, func() error {
		s, err := client.CoreV1().Services("default").Get(ctx, "keeper", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := ingressOf(&s.Status.LoadBalancer); len(got) > 0 {
			return fmt.Errorf("status of keeper lists %v", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// cpPools is fakePools that keeps what SetControlPlaneVIPs was told.
type cpPools struct {
	fakePools
	vips map[netip.Addr]string
}

func (p *cpPools) SetControlPlaneVIPs(m map[netip.Addr]string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.vips = m
}

func (p *cpPools) get() map[netip.Addr]string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.vips
}
