package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/loadbalancer"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/test/cluster"
)

// The migration walkthrough's names and addresses.
const (
	// metallbRange is MetalLB's pool, on the LAN off IronLB's layer-2
	// pool (cluster.L2PoolRange) and off the nodes, the router and the
	// control-plane VIP; IronLB's pool "metallb" covers it too from step
	// c, as `kubectl ironlb convert metallb --side-by-side` would make it.
	metallbFirst = "192.0.2.160"
	metallbLast  = "192.0.2.169"
)

// metallbOnlyConfig is IronLB's cloud config of the migration: serve only
// Services of IronLB's class, MetalLB keeps the class-less ones.
const metallbOnlyConfig = `loadBalancerClass:
  name: ironlb.dev/ironlb
  only: true
`

// testMetalLBMigration is the README's one-Service-at-a-time migration
// from MetalLB, end to end on the real cluster: MetalLB v0.16.2 installed
// beside IronLB, each serving its own Services; MetalLB's pool frozen and
// covered by IronLB's; a Service moved from MetalLB to IronLB keeping its
// address (the outside client's outage measured); the CCM restarted.
func testMetalLBMigration(t *testing.T, ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface) {
	start := time.Now()
	defer func() { t.Logf("the MetalLB migration took %s", time.Since(start).Round(time.Second)) }()
	mlbRange := addrRange(metallbFirst, metallbLast)
	l2First, l2Last, _ := strings.Cut(cluster.L2PoolRange, "-")
	l2Range := addrRange(l2First, l2Last)

	// a. The class-less Services IronLB served so far go (in a real
	// migration IronLB never served them), IronLB serves only its class,
	// MetalLB comes with its pool.
	if err := c.Configure(ctx, cluster.L2Config); err != nil {
		t.Fatal(err)
	}
	deleteClasslessServices(t, ctx, cs)
	step := time.Now()
	if err := c.SetCloudConfig(ctx, metallbOnlyConfig); err != nil {
		t.Fatal(err)
	}
	t.Logf("a. IronLB runs with only: true (%s)", time.Since(step).Round(time.Second))
	step = time.Now()
	if err := c.InstallMetalLB(ctx); err != nil {
		t.Fatal(err)
	}
	applyYAML(t, ctx, c, fmt.Sprintf(metallbPool, "true"))
	// MetalLB's validating webhook answers: it refuses a second pool over
	// the same range (only the webhook checks overlaps).
	if _, err := c.Kubectl(ctx, strings.NewReader(metallbOverlapPool), "create", "--dry-run=server", "-f", "-"); err == nil || !strings.Contains(err.Error(), "ipaddresspoolvalidationwebhook.metallb.io") {
		t.Fatalf("a pool overlapping MetalLB's: %v; want a denial by MetalLB's webhook", err)
	}
	t.Logf("a. MetalLB %s installed with its pool %s-%s (%s)", cluster.MetalLBVersion, metallbFirst, metallbLast, time.Since(step).Round(time.Second))

	// b. A foreign class first, then one Service for each: once both
	// later ones have their addresses, both controllers went past the
	// foreign one.
	other := newWebService("web-other", ptr.To("example.com/other"))
	if _, err := cs.CoreV1().Services("default").Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mlbVIP := createService(t, ctx, cs, "web-metallb")
	if !mlbRange(mlbVIP) {
		t.Fatalf("web-metallb got %s, outside MetalLB's pool %s-%s", mlbVIP, metallbFirst, metallbLast)
	}
	ilbVIP := createService(t, ctx, cs, "web-ironlb", withClass(lbclass.DefaultName))
	if !l2Range(ilbVIP) {
		t.Fatalf("web-ironlb got %s, outside IronLB's pool %s", ilbVIP, cluster.L2PoolRange)
	}
	checkNotIronLBs(t, ctx, cs, "web-metallb")
	checkMetalLBs(t, ctx, cs, "web-metallb")
	waitMetalLBAnnounces(t, ctx, c, "web-metallb", true)
	checkIronLBs(t, ctx, cs, "web-ironlb")
	reach(t, ctx, c, mlbVIP)
	reach(t, ctx, c, ilbVIP)
	checkUntouched(t, ctx, cs, "web-other")
	t.Logf("b. web-metallb %s from MetalLB, web-ironlb %s from IronLB, both reached; web-other pending and untouched", mlbVIP, ilbVIP)

	// c. MetalLB's pool frozen, IronLB's covering it: IronLB hands out
	// the pool's other addresses, never the one MetalLB gave (the lowest,
	// which IronLB would give first).
	applyYAML(t, ctx, c, fmt.Sprintf(metallbPool, "false"))
	applyYAML(t, ctx, c, ironlbMetalLBPool)
	newVIP := createService(t, ctx, cs, "web-new", withClass(lbclass.DefaultName), withAnnotation(loadbalancer.AnnotationPool, "metallb"))
	if !mlbRange(newVIP) || newVIP == mlbVIP {
		t.Fatalf("web-new got %s from IronLB's pool over %s-%s: want another address than web-metallb's %s", newVIP, metallbFirst, metallbLast, mlbVIP)
	}
	checkIronLBs(t, ctx, cs, "web-new")
	reach(t, ctx, c, newVIP)
	if got := serviceVIP(t, ctx, cs, "web-metallb"); got != mlbVIP {
		t.Fatalf("web-metallb's address changed to %s, want %s", got, mlbVIP)
	}
	t.Logf("c. MetalLB's pool frozen; web-new got %s from IronLB's pool over the same range, not web-metallb's %s", newVIP, mlbVIP)

	// d. web-metallb moves to IronLB with its address.
	prober := startCurlProber(c, mlbVIP, 50*time.Millisecond)
	step = time.Now()
	// The API server clears the status with the type; MetalLB's speaker
	// withdraws (its ServiceL2Status goes) once MetalLB saw the change.
	patchService(t, ctx, cs, "web-metallb", `{"spec":{"type":"ClusterIP"}}`)
	waitMetalLBAnnounces(t, ctx, c, "web-metallb", false)
	patch, _ := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{loadbalancer.AnnotationIPs: mlbVIP.String()}},
		"spec":     map[string]any{"type": "LoadBalancer", "loadBalancerClass": lbclass.DefaultName},
	})
	patchService(t, ctx, cs, "web-metallb", string(patch))
	if got := waitServiceVIP(t, ctx, cs, "web-metallb"); got != mlbVIP {
		t.Fatalf("web-metallb got %s from IronLB, want its old address %s", got, mlbVIP)
	}
	checkIronLBs(t, ctx, cs, "web-metallb")
	reach(t, ctx, c, mlbVIP)
	moved := time.Since(step)
	outage, failed, probes := prober.stop()
	if failed > 0 && outage == 0 {
		t.Errorf("the client's requests to %s failed from some point on and never succeeded again (%d of %d failed)", mlbVIP, failed, probes)
	}
	t.Logf("d. web-metallb moved to IronLB keeping %s in %s; the client's outage: %s (%d of %d requests failed)", mlbVIP, moved.Round(time.Millisecond), outage.Round(time.Millisecond), failed, probes)

	// e. The CCM leader's pod deleted: the new leader keeps every
	// address and releases none.
	want := map[string]netip.Addr{"web-ironlb": ilbVIP, "web-new": newVIP, "web-metallb": mlbVIP}
	step = time.Now()
	restartCCMLeader(t, ctx, c, cs)
	// Once the new leader served a Service created now, it went through
	// the ones before.
	afterVIP := createService(t, ctx, cs, "web-after-restart", withClass(lbclass.DefaultName))
	for name, vip := range want {
		if got := serviceVIP(t, ctx, cs, name); got != vip {
			t.Errorf("after the CCM's restart %s has %s, want %s", name, got, vip)
		}
		checkIronLBs(t, ctx, cs, name)
		for _, e := range serviceEvents(t, ctx, cs, name) {
			if e.Reason == loadbalancer.ReasonIPReleased {
				t.Errorf("%s: Event %s %q from %s", name, e.Reason, e.Message, e.Source.Component)
			}
		}
	}
	checkUntouched(t, ctx, cs, "web-other")
	t.Logf("e. CCM restarted (%s): web-after-restart got %s, the others kept %v, no IPReleased", time.Since(step).Round(time.Second), afterVIP, want)
}

// metallbPool is MetalLB's pool and layer-2 advertisement; %s is
// autoAssign ("false": frozen).
const metallbPool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: lan
  namespace: metallb-system
spec:
  addresses: ["` + metallbFirst + `-` + metallbLast + `"]
  autoAssign: %s
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata:
  name: lan
  namespace: metallb-system
spec:
  ipAddressPools: [lan]
`

// metallbOverlapPool overlaps metallbPool's pool.
const metallbOverlapPool = `apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata:
  name: overlap
  namespace: metallb-system
spec:
  addresses: ["` + metallbFirst + `/32"]
`

// ironlbMetalLBPool is IronLB's layer-2 pool over MetalLB's range.
const ironlbMetalLBPool = `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata:
  name: metallb
spec:
  addresses: ["` + metallbFirst + `-` + metallbLast + `"]
`

func applyYAML(t *testing.T, ctx context.Context, c *cluster.Cluster, yaml string) {
	t.Helper()
	if _, err := c.Kubectl(ctx, strings.NewReader(yaml), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatal(err)
	}
}

// addrRange returns whether an address is in first-last.
func addrRange(first, last string) func(netip.Addr) bool {
	f, l := netip.MustParseAddr(first), netip.MustParseAddr(last)
	return func(a netip.Addr) bool { return a.Compare(f) >= 0 && a.Compare(l) <= 0 }
}

// newWebService is a LoadBalancer Service for the web pods.
func newWebService(name string, class *string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
	s.Spec.LoadBalancerClass = class
	return s
}

func withClass(class string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class }
}

func withAnnotation(k, v string) func(*corev1.Service) {
	return func(s *corev1.Service) { s.Annotations = map[string]string{k: v} }
}

// deleteClasslessServices deletes the LoadBalancer Services without a
// class of the namespace default and waits until they are gone (IronLB
// removed its finalizer).
func deleteClasslessServices(t *testing.T, ctx context.Context, cs kubernetes.Interface) {
	t.Helper()
	list, err := cs.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range list.Items {
		if s.Spec.Type == corev1.ServiceTypeLoadBalancer && s.Spec.LoadBalancerClass == nil {
			if err := cs.CoreV1().Services("default").Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			names = append(names, s.Name)
		}
	}
	err = eventually(ctx, time.Minute, func() error {
		for _, n := range names {
			if _, err := cs.CoreV1().Services("default").Get(ctx, n, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("service %s still there", n)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func getService(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) *corev1.Service {
	t.Helper()
	s, err := cs.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// serviceVIP is the Service's first status address (invalid if none).
func serviceVIP(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) netip.Addr {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if len(s.Status.LoadBalancer.Ingress) == 0 {
		return netip.Addr{}
	}
	a, _ := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
	return a
}

// waitServiceVIP waits until the Service has an address and returns it.
func waitServiceVIP(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) netip.Addr {
	t.Helper()
	var vip netip.Addr
	err := eventually(ctx, 2*time.Minute, func() error {
		if vip = serviceVIP(t, ctx, cs, name); !vip.IsValid() {
			return fmt.Errorf("service %s has no address", name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vip
}

func patchService(t *testing.T, ctx context.Context, cs kubernetes.Interface, name, patch string) {
	t.Helper()
	if _, err := cs.CoreV1().Services("default").Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("patching %s with %s: %v", name, patch, err)
	}
}

// serviceEvents are the Events about the Service name.
func serviceEvents(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) []corev1.Event {
	t.Helper()
	list, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=Service,involvedObject.name=" + name})
	if err != nil {
		t.Fatal(err)
	}
	return list.Items
}

// checkIronLBs checks that IronLB serves the Service: its finalizer, the
// status as the service controller writes it (ipMode VIP), its Events.
func checkIronLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if !slices.Contains(s.Finalizers, lbclass.Finalizer) {
		t.Errorf("%s: finalizers %v, want %s", name, s.Finalizers, lbclass.Finalizer)
	}
	for _, in := range s.Status.LoadBalancer.Ingress {
		if in.IPMode == nil || *in.IPMode != corev1.LoadBalancerIPModeVIP {
			t.Errorf("%s: ingress %s has ipMode %v, want VIP", name, in.IP, in.IPMode)
		}
	}
	ensured := false
	for _, e := range serviceEvents(t, ctx, cs, name) {
		ensured = ensured || e.Reason == lbclass.ReasonEnsured && e.Source.Component == lbclass.Component
	}
	if !ensured {
		t.Errorf("%s: no EnsuredLoadBalancer Event from ironlb-ccm", name)
	}
}

// checkNotIronLBs checks that IronLB left the Service alone: no finalizer
// or condition of IronLB's, no Event from it.
func checkNotIronLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	for _, f := range s.Finalizers {
		if strings.HasPrefix(f, "ironlb.dev/") || f == lbclass.StandardFinalizer {
			t.Errorf("%s: finalizer %s: IronLB took it", name, f)
		}
	}
	for _, c := range s.Status.Conditions {
		if strings.HasPrefix(c.Type, "ironlb.dev/") {
			t.Errorf("%s: condition %s: IronLB took it", name, c.Type)
		}
	}
	for _, e := range serviceEvents(t, ctx, cs, name) {
		if e.Source.Component == lbclass.Component || e.Source.Component == "service-controller" {
			t.Errorf("%s: Event %s %q from %s", name, e.Reason, e.Message, e.Source.Component)
		}
	}
}

// checkMetalLBs checks that MetalLB's controller gave the Service its
// address (an IPAllocated Event from MetalLB).
func checkMetalLBs(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	var seen []string
	for _, e := range serviceEvents(t, ctx, cs, name) {
		if e.Reason == "IPAllocated" && strings.HasPrefix(e.Source.Component, "metallb") {
			return
		}
		seen = append(seen, e.Source.Component+"/"+e.Reason)
	}
	t.Errorf("%s: no IPAllocated Event from MetalLB, only %v", name, seen)
}

// waitMetalLBAnnounces waits until MetalLB's speakers announce the
// Service (a ServiceL2Status names it) or, with want false, none does.
func waitMetalLBAnnounces(t *testing.T, ctx context.Context, c *cluster.Cluster, name string, want bool) {
	t.Helper()
	err := eventually(ctx, time.Minute, func() error {
		out, err := c.Kubectl(ctx, nil, "-n", "metallb-system", "get", "servicel2statuses", "-o", `jsonpath={range .items[*]}{.status.serviceNamespace}/{.status.serviceName} {.status.node}{"\n"}{end}`)
		if err != nil {
			return err
		}
		var on []string
		for _, line := range strings.Split(out, "\n") {
			if svc, node, ok := strings.Cut(line, " "); ok && svc == "default/"+name {
				on = append(on, node)
			}
		}
		if got := len(on) > 0; got != want {
			return fmt.Errorf("MetalLB announces %s on %v, want announced: %v", name, on, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// checkUntouched checks that nobody served the Service: pending, no
// finalizer, no status, no Event at all.
func checkUntouched(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) {
	t.Helper()
	s := getService(t, ctx, cs, name)
	if len(s.Finalizers) > 0 || len(s.Status.LoadBalancer.Ingress) > 0 || len(s.Status.Conditions) > 0 {
		t.Errorf("%s: finalizers %v, ingress %v, conditions %v: want none", name, s.Finalizers, s.Status.LoadBalancer.Ingress, s.Status.Conditions)
	}
	for _, e := range serviceEvents(t, ctx, cs, name) {
		t.Errorf("%s: Event %s %q from %s", name, e.Reason, e.Message, e.Source.Component)
	}
}

// curlProber starts a curl (-m 1) from the outside client to vip every
// interval, each on its own, and keeps every outcome.
type curlProber struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	res  []probe
}

type probe struct {
	at time.Time
	ok bool
}

func startCurlProber(c *cluster.Cluster, vip netip.Addr, interval time.Duration) *curlProber {
	p := &curlProber{done: make(chan struct{})}
	url := fmt.Sprintf("http://%s/hostname", vip)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		inflight := make(chan struct{}, 40)
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			select {
			case inflight <- struct{}{}:
			default:
				continue // 40 hanging already: skip a beat
			}
			p.wg.Add(1)
			go func(at time.Time) {
				defer p.wg.Done()
				out, err := c.Client.Run("curl", "-sS", "-m", "1", url)
				<-inflight
				p.mu.Lock()
				p.res = append(p.res, probe{at: at, ok: err == nil && strings.HasPrefix(out, "web-")})
				p.mu.Unlock()
			}(time.Now())
		}
	}()
	return p
}

// stop ends the probing and returns the outage: from the start of the
// first failed request to the start of the first successful one after
// it (zero if none failed), and how many of how many requests failed.
func (p *curlProber) stop() (outage time.Duration, failed, total int) {
	close(p.done)
	p.wg.Wait()
	res := slices.Clone(p.res)
	slices.SortFunc(res, func(a, b probe) int { return a.at.Compare(b.at) })
	var firstFail time.Time
	for _, r := range res {
		switch {
		case !r.ok:
			failed++
			if firstFail.IsZero() {
				firstFail = r.at
			}
		case !firstFail.IsZero() && outage == 0:
			outage = r.at.Sub(firstFail)
		}
	}
	return outage, failed, len(res)
}

// restartCCMLeader deletes the pod of IronLB's CCM that holds the
// leader lease and waits until the Deployment is whole again, a CCM pod
// holds the lease and every CCM pod's /healthz answers ok.
func restartCCMLeader(t *testing.T, ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface) {
	t.Helper()
	lease, err := cs.CoordinationV1().Leases("ironlb-system").Get(ctx, "ironlb-ccm", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("the CCM's leader lease: %v %+v", err, lease)
	}
	holder := *lease.Spec.HolderIdentity
	pods, err := cs.CoreV1().Pods("ironlb-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-ccm"})
	if err != nil {
		t.Fatal(err)
	}
	var leader *corev1.Pod
	for i, p := range pods.Items {
		// A host-network pod's hostname is its node's: the identity is
		// <node>_<uuid>.
		if strings.HasPrefix(holder, p.Spec.NodeName+"_") {
			leader = &pods.Items[i]
		}
	}
	if leader == nil {
		t.Fatalf("no CCM pod holds the lease (%s)", holder)
	}
	if err := cs.CoreV1().Pods("ironlb-system").Delete(ctx, leader.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = eventually(ctx, 2*time.Minute, func() error {
		pods, err := cs.CoreV1().Pods("ironlb-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-ccm"})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.Name == leader.Name {
				return fmt.Errorf("pod %s still there", p.Name)
			}
			if !podIsReady(p) {
				return fmt.Errorf("pod %s not ready", p.Name)
			}
			if out, err := c.Client.Run("curl", "-sS", "-k", "-m", "2", fmt.Sprintf("https://%s:10258/healthz", p.Status.HostIP)); err != nil || out != "ok" {
				return fmt.Errorf("pod %s /healthz: %q %v", p.Name, out, err)
			}
			ready++
		}
		if ready != 2 {
			return fmt.Errorf("%d CCM pods ready, want 2", ready)
		}
		l, err := cs.CoordinationV1().Leases("ironlb-system").Get(ctx, "ironlb-ccm", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == holder || l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) > 10*time.Second {
			return fmt.Errorf("lease held by %v, renewed %v: no new leader yet", l.Spec.HolderIdentity, l.Spec.RenewTime)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the CCM after deleting its leader %s: %v", leader.Name, err)
	}
}

func podIsReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
