// Package e2e runs IronLB's real binaries against a real kube-apiserver.
package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

func skipShort(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end: runs etcd, kube-apiserver and ironlb-ccm")
	}
}

// installDeploy applies deploy/ (kubectl apply -k) and returns a kubeconfig
// holding a token of the ironlb-ccm ServiceAccount, so the CCM runs with
// exactly the permissions IronLB ships.
func installDeploy(t *testing.T, ctx context.Context, cp *controlplane.ControlPlane) string {
	t.Helper()
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy")); err != nil {
		t.Fatalf("applying deploy/: %v\n%s", err, out)
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "ironlb-system", "ironlb-ccm")
	if err != nil {
		t.Fatal(err)
	}
	return kubeconfig
}

func TestNodeInitialization(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	kubeconfig := installDeploy(t, ctx, cp)
	cloudConfig := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(cloudConfig, []byte("instances:\n  defaultZone: lab-zone\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ccm := rig.StartCCMForTest(t, rig.CCMOptions{
		Kubeconfig:  kubeconfig,
		LeaderElect: true,
		Args:        []string{"--cloud-config=" + cloudConfig},
	})

	type want struct {
		providerID string
		addresses  []corev1.NodeAddress
		labels     map[string]string
	}
	nodes := []struct {
		name, providedIP string
		labels           map[string]string
		providerID       string // set by the kubelet's --provider-id
		want             want
	}{
		{
			name: "node-v4", providedIP: "192.0.2.11",
			labels: map[string]string{corev1.LabelTopologyZone: "rack-1", corev1.LabelInstanceTypeStable: "r640"},
			want: want{
				providerID: "ironlb://node-v4",
				addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "192.0.2.11"}, {Type: corev1.NodeHostName, Address: "node-v4"}},
				labels:     map[string]string{corev1.LabelTopologyZone: "rack-1", corev1.LabelInstanceTypeStable: "r640"},
			},
		},
		{
			name: "node-v6", providedIP: "2001:db8::12",
			want: want{
				providerID: "ironlb://node-v6",
				addresses:  []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "2001:db8::12"}, {Type: corev1.NodeHostName, Address: "node-v6"}},
				labels:     map[string]string{corev1.LabelTopologyZone: "lab-zone"},
			},
		},
		{
			name: "node-dual", providedIP: "192.0.2.13,2001:db8::13",
			want: want{
				providerID: "ironlb://node-dual",
				addresses: []corev1.NodeAddress{
					{Type: corev1.NodeInternalIP, Address: "192.0.2.13"},
					{Type: corev1.NodeInternalIP, Address: "2001:db8::13"},
					{Type: corev1.NodeHostName, Address: "node-dual"},
				},
				labels: map[string]string{corev1.LabelTopologyZone: "lab-zone"},
			},
		},
	}
	start := time.Now()
	for _, n := range nodes {
		if _, err := rig.RegisterNode(ctx, cp.Client, n.name, n.providedIP, n.labels); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rig.RegisterNode(ctx, cp.Client, "node-bad", "192.0.2.300", nil); err != nil {
		t.Fatal(err)
	}

	for _, n := range nodes {
		err := rig.Eventually(30*time.Second, func() error {
			node, err := cp.Client.CoreV1().Nodes().Get(ctx, n.name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !rig.Initialized(node) {
				return fmt.Errorf("node %s still tainted", n.name)
			}
			got := want{providerID: node.Spec.ProviderID, addresses: node.Status.Addresses, labels: map[string]string{}}
			for k := range n.want.labels {
				got.labels[k] = node.Labels[k]
			}
			if diff := cmp.Diff(n.want, got, cmp.AllowUnexported(want{})); diff != "" {
				return fmt.Errorf("node %s (-want +got):\n%s", n.name, diff)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("three nodes initialized %s after registration", time.Since(start).Round(time.Millisecond))

	// The malformed node keeps its taint and gets a Warning Event naming the IP.
	err := rig.Eventually(30*time.Second, func() error {
		return findEvent(ctx, cp, "Node", "node-bad", "", corev1.EventTypeWarning, "InvalidNodeIP", `"192.0.2.300"`)
	})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := cp.Client.CoreV1().Nodes().Get(ctx, "node-bad", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rig.Initialized(bad) || bad.Spec.ProviderID != "" {
		t.Fatalf("node-bad was initialized (providerID %q, taints %v); want it left tainted", bad.Spec.ProviderID, bad.Spec.Taints)
	}
	if !ccm.LogContains(`node="node-bad"`) {
		t.Errorf("CCM log does not name node-bad:\n%s", ccm.Tail(20))
	}

	// A LoadBalancer Service is refused with an explanation on the Service.
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	if _, err := cp.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = rig.Eventually(30*time.Second, func() error {
		return findEvent(ctx, cp, "Service", "web", "default", corev1.EventTypeWarning, "SyncLoadBalancerFailed", "no IP pools configured")
	})
	if err != nil {
		t.Fatal(err)
	}

	// SIGTERM: a clean exit.
	if err := ccm.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := ccm.Wait(20 * time.Second); err != nil {
		t.Fatal(err)
	}
	if code := ccm.ExitCode(); code != 0 {
		t.Fatalf("exit code after SIGTERM = %d, want 0; log tail:\n%s", code, ccm.Tail(20))
	}
}

// TestKeepsKubeletProviderID checks that a provider ID the kubelet set with
// --provider-id survives initialization.
func TestKeepsKubeletProviderID(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	kubeconfig := installDeploy(t, ctx, cp)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "preset", Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "198.51.100.7"}},
		Spec: corev1.NodeSpec{
			ProviderID: "metal://rack4/slot2",
			Taints:     []corev1.Taint{{Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: corev1.TaintEffectNoSchedule}},
		},
	}
	if _, err := cp.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rig.StartCCMForTest(t, rig.CCMOptions{Kubeconfig: kubeconfig})
	err := rig.Eventually(30*time.Second, func() error {
		n, err := cp.Client.CoreV1().Nodes().Get(ctx, "preset", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !rig.Initialized(n) {
			return fmt.Errorf("still tainted")
		}
		if n.Spec.ProviderID != "metal://rack4/slot2" {
			return fmt.Errorf("providerID = %q, want the kubelet's metal://rack4/slot2", n.Spec.ProviderID)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestLeaderElection(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	kubeconfig := installDeploy(t, ctx, cp)
	logDir := t.TempDir()
	ccms := []*procs.Process{
		rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-a", Kubeconfig: kubeconfig, LogDir: logDir, LeaderElect: true}),
		rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-b", Kubeconfig: kubeconfig, LogDir: logDir, LeaderElect: true}),
	}
	const acquired = `"Successfully acquired lease" lock="ironlb-system/ironlb-ccm"`
	var leader, follower *procs.Process
	err := rig.Eventually(30*time.Second, func() error {
		var leaders []*procs.Process
		for _, p := range ccms {
			if p.LogContains(acquired) {
				leaders = append(leaders, p)
			}
		}
		if len(leaders) != 1 {
			return fmt.Errorf("%d processes hold the lease, want 1", len(leaders))
		}
		leader = leaders[0]
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	follower = ccms[0]
	if follower == leader {
		follower = ccms[1]
	}

	waitInitialized := func(name string) {
		t.Helper()
		err := rig.Eventually(30*time.Second, func() error {
			n, err := cp.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !rig.Initialized(n) {
				return fmt.Errorf("node %s still tainted", name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := rig.RegisterNode(ctx, cp.Client, "first", "192.0.2.21", nil); err != nil {
		t.Fatal(err)
	}
	waitInitialized("first")
	// The log line follows the Node update the test just saw.
	if leader.WaitForLog("Successfully initialized node first", 5*time.Second) != nil {
		t.Errorf("the leader %s did not log initializing node first", leader.Name)
	}
	if follower.LogContains("Initializing node") || follower.LogContains(acquired) {
		t.Fatalf("follower %s acted while not leading:\n%s", follower.Name, follower.Tail(30))
	}

	killed := time.Now()
	if err := leader.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := follower.WaitForLog(acquired, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s took the lease %s after %s was killed", follower.Name, time.Since(killed).Round(time.Millisecond), leader.Name)
	if _, err := rig.RegisterNode(ctx, cp.Client, "second", "192.0.2.22", nil); err != nil {
		t.Fatal(err)
	}
	waitInitialized("second")
	if follower.WaitForLog("Successfully initialized node second", 5*time.Second) != nil {
		t.Errorf("the new leader %s did not log initializing node second", follower.Name)
	}
}

func TestBadCloudConfigRejected(t *testing.T) {
	skipShort(t)
	cp := controlplane.ForTest(t)
	for _, tc := range []struct {
		name, config, wantLog string
	}{
		{"unknown field", "instances:\n  defaultZoen: a\n", `unknown field \"instances.defaultZoen\"`},
		{"bad value", "instances:\n  defaultZone: \"not a label!\"\n", `instances.defaultZone \"not a label!\"`},
		{"not yaml", "instances: [\n", "parsing cloud config"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "cloud.yaml")
			if err := os.WriteFile(path, []byte(tc.config), 0o644); err != nil {
				t.Fatal(err)
			}
			p := rig.StartCCMForTest(t, rig.CCMOptions{Kubeconfig: cp.KubeconfigPath, Args: []string{"--cloud-config=" + path}})
			if err := p.Wait(30 * time.Second); err != nil {
				t.Fatalf("the CCM kept running with a bad cloud config: %v", err)
			}
			if p.ExitCode() == 0 {
				t.Errorf("exit code 0, want non-zero")
			}
			if !p.LogContains(tc.wantLog) {
				t.Errorf("log does not contain %q:\n%s", tc.wantLog, p.Tail(10))
			}
		})
	}
}

// findEvent looks for an Event about kind/name whose message contains msg.
func findEvent(ctx context.Context, cp *controlplane.ControlPlane, kind, name, namespace, typ, reason, msg string) error {
	sel := fields.Set{"involvedObject.kind": kind, "involvedObject.name": name}.AsSelector().String()
	events, err := cp.Client.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		return err
	}
	var seen []string
	for _, e := range events.Items {
		if e.Type == typ && e.Reason == reason && strings.Contains(e.Message, msg) {
			return nil
		}
		seen = append(seen, fmt.Sprintf("%s %s: %s", e.Type, e.Reason, e.Message))
	}
	slices.Sort(seen)
	return fmt.Errorf("no %s %s Event on %s %s/%s containing %q; have %q", typ, reason, kind, namespace, name, msg, seen)
}
