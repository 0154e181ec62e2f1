package planner

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// tenantService creates a LoadBalancer Service in namespace ns holding the
// allocation of sharing (as RequestFor scopes a sharing key: "ns/key"),
// with its address in its status as the service controller writes it, and
// returns the address.
func (e *plannerEnv) tenantService(ns, name string, sharing ipam.Sharing) netip.Addr {
	e.t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: types.UID("uid-" + ns + "-" + name)},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}}},
	}
	al, err := e.alloc.Ensure(ipam.Request{Owner: string(svc.UID), Name: ns + "/" + name, Families: []ipam.Family{ipam.IPv4}, Sharing: sharing})
	if err != nil {
		e.t.Fatal(err)
	}
	vip := al.Addresses[0]
	m := e.mark(svc)
	if _, err := e.cs.CoreV1().Services(ns).Create(e.ctx, svc, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
	e.seen("*v1.Service", name, m)
	// A merge patch, as the service controller's: it keeps the condition
	// the planner may have written meanwhile.
	patch := fmt.Sprintf(`{"status":{"loadBalancer":{"ingress":[{"ip":%q}]}}}`, vip)
	if _, err := e.cs.CoreV1().Services(ns).Patch(e.ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}, "status"); err != nil {
		e.t.Fatal(err)
	}
	e.idle()
	return vip
}

// announced returns the message of a Service's Announced condition once
// it names vip, as the planner writes it.
func (e *plannerEnv) announced(ns, name string, vip netip.Addr) string {
	e.t.Helper()
	var msg string
	err := pollFor(5*time.Second, func() error {
		svc, err := e.cs.CoreV1().Services(ns).Get(e.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		c := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced)
		if c == nil {
			return fmt.Errorf("%s/%s has no %s condition", ns, name, ConditionAnnounced)
		}
		if _, ok := announced.Records(svc)[vip]; !ok {
			return fmt.Errorf("%s/%s records %q, nothing for %s", ns, name, c.Message, vip)
		}
		msg = c.Message
		return nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return msg
}

// TestForgedSharingKeyCannotMoveAnotherTenantsVIP (issue 20, finding 5):
// tenant B shares an address under the key "x, <A's VIP>=<node>", which
// earlier versions wrote into B's Announced record as it was, so that it
// read as an entry placing tenant A's VIP on a node of B's choosing; every
// new leader moved A's VIP there. A's VIP stays where it is across leader
// changes, whether or not A's own record was written before the change.
func TestForgedSharingKeyCannotMoveAnotherTenantsVIP(t *testing.T) {
	e := newPlannerEnv(t, envOptions{record: true}, nodes(3)...)
	vipA := e.tenantService("tenant-a", "web", ipam.Sharing{})
	ownerA := e.owner(vipA, "node-a", "node-b", "node-c")
	evil := others(ownerA, "node-d")[0]

	key := fmt.Sprintf("x, %s=%s", vipA, evil)
	vipB := e.tenantService("tenant-b", "web", ipam.Sharing{Key: "tenant-b/" + key, TrafficPolicy: "Cluster", Ports: []ipam.Port{{Protocol: "TCP", Port: 80}}})
	recB := e.announced("tenant-b", "web", vipB)
	t.Logf("tenant B's record: %q", recB)
	e.announced("tenant-a", "web", vipA)

	// dropRecordA: A's VIP was placed a moment before the leader died,
	// before its record was written; the new leader has only B's to go by.
	dropRecordA := func(t *testing.T) {
		svc, err := e.cs.CoreV1().Services("tenant-a").Get(e.ctx, "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Status.Conditions = nil
		if _, err := e.cs.CoreV1().Services("tenant-a").UpdateStatus(e.ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("A's record lost", func(t *testing.T) {
		e.restart(func() { dropRecordA(t) })
		if got := e.owner(vipA, "node-a", "node-b", "node-c"); got != ownerA {
			t.Fatalf("after a leader change tenant A's VIP %s moved from %s to %s, as tenant B's record %q says", vipA, ownerA, got, recB)
		}
	})
	t.Run("both records", func(t *testing.T) {
		// Both records name A's VIP; whichever the new leader reads last
		// won. Several leader changes give B's record its chances.
		for i := range 5 {
			e.restart(nil)
			if got := e.owner(vipA, "node-a", "node-b", "node-c"); got != ownerA {
				t.Fatalf("after leader change %d tenant A's VIP %s moved from %s to %s, as tenant B's record %q says", i+1, vipA, ownerA, got, recB)
			}
		}
	})
	// Records written before this fix, or by anything else that can write
	// B's status: the entry for A's VIP is ignored (B's status does not
	// hold it; or, where it does, the restore did not give it to B).
	for _, tc := range []struct {
		name    string
		ingress []string
	}{
		{name: "record from an earlier version", ingress: []string{vipB.String()}},
		{name: "B's status lists A's VIP too", ingress: []string{vipB.String(), vipA.String()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			forged := fmt.Sprintf("%s=%s@tenant-b/x, %s=%s", vipB, ownerA, vipA, evil)
			e.restart(func() {
				dropRecordA(t)
				svc, err := e.cs.CoreV1().Services("tenant-b").Get(e.ctx, "web", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				svc.Status.LoadBalancer.Ingress = nil
				for _, ip := range tc.ingress {
					svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, v1.LoadBalancerIngress{IP: ip})
				}
				svc.Status.Conditions = []metav1.Condition{{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ReasonAllAnnounced,
					Message: forged, LastTransitionTime: metav1.Now()}}
				if _, err := e.cs.CoreV1().Services("tenant-b").UpdateStatus(e.ctx, svc, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			})
			if got := e.owner(vipA, "node-a", "node-b", "node-c"); got != ownerA {
				t.Fatalf("after a leader change tenant A's VIP %s moved from %s to %s, as tenant B's record %q says", vipA, ownerA, got, forged)
			}
			// B's own entry still places B's VIP.
			if got := e.owner(vipB, "node-a", "node-b", "node-c"); got != ownerA {
				t.Errorf("tenant B's VIP %s is on %s, its record says %s", vipB, got, ownerA)
			}
		})
	}
	if got := e.owner(vipB, "node-a", "node-b", "node-c"); got == "" {
		t.Errorf("tenant B's VIP %s has no node", vipB)
	}
}

// TestFlushRecordsWaitsForTheRecords: a leader stepping down right after
// a move writes the move's record before it hands the Lease over
// (FlushRecords): the next leader believes records over the speakers'
// claims. The record's write is held at the API; FlushRecords must wait for
// it, and the record names the new node once it returns.
func TestFlushRecordsWaitsForTheRecords(t *testing.T) {
	e := newPlannerEnv(t, envOptions{record: true}, nodes(2)...)
	vip := e.service("web", false)
	first := e.owner(vip, "node-a", "node-b")

	held, release := make(chan struct{}, 1), make(chan struct{})
	e.cs.PrependReactor("patch", "services", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "status" {
			select {
			case held <- struct{}{}:
			default:
			}
			<-release
		}
		return false, nil, nil
	})
	e.sp.set(first, lost())
	<-held // the move's record is being written

	ctx, cancel := context.WithTimeout(e.ctx, 200*time.Millisecond)
	e.p.FlushRecords(ctx)
	if ctx.Err() == nil {
		t.Fatal("FlushRecords returned while a record's write was held")
	}
	cancel()
	close(release)
	ctx, cancel = context.WithTimeout(e.ctx, 10*time.Second)
	defer cancel()
	e.p.FlushRecords(ctx)
	if ctx.Err() != nil {
		t.Fatal("FlushRecords did not return after the write went through")
	}
	second := others(first)[0]
	svc, err := e.cs.CoreV1().Services("default").Get(e.ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(svc.Status.Conditions, ConditionAnnounced); c == nil || c.Message != vip.String()+"="+second {
		t.Errorf("Announced once FlushRecords returned = %+v, want %s=%s", c, vip, second)
	}
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
			if got, want := announced.Records(svc)[vip], (announced.Record{Node: owner, SharedAs: "dns"}); got != want {
				return fmt.Errorf("%s records %+v, want %+v", name, got, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
