package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/cluster"
	"github.com/ironlb/ironlb/test/cluster/images"
)

// TestRealCluster keeps IronLB's install path honest: a real kubeadm
// cluster (a control plane, which kubeadm excludes from external load
// balancers, and two workers; no CoreDNS, to be quick), IronLB's images built from
// this tree and installed with kubectl apply --server-side -k deploy/,
// then a LoadBalancer Service in front of a real agnhost Deployment,
// reached from outside the cluster through the VIP and real kube-proxy:
// over BGP via the router, then from a layer-2 pool.
func TestRealCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a real cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := cluster.Up(ctx, realClusterOptions(t, ctx, 3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			dumpLogs(t, c)
		}
		if err := c.Close(); err != nil {
			t.Errorf("tearing the cluster down: %v", err)
		}
	})
	cs, err := c.Clientset()
	if err != nil {
		t.Fatal(err)
	}

	// IronLB's CCM initialized the nodes: provider IDs and the kubelets'
	// --node-ip as InternalIP.
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i, n := range nodes.Items {
		if want := "ironlb://" + n.Name; n.Spec.ProviderID != want {
			t.Errorf("node %s: provider ID %q, want %q", n.Name, n.Spec.ProviderID, want)
		}
		if got := internalIP(n); got != cluster.NodeIP(i+1).String() {
			t.Errorf("node %s: InternalIP %q, want %s", n.Name, got, cluster.NodeIP(i+1))
		}
	}

	if _, err := cs.AppsV1().Deployments("default").Create(ctx, agnhostDeployment("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("BGP", func(t *testing.T) {
		if err := c.Configure(ctx, cluster.BGPConfig); err != nil {
			t.Fatal(err)
		}
		vip := createService(t, ctx, cs, "web-bgp")
		if !cluster.BGPPool.Contains(vip) {
			t.Fatalf("VIP %s is not in the BGP pool %s", vip, cluster.BGPPool)
		}
		reach(t, ctx, c, vip)

		// sessionAffinity ClientIP: both workers advertise, the router
		// prefers one (MED), so one client keeps reaching one pod.
		sticky := createService(t, ctx, cs, "web-sticky", func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP })
		err := eventually(ctx, time.Minute, func() error {
			paths, err := c.Router().Paths(ctx, netip.PrefixFrom(sticky, 32))
			if err != nil {
				return err
			}
			best, multi := 0, 0
			for _, p := range paths {
				if p.Bestpath != nil && p.Bestpath.Overall {
					best++
				}
				if p.Multipath {
					multi++
				}
			}
			if len(paths) != 2 || best != 1 || multi > 1 {
				return fmt.Errorf("the router has %d paths to %s, %d best, %d multipath; want one from each worker, one used: %+v", len(paths), sticky, best, multi, paths)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		var first string
		for i := 0; i < 10; i++ {
			var out string
			err := eventually(ctx, time.Minute, func() error {
				var err error
				out, err = c.Client.Run("curl", "-sS", "-m", "2", fmt.Sprintf("http://%s/hostname", sticky))
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = out
			} else if out != first {
				t.Fatalf("sessionAffinity ClientIP: connection %d reached %s, the first %s", i+1, out, first)
			}
		}
	})
	t.Run("Layer2", func(t *testing.T) {
		if err := c.Configure(ctx, cluster.L2Config); err != nil {
			t.Fatal(err)
		}
		vip := createService(t, ctx, cs, "web-l2")
		if !cluster.LAN.Contains(vip) {
			t.Fatalf("VIP %s is not on the LAN %s", vip, cluster.LAN)
		}
		reach(t, ctx, c, vip)
		t.Run("kube-proxy stopped moves the VIP", func(t *testing.T) {
			testKubeProxyStopped(t, ctx, c, cs, "web-l2", vip)
		})
		t.Run("rollout restart of the speakers moves no VIP", func(t *testing.T) {
			testRolloutRestart(t, ctx, c, cs, "web-l2", vip)
		})
	})
	t.Run("MetalLB migration", func(t *testing.T) {
		testMetalLBMigration(t, ctx, c, cs)
	})
}

// realClusterOptions are the options of the real-cluster tests: nodes
// nodes without CoreDNS, the tools of $IRONLB_TOOLS_BIN (default
// .cache/bin), IronLB's images built from this tree.
func realClusterOptions(t *testing.T, ctx context.Context, nodes int) cluster.Options {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	tools := os.Getenv("IRONLB_TOOLS_BIN")
	if tools == "" {
		tools = filepath.Join(root, ".cache", "bin")
	}
	return cluster.Options{
		Dir:          filepath.Join(t.TempDir(), "cluster"),
		Nodes:        nodes,
		ToolsBin:     tools,
		ImageCache:   filepath.Join(root, ".cache", "cluster-images"),
		RepoRoot:     root,
		IronLBImages: buildIronLBImages(t, ctx, root),
		NoCoreDNS:    true,
		Log:          logWriter{t},
	}
}

// buildIronLBImages builds IronLB's images from this tree
// (cluster.BuildIronLBImages) into a temporary folder.
func buildIronLBImages(t *testing.T, ctx context.Context, root string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "images")
	if err := cluster.BuildIronLBImages(ctx, root, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// agnhostDeployment is two agnhost netexec pods answering HTTP on 8080.
func agnhostDeployment(name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:           "agnhost",
					Image:          images.AgnhostRef,
					Args:           []string{"netexec", "--http-port=8080"},
					ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}}},
				}}},
			},
		},
	}
}

// createService creates a LoadBalancer Service for the web pods and
// returns its VIP once IronLB gave one.
func createService(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string, mutate ...func(*corev1.Service)) netip.Addr {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	if _, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var vip netip.Addr
	err := eventually(ctx, 2*time.Minute, func() error {
		s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("service %s has no address", name)
		}
		vip, err = netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return vip
}

// reach waits until the outside client gets an answer from a web pod
// through vip, then checks that both pods answer.
func reach(t *testing.T, ctx context.Context, c *cluster.Cluster, vip netip.Addr) {
	t.Helper()
	seen := map[string]bool{}
	err := eventually(ctx, 2*time.Minute, func() error {
		out, err := c.Client.Run("curl", "-sS", "-m", "2", fmt.Sprintf("http://%s/hostname", vip))
		if err != nil {
			return err
		}
		if !strings.HasPrefix(out, "web-") {
			return fmt.Errorf("answer %q is not a web pod's name", out)
		}
		seen[out] = true
		if len(seen) < 2 {
			return fmt.Errorf("only %v answered so far", slices.Sorted(mapsKeys(seen)))
		}
		return nil
	})
	if err != nil {
		t.Fatalf("from %s to http://%s/: %v", cluster.ClientIP, vip, err)
	}
}

func mapsKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func internalIP(n corev1.Node) string {
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	return ""
}

// eventually calls check every 200 ms until it returns nil or timeout
// passes, and returns its last error.
func eventually(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("after %s: %w", timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// dumpLogs shows what the cluster's components said, for a failed test.
func dumpLogs(t *testing.T, c *cluster.Cluster) {
	for _, args := range [][]string{{"get", "nodes,pods,services,endpointslices", "-A", "-o", "wide"}, {"get", "events", "-A"}, {"-n", "ironlb-system", "logs", "-l", "app.kubernetes.io/name=ironlb-ccm", "--tail=100"}} {
		out, err := c.Kubectl(context.Background(), nil, args...)
		t.Logf("kubectl %s:\n%s%v", strings.Join(args, " "), out, err)
	}
}

// logWriter sends the cluster's progress lines to the test log.
type logWriter struct{ t *testing.T }

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
