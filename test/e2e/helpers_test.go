package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

// cluster is a control plane with deploy/ applied and ironlb-ccm running
// with its ServiceAccount's token.
type cluster struct {
	t          *testing.T
	ctx        context.Context
	cp         *controlplane.ControlPlane
	kubeconfig string
	ccm        *procs.Process
	pools      dynamic.ResourceInterface
}

func newCluster(t *testing.T, ctx context.Context, ccmArgs ...string) *cluster {
	t.Helper()
	cp := controlplane.ForTest(t)
	c := &cluster{t: t, ctx: ctx, cp: cp, kubeconfig: installDeploy(t, ctx, cp)}
	c.pools = dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)
	c.ccm = rig.StartCCMForTest(t, rig.CCMOptions{Kubeconfig: c.kubeconfig, LeaderElect: true, Args: ccmArgs})
	return c
}

// cloudConfigFlag writes a cloud config and returns the CCM flag naming
// it.
func cloudConfigFlag(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cloud.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return "--cloud-config=" + path
}

// applyPool creates or replaces an IPPool from YAML of its spec.
func (c *cluster) applyPool(name, specYAML string) {
	c.t.Helper()
	var spec map[string]any
	if err := yaml.Unmarshal([]byte(specYAML), &spec); err != nil {
		c.t.Fatal(err)
	}
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "ironlb.dev/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": name}, "spec": spec,
	}}
	cur, err := c.pools.Get(c.ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = c.pools.Create(c.ctx, obj, metav1.CreateOptions{})
	} else if err == nil {
		obj.SetResourceVersion(cur.GetResourceVersion())
		_, err = c.pools.Update(c.ctx, obj, metav1.UpdateOptions{})
	}
	if err != nil {
		c.t.Fatalf("applying IPPool %s: %v", name, err)
	}
}

func (c *cluster) pool(name string) *v1alpha1.IPPool {
	c.t.Helper()
	u, err := c.pools.Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	var p v1alpha1.IPPool
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &p); err != nil {
		c.t.Fatal(err)
	}
	return &p
}

// lbService returns a LoadBalancer Service on port 80.
func lbService(namespace, name string, annotations map[string]string, mutate ...func(*corev1.Service)) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, Annotations: annotations},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func (c *cluster) createService(svc *corev1.Service) *corev1.Service {
	c.t.Helper()
	created, err := c.cp.Client.CoreV1().Services(svc.Namespace).Create(c.ctx, svc, metav1.CreateOptions{})
	if err != nil {
		c.t.Fatalf("creating Service %s/%s: %v", svc.Namespace, svc.Name, err)
	}
	return created
}

func (c *cluster) createNamespace(name string, labels map[string]string) {
	c.t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.cp.Client.CoreV1().Namespaces().Create(c.ctx, ns, metav1.CreateOptions{}); err != nil {
		c.t.Fatal(err)
	}
}

// ingress returns the addresses in a Service's status.
func ingress(svc *corev1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		out = append(out, ing.IP)
	}
	return out
}

// waitIngress waits until the Service's status lists n addresses.
func (c *cluster) waitIngress(namespace, name string, n int, timeout time.Duration) []string {
	c.t.Helper()
	var got []string
	err := rig.Eventually(timeout, func() error {
		svc, err := c.cp.Client.CoreV1().Services(namespace).Get(c.ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		got = ingress(svc)
		if len(got) != n {
			return fmt.Errorf("Service %s/%s has ingress %v, want %d addresses", namespace, name, got, n)
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	return got
}

// stillPending checks that a Service has no address after the CCM failed
// to give it one twice (the signal: a retry happened, 3 s after the first
// failure).
func (c *cluster) stillPending(namespace, name string) {
	c.t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		evs, err := c.cp.Client.CoreV1().Events(namespace).List(c.ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var n int32
		for _, e := range evs.Items {
			if e.InvolvedObject.Name == name && e.Reason == "SyncLoadBalancerFailed" {
				n += max(e.Count, 1)
			}
		}
		if n < 2 {
			return fmt.Errorf("Service %s/%s: %d failed syncs, waiting for a retry", namespace, name, n)
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
	svc, err := c.cp.Client.CoreV1().Services(namespace).Get(c.ctx, name, metav1.GetOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	if got := ingress(svc); len(got) > 0 {
		c.t.Fatalf("Service %s/%s got %v; want it pending", namespace, name, got)
	}
}

// waitEvent waits for an Event on the Service with the given reason whose
// message contains msg.
// noEventMentions fails if an Event in namespace mentions any of words
// (another tenant's names and keys).
func (c *cluster) noEventMentions(namespace string, words ...string) {
	c.t.Helper()
	events, err := c.cp.Client.CoreV1().Events(namespace).List(c.ctx, metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, e := range events.Items {
		for _, w := range words {
			if strings.Contains(e.Message, w) {
				c.t.Errorf("Event %s %s on %s in namespace %s mentions %q: %s", e.Type, e.Reason, e.InvolvedObject.Name, namespace, w, e.Message)
			}
		}
	}
}

func (c *cluster) waitEvent(namespace, name, typ, reason, msg string) {
	c.t.Helper()
	err := rig.Eventually(30*time.Second, func() error {
		return findEvent(c.ctx, c.cp, "Service", name, namespace, typ, reason, msg)
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

func inPrefix(t *testing.T, addr, prefix string) bool {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil {
		t.Fatalf("bad address %q: %v", addr, err)
	}
	return netip.MustParsePrefix(prefix).Contains(a)
}

// checkNoSharedAddresses fails if two Services hold one address, unless
// both are in mayShare.
func (c *cluster) checkNoSharedAddresses(mayShare map[string]bool) {
	c.t.Helper()
	svcs, err := c.cp.Client.CoreV1().Services("").List(c.ctx, metav1.ListOptions{})
	if err != nil {
		c.t.Fatal(err)
	}
	holders := map[string][]string{}
	for _, s := range svcs.Items {
		for _, ip := range ingress(&s) {
			holders[ip] = append(holders[ip], s.Namespace+"/"+s.Name)
		}
	}
	for ip, names := range holders {
		if len(names) < 2 {
			continue
		}
		for _, n := range names {
			if !mayShare[n] {
				c.t.Errorf("address %s is held by %v", ip, names)
				break
			}
		}
	}
}
