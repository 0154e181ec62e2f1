package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/rig"
)

// TestRestartKeepsAddresses: a CCM restart never gives a Service a new
// address. Sharers whose ports came to clash, and a Service whose sharing
// annotations stopped parsing, keep the address their status holds; the
// clash becomes a Warning Event.
func TestRestartKeepsAddresses(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("lan", "addresses: [192.0.2.0/28]")
	shared := func(name, key string, port int32) *corev1.Service {
		return lbService("default", name, map[string]string{"ironlb.dev/allow-shared-ip": key}, func(s *corev1.Service) {
			s.Spec.Ports[0].Port = port
		})
	}
	for _, s := range []*corev1.Service{shared("a", "k", 80), shared("b", "k", 443), shared("c", "k2", 80), shared("d", "k2", 443), lbService("default", "e", nil)} {
		c.createService(s)
	}
	addrs := map[string]string{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		addrs[n] = c.waitIngress("default", n, 1, 30*time.Second)[0]
	}
	if addrs["a"] != addrs["b"] || addrs["c"] != addrs["d"] {
		t.Fatalf("sharers did not share: %v", addrs)
	}
	edit := func(name string, mutate func(*corev1.Service)) {
		t.Helper()
		svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		mutate(svc)
		if _, err := c.cp.Client.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// b now clashes with a on port 80; d's annotations disagree.
	edit("b", func(s *corev1.Service) { s.Spec.Ports[0].Port = 80 })
	edit("d", func(s *corev1.Service) { s.Annotations["metallb.io/allow-shared-ip"] = "other" })
	c.waitEvent("default", "b", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "cannot keep sharing")
	c.waitEvent("default", "d", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "annotations disagree")

	// Restart: the signal that the new CCM restored and synced every
	// Service is a new Ensure of each (EnsuringLoadBalancer counted once
	// more). The first sharers keep working; the latecomers are refused.
	before := map[string]int32{}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		before[n] = eventCount(t, ctx, c, n, "EnsuringLoadBalancer")
	}
	if err := c.ccm.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = c.ccm.Wait(5 * time.Second)
	ccm2 := rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-2", Kubeconfig: c.kubeconfig, LeaderElect: true})
	if err := ccm2.WaitForLog(`"Restored allocations from Service status"`, time.Minute); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"a", "b", "c", "d", "e"} {
		err := rig.Eventually(time.Minute, func() error {
			if got := eventCount(t, ctx, c, n, "EnsuringLoadBalancer"); got <= before[n] {
				return fmt.Errorf("the new CCM has not synced %s", n)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, want := range addrs {
		if got := c.waitIngress("default", name, 1, time.Second)[0]; got != want {
			t.Errorf("%s changed from %s to %s when the CCM restarted", name, want, got)
		}
	}
	c.waitEvent("default", "b", corev1.EventTypeWarning, "SharingConflict", "both use TCP/80")
	if ccm2.LogContains("Cannot restore address") {
		t.Errorf("the restore lost an address:\n%s", ccm2.Tail(30))
	}
	c.checkNoSharedAddresses(map[string]bool{"default/a": true, "default/b": true, "default/c": true, "default/d": true})
}

// eventCount sums the counts of the Events of the reason on a Service.
func eventCount(t *testing.T, ctx context.Context, c *cluster, name, reason string) int32 {
	t.Helper()
	evs, err := c.cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var n int32
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == name && e.Reason == reason {
			n += max(e.Count, 1)
		}
	}
	return n
}

// TestPreferDualStackCompletes: a PreferDualStack Service that got only an
// IPv4 address gets its IPv6 one as soon as a pool for it appears, without
// a restart or an edit.
func TestPreferDualStackCompletes(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("v4", "addresses: [192.0.2.0/28]")
	c.createService(lbService("default", "dual", nil, func(s *corev1.Service) {
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
	}))
	c.waitIngress("default", "dual", 1, 30*time.Second)
	c.waitEvent("default", "dual", corev1.EventTypeWarning, "IPFamilyNotAssigned", "IPv6")
	added := time.Now()
	c.applyPool("v6", "addresses: ['2001:db8:7::/120']")
	got := c.waitIngress("default", "dual", 2, 15*time.Second)
	t.Logf("the IPv6 address came %s after its pool: %v", time.Since(added).Round(time.Millisecond), got)
	if !inPrefix(t, got[0], "192.0.2.0/28") || !inPrefix(t, got[1], "2001:db8:7::/120") {
		t.Errorf("ingress %v, want the IPv4 address first, then one from the new IPv6 pool", got)
	}
}

// TestNodeAddressesNeverAllocated: a pool that contains a Node's InternalIP
// is marked Conflicting, and that address is never handed out.
func TestNodeAddressesNeverAllocated(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	if _, err := rig.RegisterNode(ctx, c.cp.Client, "node-a", "192.0.2.2", nil); err != nil {
		t.Fatal(err)
	}
	err := rig.Eventually(30*time.Second, func() error {
		n, err := c.cp.Client.CoreV1().Nodes().Get(ctx, "node-a", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !rig.Initialized(n) {
			return fmt.Errorf("node-a not initialized")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.applyPool("tiny", "addresses: [192.0.2.0/30]")
	err = rig.Eventually(30*time.Second, func() error {
		cond := meta.FindStatusCondition(c.pool("tiny").Status.Conditions, v1alpha1.ConditionConflicting)
		if cond == nil || cond.Status != metav1.ConditionTrue || cond.Reason != v1alpha1.ReasonNodeAddress || !strings.Contains(cond.Message, "192.0.2.2 of Node node-a") {
			return fmt.Errorf("Conflicting = %+v, want True/NodeAddress naming node-a", cond)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 3 {
		name := fmt.Sprintf("s%d", i)
		c.createService(lbService("default", name, nil))
		got = append(got, c.waitIngress("default", name, 1, 30*time.Second)[0])
	}
	slices.Sort(got)
	if want := []string{"192.0.2.0", "192.0.2.1", "192.0.2.3"}; !slices.Equal(got, want) {
		t.Errorf("addresses %v, want %v: every one but the node's", got, want)
	}
	c.createService(lbService("default", "s3", nil))
	c.waitEvent("default", "s3", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "IP pool exhausted")
	// Asking for the node's address says it is a node's; the CCM's log
	// names the node.
	c.createService(lbService("default", "greedy", map[string]string{"ironlb.dev/load-balancer-ips": "192.0.2.2"}))
	c.waitEvent("default", "greedy", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "it is reserved: a Node of the cluster has this address")
	if err := c.ccm.WaitForLog(`service="default/greedy" address="192.0.2.2" reason="Reserved" holders=["Node node-a"]`, 30*time.Second); err != nil {
		t.Error(err)
	}
}

// TestBinaryDefaults: ironlb-ccm's own defaults are real, in --help and in
// behaviour: no cloud routes, and the throughput and leader-election
// settings IronLB ships.
func TestBinaryDefaults(t *testing.T) {
	skipShort(t)
	dir, err := binaries.IronLB()
	if err != nil {
		t.Fatal(err)
	}
	out, _ := exec.Command(dir+"/ironlb-ccm", "--help").CombinedOutput()
	help := string(out)
	for _, flag := range []string{"--configure-cloud-routes", "--concurrent-service-syncs", "--kube-api-qps", "--kube-api-burst", "--leader-elect-lease-duration", "--leader-elect-renew-deadline", "--leader-elect-retry-period"} {
		line := ""
		for _, l := range strings.Split(help, "\n") {
			if strings.Contains(l, flag+" ") {
				line = l
			}
		}
		want := map[string]string{
			"--configure-cloud-routes":      "",
			"--concurrent-service-syncs":    "(default 10)",
			"--kube-api-qps":                "(default 200)",
			"--kube-api-burst":              "(default 400)",
			"--leader-elect-lease-duration": "(default 8s)",
			"--leader-elect-renew-deadline": "(default 6s)",
			"--leader-elect-retry-period":   "(default 1s)",
		}[flag]
		switch {
		case line == "":
			t.Errorf("--help lacks %s", flag)
		case flag == "--configure-cloud-routes" && strings.Contains(line, "(default true)"):
			t.Errorf("--help says %s defaults to true:\n%s", flag, line)
		case !strings.Contains(line, want):
			t.Errorf("--help for %s lacks %q:\n%s", flag, want, line)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	if err := c.ccm.WaitForLog("Will not configure cloud provider routes", time.Minute); err != nil {
		t.Fatalf("the CCM did not decide about routes: %v", err)
	}
	for _, bad := range []string{"--configure-cloud-routes is set", "Starting route controller"} {
		if c.ccm.LogContains(bad) {
			t.Errorf("the CCM logged %q: cloud routes are on", bad)
		}
	}
}
