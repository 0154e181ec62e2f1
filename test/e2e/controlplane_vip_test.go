package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/rig"
)

// TestControlPlaneVIPReserved: the control-plane VIPs, one from the cloud
// config and one from kube-system/kubeadm-config (created while the CCM
// runs), are never given to a Service from a pool that covers them. The
// pool is marked Conflicting and gets a Warning Event; a Service that held
// the kubeadm VIP before it was known loses it with a Warning Event and
// gets another address; a Service that asks for it gets a Warning Event
// and stays pending; the pool hands out everything else.
func TestControlPlaneVIPReserved(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx, cloudConfigFlag(t, "controlPlane:\n  vips: [192.0.2.251]\n"))
	c.applyPool("lan", "addresses: [192.0.2.248/29]")

	c.waitPoolConflict("lan", "contains the control-plane VIP 192.0.2.251 (from the cloud config)")
	c.waitPoolEvent("lan", "This pool contains the control-plane VIP 192.0.2.251 (from the cloud config)")

	// Before kubeadm-config exists, 192.0.2.250 is an ordinary address.
	for _, name := range []string{"a", "b", "early"} {
		c.createService(lbService("default", name, nil))
		c.waitIngress("default", name, 1, 30*time.Second)
	}
	if got := c.waitIngress("default", "early", 1, time.Second); got[0] != "192.0.2.250" {
		t.Fatalf("early got %v, want 192.0.2.250 (lowest free)", got)
	}

	// kubeadm says 192.0.2.250 is the API server's VIP: early loses it.
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kubeadm-config"},
		Data: map[string]string{"ClusterConfiguration": "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n" +
			"kubernetesVersion: v1.37.2\ncontrolPlaneEndpoint: 192.0.2.250:6443\n"},
	}
	if _, err := c.cp.Client.CoreV1().ConfigMaps("kube-system").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("default", "early", corev1.EventTypeWarning, "ControlPlaneVIPReserved",
		"Released 192.0.2.250: it is the cluster's control-plane VIP (the kube-apiserver's address, from kube-system/kubeadm-config)")
	if err := rig.Eventually(30*time.Second, func() error {
		svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "early", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if got := ingress(svc); !slices.Equal(got, []string{"192.0.2.252"}) {
			return fmt.Errorf("early has ingress %v, want [192.0.2.252]", got)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	c.waitPoolConflict("lan", "contains the control-plane VIP 192.0.2.250 (from kube-system/kubeadm-config), 192.0.2.251 (from the cloud config)")
	c.waitPoolEvent("lan", "192.0.2.250 (from kube-system/kubeadm-config)")

	// A Service asking for it stays pending, with a Warning Event.
	c.createService(lbService("default", "asks", map[string]string{"ironlb.dev/load-balancer-ips": "192.0.2.250"}))
	c.waitEvent("default", "asks", corev1.EventTypeWarning, "ControlPlaneVIPReserved",
		"192.0.2.250 is the cluster's control-plane VIP (the kube-apiserver's address), which IronLB never gives to a Service")
	c.stillPending("default", "asks")

	// The pool hands out the rest, and then nothing.
	for _, name := range []string{"c", "d", "e"} {
		c.createService(lbService("default", name, nil))
		c.waitIngress("default", name, 1, 30*time.Second)
	}
	c.createService(lbService("default", "f", nil))
	c.stillPending("default", "f")
	svcs, err := c.cp.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var given []string
	for _, s := range svcs.Items {
		given = append(given, ingress(&s)...)
	}
	slices.Sort(given)
	if want := []string{"192.0.2.248", "192.0.2.249", "192.0.2.252", "192.0.2.253", "192.0.2.254", "192.0.2.255"}; !slices.Equal(given, want) {
		t.Errorf("addresses given out %v, want %v: everything but the control-plane VIPs", given, want)
	}
	if err := rig.Eventually(30*time.Second, func() error {
		p := c.pool("lan")
		if p.Status.IPv4 == nil || p.Status.IPv4.Free != "0" || p.Status.IPv4.Total != "8" {
			return fmt.Errorf("pool counts %+v, want 8 total, 0 free", p.Status.IPv4)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// waitPoolConflict waits for the pool's Conflicting condition, of reason
// ControlPlaneVIP, to contain msg.
func (c *cluster) waitPoolConflict(name, msg string) {
	c.t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		cond := meta.FindStatusCondition(c.pool(name).Status.Conditions, v1alpha1.ConditionConflicting)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonControlPlaneVIP || !strings.Contains(cond.Message, msg) {
			return fmt.Errorf("IPPool %s Conflicting = %+v, want True, %s, containing %q", name, cond, v1alpha1.ReasonControlPlaneVIP, msg)
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// waitPoolEvent waits for a Warning ControlPlaneVIPReserved Event on the
// pool containing msg (Events of cluster-scoped objects are in default).
func (c *cluster) waitPoolEvent(name, msg string) {
	c.t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		return findEvent(c.ctx, c.cp, "IPPool", name, "default", corev1.EventTypeWarning, "ControlPlaneVIPReserved", msg)
	})
	if err != nil {
		c.t.Fatal(err)
	}
}
