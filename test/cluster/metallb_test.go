package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

// testMetalLBMigration is the one-Service-at-a-time migration of docs/migrating-from-metallb.md
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
