package e2e

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
)

// TestAnnotationGrammar (issue 20, finding 5): a sharing key that spells
// an entry of the Announced record, or holds a terminal escape sequence,
// is refused with a Warning Event naming the rule; a Service that gets
// such a key keeps its address, across a CCM restart too, and no raw key
// reaches the record.
func TestAnnotationGrammar(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("lan", "addresses: [192.0.2.32/28]")
	for _, ns := range []string{"team-a", "team-b"} {
		c.createNamespace(ns, nil)
	}
	c.createService(lbService("team-a", "web", nil))
	vipA := c.waitIngress("team-a", "web", 1, 30*time.Second)[0]

	// A new Service with a forging key gets nothing.
	forging := fmt.Sprintf("x, %s=node-evil", vipA)
	c.createService(lbService("team-b", "forger", map[string]string{"metallb.universe.tf/allow-shared-ip": forging}))
	c.waitEvent("team-b", "forger", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
		fmt.Sprintf(`InvalidSharingKey: annotation metallb.universe.tf/allow-shared-ip: %q is not a sharing key`, forging))
	c.stillPending("team-b", "forger")

	// A Service holding an address keeps it when its key goes bad.
	c.createService(lbService("team-b", "web", map[string]string{"ironlb.dev/allow-shared-ip": "web"}))
	vipB := c.waitIngress("team-b", "web", 1, 30*time.Second)[0]
	before := c.failedSyncs("team-b", "web")
	svc, err := c.cp.Client.CoreV1().Services("team-b").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	svc.Annotations["ironlb.dev/allow-shared-ip"] = "web\x1b[2J"
	if _, err := c.cp.Client.CoreV1().Services("team-b").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.waitEvent("team-b", "web", corev1.EventTypeWarning, "SyncLoadBalancerFailed",
		`InvalidSharingKey: annotation ironlb.dev/allow-shared-ip: "web\x1b[2J" is not a sharing key`)
	// The signal that the refusal is settled: a retry failed too.
	err = rig.Eventually(30*time.Second, func() error {
		if n := c.failedSyncs("team-b", "web"); n < before+2 {
			return fmt.Errorf("%d failed syncs since the edit, waiting for a retry", n-before)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.waitIngress("team-b", "web", 1, time.Second)[0]; got != vipB {
		t.Fatalf("team-b/web changed from %s to %s when its key went bad", vipB, got)
	}

	// Restart: the new CCM restores the Service's address under the old
	// key's spelling and still refuses the key.
	if err := c.ccm.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.ccm.Wait(5 * time.Second)
	ccm2 := rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-2", Kubeconfig: c.kubeconfig, LeaderElect: true})
	if err := ccm2.WaitForLog(`"Restored allocations from Service status"`, time.Minute); err != nil {
		t.Fatal(err)
	}
	before = c.failedSyncs("team-b", "web")
	err = rig.Eventually(time.Minute, func() error {
		if n := c.failedSyncs("team-b", "web"); n <= before {
			return fmt.Errorf("the new CCM has not synced team-b/web")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{"team-a/web": vipA, "team-b/web": vipB} {
		ns, n, _ := strings.Cut(name, "/")
		if got := c.waitIngress(ns, n, 1, time.Second)[0]; got != want {
			t.Errorf("%s changed from %s to %s across the restart", name, want, got)
		}
		svc, err := c.cp.Client.CoreV1().Services(ns).Get(ctx, n, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if cond := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced"); cond != nil &&
			(strings.Contains(cond.Message, "\x1b") || strings.Contains(cond.Message, "node-evil")) {
			t.Errorf("%s's Announced record holds a raw key: %q", name, cond.Message)
		}
	}
}

// failedSyncs counts the SyncLoadBalancerFailed Events of a Service.
func (c *cluster) failedSyncs(namespace, name string) int32 {
	c.t.Helper()
	evs, err := c.cp.Client.CoreV1().Events(namespace).List(c.ctx, metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	var n int32
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name && e.Reason == "SyncLoadBalancerFailed" {
			n += max(e.Count, 1)
		}
	}
	return n
}
