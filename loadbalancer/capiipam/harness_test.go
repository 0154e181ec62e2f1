package capiipam_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
	"github.com/ironlb/ironlb/loadbalancer"
	"github.com/ironlb/ironlb/loadbalancer/capiipam"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/capicrds"
	"github.com/ironlb/ironlb/test/controlplane"
)

// env is a real API server with IronLB's and Cluster API's CRDs and the
// CCM's RBAC; clients act as the CCM's ServiceAccount, admin as an admin.
type env struct {
	cp     *controlplane.ControlPlane
	client kubernetes.Interface
	dyn    dynamic.Interface
	admin  dynamic.Interface
}

func newEnv(t testing.TB, ctx context.Context) *env {
	t.Helper()
	crds, err := capicrds.Paths(ctx, capicrds.Claims, capicrds.Addresses, capicrds.Clusters)
	if err != nil {
		t.Fatal(err)
	}
	root, err := binaries.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	deploy := filepath.Join(root, "deploy")
	cp := controlplane.ForTest(t)
	args := []string{"apply", "--server-side", "-f", filepath.Join(deploy, "crds", "ironlb.dev_ippools.yaml")}
	for _, c := range crds {
		args = append(args, "-f", c)
	}
	for _, a := range [][]string{args,
		{"wait", "--for=condition=Established", "--timeout=60s", "crd/ippools.ironlb.dev", "crd/ipaddressclaims.ipam.cluster.x-k8s.io",
			"crd/ipaddresses.ipam.cluster.x-k8s.io", "crd/clusters.cluster.x-k8s.io"},
		{"apply", "--server-side", "-f", filepath.Join(deploy, "namespace.yaml"), "-f", filepath.Join(deploy, "ccm", "serviceaccount.yaml"), "-f", filepath.Join(deploy, "ccm", "rbac.yaml")},
	} {
		if out, err := cp.Kubectl(ctx, a...); err != nil {
			t.Fatalf("kubectl %v: %v\n%s", a, err, out)
		}
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "ironlb-system", "ironlb-ccm")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	e := &env{cp: cp}
	if e.client, err = kubernetes.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	if e.dyn, err = dynamic.NewForConfig(cfg); err != nil {
		t.Fatal(err)
	}
	admin := *cp.Config
	admin.QPS, admin.Burst = 200, 400
	if e.admin, err = dynamic.NewForConfig(&admin); err != nil {
		t.Fatal(err)
	}
	return e
}

// stack is one CCM's allocator, IPPool controller, Balancer and claim
// controller, as NewComponents wires them.
type stack struct {
	alloc  *ipam.Allocator
	bal    *loadbalancer.Balancer
	claims *capiipam.Controller
	events *events
	cancel context.CancelFunc
}

func (e *env) start(t testing.TB, ctx context.Context) *stack {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	s := &stack{alloc: ipam.New(), events: &events{}, cancel: cancel}
	pools, err := ippool.New(e.dyn, s.alloc, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s.claims = capiipam.New(e.dyn, e.client.Discovery(), s.alloc, pools, s.events, capiipam.Options{RetryInterval: 300 * time.Millisecond, Workers: 2})
	s.bal = loadbalancer.New(s.alloc, pools, s.events, loadbalancer.WithRestorer(s.claims.Restore), loadbalancer.WithRetry(100*time.Millisecond))
	factory := informers.NewSharedInformerFactory(e.client, 0)
	s.bal.SetInformers(factory)
	s.claims.SetInformers(factory)
	factory.Start(ctx.Done())
	go pools.Run(ctx)
	go func() { _ = s.bal.Run(ctx) }()
	go s.claims.Run(ctx, s.bal.Restored())
	t.Cleanup(cancel)
	select {
	case <-s.bal.Restored():
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	return s
}

// events records the Events components record, for tests to wait on.
type events struct {
	mu   sync.Mutex
	list []string // "<namespace>/<name> <type> <reason> <message>"
}

func (r *events) Event(obj runtime.Object, eventType, reason, message string) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.list = append(r.list, fmt.Sprintf("%s/%s %s %s %s", m.GetNamespace(), m.GetName(), eventType, reason, message))
}

func (r *events) Eventf(obj runtime.Object, eventType, reason, format string, args ...any) {
	r.Event(obj, eventType, reason, fmt.Sprintf(format, args...))
}

func (r *events) AnnotatedEventf(obj runtime.Object, _ map[string]string, eventType, reason, format string, args ...any) {
	r.Eventf(obj, eventType, reason, format, args...)
}

// has reports whether an Event starting with prefix was recorded.
func (r *events) has(prefix string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, e := range r.list {
		if strings.HasPrefix(e, prefix) {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or a minute passes.
func eventually(t testing.TB, ctx context.Context, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		ok, err := cond()
		last = err
		return ok && err == nil, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v (last error: %v)", what, err, last)
	}
}

func toU(t testing.TB, obj any) *unstructured.Unstructured {
	t.Helper()
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &unstructured.Unstructured{Object: m}
}

// pool creates an IPPool as an admin does.
func (e *env) pool(t testing.TB, ctx context.Context, name string, capi *v1alpha1.ClusterAPI, alloc *v1alpha1.ServiceAllocation, addrs ...string) {
	t.Helper()
	p := &v1alpha1.IPPool{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "IPPool"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
	off := false
	p.Spec.AutoAssign = &off
	p.Spec.ClusterAPI, p.Spec.ServiceAllocation = capi, alloc
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.AddressRange(a))
	}
	if _, err := e.admin.Resource(v1alpha1.IPPoolResource).Create(ctx, toU(t, p), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// editPool changes an IPPool's spec with fn.
func (e *env) editPool(t testing.TB, ctx context.Context, name string, fn func(*v1alpha1.IPPoolSpec)) {
	t.Helper()
	u, err := e.admin.Resource(v1alpha1.IPPoolResource).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := v1alpha1.FromUnstructured[v1alpha1.IPPool](u)
	if err != nil {
		t.Fatal(err)
	}
	fn(&p.Spec)
	if _, err := e.admin.Resource(v1alpha1.IPPoolResource).Update(ctx, toU(t, p), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func (e *env) namespace(t testing.TB, ctx context.Context, name string, labels map[string]string) {
	t.Helper()
	if _, err := e.cp.Client.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// claim creates an IPAddressClaim naming pool, as Cluster API does.
func (e *env) claim(t testing.TB, ctx context.Context, ns, name, pool string, mod func(*ipamv1.IPAddressClaim)) *ipamv1.IPAddressClaim {
	t.Helper()
	c := &ipamv1.IPAddressClaim{
		TypeMeta:   metav1.TypeMeta{APIVersion: ipamv1.GroupVersion.String(), Kind: "IPAddressClaim"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       ipamv1.IPAddressClaimSpec{PoolRef: ipamv1.IPPoolReference{APIGroup: "ironlb.dev", Kind: "IPPool", Name: pool}},
	}
	if mod != nil {
		mod(c)
	}
	u, err := e.admin.Resource(capiipam.ClaimResource).Namespace(ns).Create(ctx, toU(t, c), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out, err := decode[ipamv1.IPAddressClaim](u)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) getClaim(ctx context.Context, ns, name string) (*ipamv1.IPAddressClaim, error) {
	u, err := e.admin.Resource(capiipam.ClaimResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return decode[ipamv1.IPAddressClaim](u)
}

func (e *env) getAddress(ctx context.Context, ns, name string) (*ipamv1.IPAddress, error) {
	u, err := e.admin.Resource(capiipam.AddressResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return decode[ipamv1.IPAddress](u)
}

// ready returns the claim's Ready condition once its reason is reason.
func (e *env) waitReason(t testing.TB, ctx context.Context, ns, name string, reason capiipam.Reason) *metav1.Condition {
	t.Helper()
	var cond *metav1.Condition
	eventually(t, ctx, fmt.Sprintf("claim %s/%s Ready reason %s", ns, name, reason), func() (bool, error) {
		c, err := e.getClaim(ctx, ns, name)
		if err != nil {
			return false, err
		}
		cond = meta.FindStatusCondition(c.Status.Conditions, ipamv1.IPAddressClaimReadyCondition)
		if cond != nil && cond.Reason != string(reason) {
			return false, fmt.Errorf("reason %s: %s", cond.Reason, cond.Message)
		}
		return cond != nil, nil
	})
	return cond
}

// service creates a LoadBalancer Service naming pool and has the Balancer
// answer it as the service controller would (status written back).
func (e *env) service(t testing.TB, ctx context.Context, s *stack, ns, name, pool string) (*v1.Service, error) {
	t.Helper()
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{loadbalancer.AnnotationPool: pool}},
		Spec: v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer, Ports: []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol}},
	}
	svc, err := e.cp.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := s.bal.EnsureLoadBalancer(ctx, "kubernetes", svc, nil)
	if err != nil {
		return svc, err
	}
	svc.Status.LoadBalancer = *st
	if svc, err = e.cp.Client.CoreV1().Services(ns).UpdateStatus(ctx, svc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return svc, nil
}

// decode converts an unstructured object into T.
func decode[T any](u *unstructured.Unstructured) (*T, error) {
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
