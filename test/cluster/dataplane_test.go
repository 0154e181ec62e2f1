package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/test/cluster"
	"github.com/ironlb/ironlb/test/cluster/machine"
)

// testKubeProxyStopped is issue 21's item 5 on the real cluster: the
// kube-proxy of the node announcing the layer-2 Service svc's vip is
// stopped (SIGSTOP: its health endpoint stops answering, its rules stay);
// the speaker finds the node's data plane not ready and the CCM moves the
// VIP to the other worker, which the outside client then reaches it
// through. After SIGCONT the node is held down before it is eligible
// again, and the VIP does not flap back meanwhile; stopping the new
// owner's kube-proxy then brings the VIP back to the recovered node, which
// shows it eligible again.
func testKubeProxyStopped(t *testing.T, ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface, svc string, vip netip.Addr) {
	first := waitAnnounced(t, ctx, cs, svc, vip, "", time.Minute)
	m1 := machineNamed(t, c, first)
	resume := stopKubeProxy(t, ctx, m1)
	stopped := time.Now()
	second := waitAnnounced(t, ctx, cs, svc, vip, first, 30*time.Second)
	t.Logf("kube-proxy stopped on %s: %s moved to %s %s later (the Announced record)", first, vip, second, time.Since(stopped).Round(time.Millisecond))
	m2 := machineNamed(t, c, second)
	reachThrough(t, ctx, c, vip, m2)
	t.Logf("the client reaches %s through %s %s after kube-proxy stopped on %s", vip, second, time.Since(stopped).Round(time.Millisecond), first)

	// kube-proxy recovers: the node is held down (3 s of continuous
	// health on a first failure) and the VIP stays where it is meanwhile
	// and after (invariant 4: a VIP moves only off an ineligible node).
	resume()
	resumed := time.Now()
	for end := resumed.Add(5 * time.Second); time.Now().Before(end); {
		if on := announcedOn(t, ctx, cs, svc, vip); len(on) != 1 || on[0] != second {
			t.Fatalf("%s's record says %v %s after kube-proxy resumed on %s; want it to stay on %s", vip, on, time.Since(resumed).Round(time.Millisecond), first, second)
		}
		time.Sleep(100 * time.Millisecond)
	}
	logSpeaker(t, ctx, c, first, "data plane")

	// The recovered node is eligible again: with the new owner's
	// kube-proxy stopped, the VIP goes back to it (were it still held
	// down, no node would be eligible and the VIP would stay put).
	resume2 := stopKubeProxy(t, ctx, m2)
	defer resume2()
	stopped = time.Now()
	if back := waitAnnounced(t, ctx, cs, svc, vip, second, 30*time.Second); back != first {
		t.Fatalf("%s moved to %s, want %s (the only other worker)", vip, back, first)
	}
	t.Logf("kube-proxy stopped on %s: %s back on %s %s later", second, vip, first, time.Since(stopped).Round(time.Millisecond))
	reachThrough(t, ctx, c, vip, m1)
	resume2()
}

// stopKubeProxy sends SIGSTOP to the kube-proxy process of machine m
// (found by its exact name in the machine's PID namespace) and returns a
// function that sends SIGCONT (once; also run at cleanup).
func stopKubeProxy(t *testing.T, ctx context.Context, m *machine.Machine) func() {
	t.Helper()
	out, err := m.Run(ctx, "pgrep", "-x", "kube-proxy")
	if err != nil {
		t.Fatalf("finding kube-proxy on %s: %v", m.Spec.Name, err)
	}
	pids := strings.Fields(out)
	if len(pids) != 1 {
		t.Fatalf("%d kube-proxy processes on %s: %q", len(pids), m.Spec.Name, out)
	}
	if _, err := m.Run(ctx, "kill", "-STOP", pids[0]); err != nil {
		t.Fatal(err)
	}
	done := false
	resume := func() {
		if done {
			return
		}
		done = true
		if _, err := m.Run(context.Background(), "kill", "-CONT", pids[0]); err != nil {
			t.Errorf("resuming kube-proxy on %s: %v", m.Spec.Name, err)
		}
	}
	t.Cleanup(resume)
	return resume
}

// waitAnnounced waits until the Service's Announced record places vip on
// one node other than not, and returns it.
func waitAnnounced(t *testing.T, ctx context.Context, cs kubernetes.Interface, svc string, vip netip.Addr, not string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var on []string
	for {
		on = announcedOn(t, ctx, cs, svc, vip)
		if len(on) == 1 && on[0] != not {
			return on[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s's record says %v after %s; want one node other than %q", vip, on, timeout, not)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// announcedOn returns the layer-2 nodes the Service's Announced record
// names for vip.
func announcedOn(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, vip netip.Addr) []string {
	t.Helper()
	svc, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cond := meta.FindStatusCondition(svc.Status.Conditions, "ironlb.dev/Announced")
	if cond == nil {
		return nil
	}
	var own []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			own = append(own, a)
		}
	}
	entries, err := announced.Decode(cond.Message, own)
	if err != nil {
		t.Fatalf("%s's Announced record %q: %v", name, cond.Message, err)
	}
	for _, e := range entries {
		if e.Address == vip {
			return e.Layer2
		}
	}
	return nil
}

// reachThrough waits until the outside client gets an answer through vip
// while the router resolves vip to node m's MAC.
func reachThrough(t *testing.T, ctx context.Context, c *cluster.Cluster, vip netip.Addr, m *machine.Machine) {
	t.Helper()
	mac := linkMAC(t, m.Spec.NetNS)
	err := eventually(ctx, 30*time.Second, func() error {
		out, err := c.Client.Run("curl", "-sS", "-m", "2", fmt.Sprintf("http://%s/hostname", vip))
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "web-") {
			return fmt.Errorf("answer %q is not a web pod's name", out)
		}
		b, err := exec.CommandContext(ctx, "ip", "-n", c.RouterNetNS(), "-j", "neigh", "show", vip.String()).Output()
		if err != nil {
			return fmt.Errorf("the router's neighbour entry for %s: %w", vip, err)
		}
		var neigh []struct {
			LLAddr string `json:"lladdr"`
		}
		if err := json.Unmarshal(b, &neigh); err != nil {
			return err
		}
		if len(neigh) != 1 || neigh[0].LLAddr != mac {
			return fmt.Errorf("the router resolves %s to %+v, want %s's %s", vip, neigh, m.Spec.Name, mac)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// linkMAC is the MAC of eth0 (the LAN) in network namespace netns.
func linkMAC(t *testing.T, netns string) string {
	t.Helper()
	b, err := exec.Command("ip", "-n", netns, "-j", "link", "show", "eth0").Output()
	if err != nil {
		t.Fatalf("eth0 of %s: %v", netns, err)
	}
	var links []struct {
		Address string `json:"address"`
	}
	if err := json.Unmarshal(b, &links); err != nil || len(links) != 1 {
		t.Fatalf("eth0 of %s: %q: %v", netns, b, err)
	}
	return links[0].Address
}

func machineNamed(t *testing.T, c *cluster.Cluster, name string) *machine.Machine {
	t.Helper()
	for _, m := range c.Nodes {
		if m.Spec.Name == name {
			return m
		}
	}
	t.Fatalf("no machine %s", name)
	return nil
}

// logSpeaker logs the lines of node's speaker's log that contain substr,
// for the record (the speaker's own account of its data plane).
func logSpeaker(t *testing.T, ctx context.Context, c *cluster.Cluster, node, substr string) {
	t.Helper()
	out, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "get", "pods", "-l", "app.kubernetes.io/name=ironlb-speaker",
		"--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}")
	if err != nil {
		t.Logf("the speaker pod on %s: %v", node, err)
		return
	}
	logs, err := c.Kubectl(ctx, nil, "-n", "ironlb-system", "logs", strings.TrimSpace(out), "--tail=200")
	if err != nil {
		t.Logf("logs of %s: %v", out, err)
		return
	}
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, substr) {
			t.Logf("%s: %s", node, l)
		}
	}
}
