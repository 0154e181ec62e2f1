package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// The IronLB objects of the rig's two configurations.
const (
	// BGPConfig peers every node with the router and gives VIPs from a
	// BGP pool, off the nodes' subnet: the router spreads them over the
	// nodes with ECMP.
	BGPConfig = "bgp"
	// L2Config gives VIPs from a layer-2 pool on the nodes' LAN: one node
	// answers ARP for each.
	L2Config = "l2"
)

// ironlbNamespace is where deploy/ installs IronLB.
const ironlbNamespace = "ironlb-system"

// phaseIronLB installs IronLB as the install guide (docs/install.md) says: its
// images into every node's containerd, then kubectl apply --server-side
// -k deploy/. It waits until the CCM initialized every node and a speaker
// is ready on each.
func (c *Cluster) phaseIronLB(ctx context.Context) error {
	if c.opts.IronLBImages == "" {
		c.logf("no IronLB images given: IronLB is not installed, and the nodes stay uninitialized")
		return nil
	}
	for _, name := range []string{"ironlb-ccm", "ironlb-speaker"} {
		if err := LoadImage(ctx, filepath.Join(c.opts.IronLBImages, name), c.Nodes...); err != nil {
			return err
		}
	}
	if _, err := c.Kubectl(ctx, nil, "apply", "--server-side", "-k", filepath.Join(c.opts.RepoRoot, "deploy")); err != nil {
		return err
	}
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	return c.waitIronLB(ctx, cs, 5*time.Minute)
}

// waitIronLB waits until every node is initialized by the CCM (provider
// ID set, no uninitialized taint), the CCM Deployment is available and
// the speaker DaemonSet ready on every node; the error says what is not.
func (c *Cluster) waitIronLB(ctx context.Context, cs kubernetes.Interface, timeout time.Duration) error {
	return poll(ctx, timeout, func() error {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, n := range nodes.Items {
			if n.Spec.ProviderID == "" || hasTaint(n, "node.cloudprovider.kubernetes.io/uninitialized") {
				return fmt.Errorf("node %s not initialized by the CCM yet", n.Name)
			}
		}
		ccm, err := cs.AppsV1().Deployments(ironlbNamespace).Get(ctx, "ironlb-ccm", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !deploymentAvailable(ccm) {
			return fmt.Errorf("deployment ironlb-ccm: %d of %d replicas available", ccm.Status.AvailableReplicas, ccm.Status.Replicas)
		}
		ds, err := cs.AppsV1().DaemonSets(ironlbNamespace).Get(ctx, "ironlb-speaker", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ds.Status.DesiredNumberScheduled != int32(len(c.Nodes)) || ds.Status.NumberReady != ds.Status.DesiredNumberScheduled || ds.Status.UpdatedNumberScheduled != ds.Status.DesiredNumberScheduled {
			return fmt.Errorf("daemonset ironlb-speaker: %d of %d ready", ds.Status.NumberReady, len(c.Nodes))
		}
		return nil
	})
}

func hasTaint(n corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

func deploymentAvailable(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentAvailable && c.Status == corev1.ConditionTrue {
			return d.Status.UpdatedReplicas == *d.Spec.Replicas && d.Status.AvailableReplicas == *d.Spec.Replicas
		}
	}
	return false
}

// phaseReady waits until every node is Ready and kube-system's pods run
// and are ready (kube-proxy, CoreDNS, the control plane).
func (c *Cluster) phaseReady(ctx context.Context) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	return poll(ctx, 5*time.Minute, func() error {
		nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		if len(nodes.Items) != len(c.Nodes) {
			return fmt.Errorf("%d nodes registered, want %d", len(nodes.Items), len(c.Nodes))
		}
		for _, n := range nodes.Items {
			if !nodeReady(n) {
				return fmt.Errorf("node %s not Ready", n.Name)
			}
		}
		pods, err := cs.CoreV1().Pods("kube-system").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if !podReady(p) {
				return fmt.Errorf("pod kube-system/%s not ready (%s)", p.Name, p.Status.Phase)
			}
		}
		return nil
	})
}

func nodeReady(n corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll calls check every half second until it returns nil, and returns
// its last error after timeout.
func poll(ctx context.Context, timeout time.Duration, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		err := check()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("after %s: %w", timeout, err)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// configs are the objects of each configuration, and what removing it
// deletes.
var configs = map[string]struct {
	objects string
	delete  []string
}{
	BGPConfig: {
		objects: fmt.Sprintf(`apiVersion: ironlb.dev/v1alpha1
kind: BGPPeer
metadata:
  name: router
spec:
  peerAddress: %s
  peerASN: %d
  myASN: %d
---
apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: bgp
spec:
  addresses: [%s]
  bgp: {}
`, RouterIP, RouterASN, NodeASN, BGPPool),
		delete: []string{"ippool/bgp", "bgppeer/router"},
	},
	L2Config: {
		objects: fmt.Sprintf(`apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: lan
spec:
  addresses: ["%s"]
`, L2PoolRange),
		delete: []string{"ippool/lan"},
	},
}

// Configure makes config (BGPConfig or L2Config) the cluster's only IronLB
// configuration: it deletes the other's pool (and peer), then applies
// this one's, and for BGP waits until every node's session with the
// router is established.
func (c *Cluster) Configure(ctx context.Context, config string) error {
	want, ok := configs[config]
	if !ok {
		return fmt.Errorf("configuration %q: want %s or %s", config, BGPConfig, L2Config)
	}
	for name, other := range configs {
		if name == config {
			continue
		}
		args := append([]string{"delete", "--ignore-not-found", "--wait"}, other.delete...)
		if _, err := c.Kubectl(ctx, nil, args...); err != nil {
			return err
		}
	}
	if _, err := c.Kubectl(ctx, strings.NewReader(want.objects), "apply", "--server-side", "-f", "-"); err != nil {
		return err
	}
	if config != BGPConfig {
		return nil
	}
	return poll(ctx, 2*time.Minute, func() error {
		nb, err := c.net.router.Neighbors(ctx)
		if err != nil {
			return err
		}
		for i := range c.Nodes {
			if s := nb[NodeIP(i+1).String()]; s.State != "Established" {
				return fmt.Errorf("the router's session with %s: %q", NodeName(i+1), s.State)
			}
		}
		return nil
	})
}

// WriteFile writes a file of the cluster's folder (for kubeconfigs and
// reports).
func (c *Cluster) WriteFile(name string, data []byte) error {
	return os.WriteFile(filepath.Join(c.Dir, name), data, 0o600)
}

// AppVersion is IronLB's version as the install files name it: the chart's
// appVersion, the tag deploy/kustomization.yaml gives the images
// (TestImagesPinnedToVersion keeps them equal).
func AppVersion(repoRoot string) (string, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "deploy", "chart", "ironlb", "Chart.yaml"))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "appVersion:"); ok {
			return strings.Trim(strings.TrimSpace(v), `"'`), nil
		}
	}
	return "", fmt.Errorf("no appVersion in the chart")
}

// checkIronLBImages makes sure the layouts are the images deploy/ runs:
// ghcr.io/ironlb/<program>:<appVersion>.
func checkIronLBImages(dir, repoRoot string) error {
	version, err := AppVersion(repoRoot)
	if err != nil {
		return err
	}
	for _, name := range []string{"ironlb-ccm", "ironlb-speaker"} {
		b, err := os.ReadFile(filepath.Join(dir, name, "index.json"))
		if err != nil {
			return fmt.Errorf("IronLB's images: %w (make image IMAGE_TAG=%s)", err, version)
		}
		want := "ghcr.io/ironlb/" + name + ":" + version
		if !strings.Contains(string(b), `"`+want+`"`) {
			return fmt.Errorf("%s/%s is not %s, which deploy/ runs: build it with make image IMAGE_TAG=%s", dir, name, want, version)
		}
	}
	return nil
}

// BuildIronLBImages builds IronLB's images from the checkout in repoRoot
// into out as make image does (linux/amd64 only), tagged as deploy/ names
// them: the IronLBImages of Options.
func BuildIronLBImages(ctx context.Context, repoRoot, out string) error {
	version, err := AppVersion(repoRoot)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "run", "./build/mkimage", "build", "-out", out, "-platforms", "linux/amd64",
		"-tag", version, "-version", version, "-revision", "test", "-epoch", "0",
		"-ldflags", "-s -w -X github.com/ironlb/ironlb/internal/version.Version="+version)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building IronLB's images: %w\n%s", err, b)
	}
	return nil
}
