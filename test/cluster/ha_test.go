package cluster_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/test/cluster"
)

// TestRealClusterHA brings up the highly available control plane as
// IronLB's docs (docs/control-plane-vip.md) have a user do it: three kubeadm control-plane nodes
// behind IronLB's control-plane VIP (the speaker's control-plane static
// pod on each, layer 2), kubeadm init --upload-certs on node-1 and kubeadm
// join --control-plane through the VIP on the others; then, from the
// client behind the router and through the VIP, it measures the API
// server's outage when the VIP's holder loses its kube-apiserver, its
// network, and when it restarts, and checks that the VIP does not move
// back when the old holder returns.
func TestRealClusterHA(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a real cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()
	opts := realClusterOptions(t, ctx, 3)
	opts.ControlPlanes = 3
	start := time.Now()
	c, err := cluster.Up(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the HA cluster came up in %s", time.Since(start).Round(time.Second))
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
			for _, v := range c.SpeakerViews(context.Background()) {
				b, _ := json.Marshal(v.Status)
				t.Logf("%s /status: %s %v", v.Node, b, v.Err)
			}
			dumpControlPlaneSpeakerLogs(t, c)
		}
		if err := c.Close(); err != nil {
			t.Errorf("tearing the cluster down: %v", err)
		}
	})

	t.Run("up through the VIP", func(t *testing.T) {
		want := "https://" + cluster.ControlPlaneVIP.String() + ":6443"
		// The admin's kubeconfig of every control-plane node (kubeadm
		// join --control-plane writes the endpoint it joined through)
		// names the VIP. (kubeadm v1.37 points a control-plane node's
		// own kubelet at its local API server.)
		paths := map[string]string{"client's admin": c.Kubeconfig}
		for _, m := range c.Nodes {
			paths[m.Spec.Name+" admin.conf"] = m.HostPath("/etc/kubernetes/admin.conf")
		}
		for name, path := range paths {
			cfg, err := clientcmd.LoadFromFile(path)
			if err != nil {
				t.Fatal(err)
			}
			for _, cl := range cfg.Clusters {
				if cl.Server != want {
					t.Errorf("%s kubeconfig: server %s, want %s", name, cl.Server, want)
				}
			}
		}
		out, err := c.Kubectl(ctx, nil, "get", "nodes", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var nodes corev1.NodeList
		if err := json.Unmarshal([]byte(out), &nodes); err != nil {
			t.Fatal(err)
		}
		var ready []string
		for _, n := range nodes.Items {
			_, cp := n.Labels["node-role.kubernetes.io/control-plane"]
			for _, cond := range n.Status.Conditions {
				if cp && cond.Type == corev1.NodeReady && cond.Status == corev1.ConditionTrue {
					ready = append(ready, n.Name)
				}
			}
		}
		if got := strings.Join(ready, ","); got != "node-1,node-2,node-3" {
			t.Errorf("Ready control-plane nodes through the VIP: %q, want node-1,node-2,node-3", got)
		}
	})

	t.Run("one holder", func(t *testing.T) {
		holder, epoch, err := c.WaitHolder(ctx, 2*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got := cluster.Serving(c.SpeakerViews(ctx)); len(got) != 1 || got[0] != holder {
			t.Fatalf("nodes serving the VIP: %v, want only %s", got, holder)
		}
		t.Logf("%s holds %s (epoch %d)", holder, cluster.ControlPlaneVIP, epoch)
	})

	plugin := filepath.Join(t.TempDir(), "kubectl-ironlb")
	build := exec.CommandContext(ctx, "go", "build", "-o", plugin, "./cmd/kubectl-ironlb")
	build.Dir = opts.RepoRoot
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building kubectl-ironlb: %v\n%s", err, out)
	}
	t.Run("kubectl ironlb status", func(t *testing.T) {
		holder, _, err := c.WaitHolder(ctx, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		checkIronLBStatus(t, ctx, c, plugin, holder)
	})

	last := ""
	for _, d := range []cluster.Disruption{cluster.APIServerStop, cluster.NodeLoss, cluster.NodeRestart} {
		t.Run(string(d), func(t *testing.T) {
			f, err := c.MeasureFailover(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s", f)
			for _, l := range f.MoveLog {
				t.Logf("  %s", l)
			}
			if f.MovesOnRejoin != 0 {
				t.Errorf("the VIP moved %d times when %s came back, want 0", f.MovesOnRejoin, f.From)
			}
			if got := cluster.Serving(c.SpeakerViews(ctx)); len(got) != 1 || got[0] != f.To {
				t.Errorf("after %s came back, nodes serving the VIP: %v, want only %s", f.From, got, f.To)
			}
			last = f.To
		})
	}
	t.Run("kubectl ironlb status after the failovers", func(t *testing.T) {
		if last == "" {
			t.Skip("no failover measured")
		}
		checkIronLBStatus(t, ctx, c, plugin, last)
	})
}

// checkIronLBStatus runs kubectl ironlb status (built from the tree) from
// the client as the admin, through the VIP, and checks its control-plane
// section: the VIP, holder the one node serving it and every node's
// apiserver ready.
func checkIronLBStatus(t *testing.T, ctx context.Context, c *cluster.Cluster, plugin, holder string) {
	t.Helper()
	run := func(args ...string) []byte {
		argv := append([]string{"netns", "exec", c.Client.Name, plugin, "status", "--kubeconfig", c.Kubeconfig}, args...)
		out, err := exec.CommandContext(ctx, "ip", argv...).Output()
		if err != nil {
			t.Fatalf("kubectl ironlb status %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	t.Logf("kubectl ironlb status:\n%s", run())
	var st status.Status
	if err := json.Unmarshal(run("-o", "json"), &st); err != nil {
		t.Fatal(err)
	}
	cp := st.ControlPlane
	if cp == nil {
		t.Fatal("kubectl ironlb status has no control-plane section")
	}
	if diff := cmp.Diff([]string{cluster.ControlPlaneVIP.String()}, cp.VIPs); diff != "" {
		t.Errorf("control-plane VIPs (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{holder}, cp.Serving); diff != "" {
		t.Errorf("nodes serving the control-plane VIP (-want +got):\n%s", diff)
	}
	if cp.Disagreement != "" {
		t.Errorf("the speakers disagree: %s", cp.Disagreement)
	}
	var ready []string
	for _, n := range cp.Nodes {
		if n.Error == "" && n.Status != nil && n.Status.APIServerReady {
			ready = append(ready, n.Node)
		}
	}
	if diff := cmp.Diff([]string{"node-1", "node-2", "node-3"}, ready); diff != "" {
		t.Errorf("control-plane nodes with a ready API server (-want +got):\n%s", diff)
	}
}

// dumpControlPlaneSpeakerLogs shows the end of every control-plane
// speaker container's log (read from the node's /var/log/pods, which
// outlives the container and a restart of the node).
func dumpControlPlaneSpeakerLogs(t *testing.T, c *cluster.Cluster) {
	for _, m := range c.ControlPlaneNodes() {
		logs, _ := filepath.Glob(m.HostPath("/var/log/pods/kube-system_ironlb-control-plane-*/speaker/*.log"))
		for _, l := range logs {
			b, err := os.ReadFile(l)
			if err != nil {
				t.Logf("%s: %v", l, err)
				continue
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			t.Logf("%s %s (last 60 lines):\n%s", m.Spec.Name, filepath.Base(l), strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	}
}
