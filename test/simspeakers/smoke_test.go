package simspeakers_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
	"github.com/ironlb/ironlb/test/simspeakers"
)

// The smoke test's addresses: the simulated nodes' (local routes in the
// namespace the CCM and the speakers' listeners share: 508 nodes at most),
// the namespace's own and the pool's, disjoint from the nodes'.
var (
	nodePrefixes = []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")}
	hostPrefix   = netip.MustParsePrefix("203.0.113.1/24")
	poolRange    = "203.0.113.100-203.0.113.199"
)

// TestSmoke runs the real CCM as deploy/ ships it against a real API server
// with 20 simulated speakers: 40 layer-2 Services are each announced by
// exactly one speaker, and the VIPs of a speaker that dies move to others.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane and the CCM")
	}
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces: %v", err)
	}
	start := time.Now()
	nodes, services := 20, 40
	if n, err := strconv.Atoi(os.Getenv("SIMSPEAKERS_NODES")); err == nil && n > 0 && n <= 508 {
		nodes = n // a capacity run: how many speakers one process hosts
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cp.Stop() })
	kubeconfig, err := rig.InstallDeploy(ctx, cp)
	if err != nil {
		t.Fatal(err)
	}
	lan := netrig.NewLAN(t)
	host, err := lan.AddHost("sim", hostPrefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range nodePrefixes {
		if err := host.AddLocalRoute(p); err != nil {
			t.Fatal(err)
		}
	}
	ccmKubeconfig := relayKubeconfig(t, host, cp, kubeconfig)
	ccm := rig.StartCCMForTest(t, rig.CCMOptions{
		Kubeconfig: ccmKubeconfig, Shipped: true,
		Process: procs.Options{Wrap: []string{"ip", "netns", "exec", host.Name}, Env: []string{"POD_NAMESPACE=ironlb-system"}},
	})
	base := usage()
	fleet, err := simspeakers.Start(ctx, simspeakers.Options{
		Client: cp.Client, Namespace: "ironlb-system", Nodes: nodes,
		Prefixes: nodePrefixes, Listen: host.Listen,
	})
	if err != nil {
		t.Fatalf("%v\nCCM log tail:\n%s", err, ccm.Tail(30))
	}
	t.Cleanup(fleet.Stop)
	t.Logf("%d speakers started after %s", nodes, time.Since(start).Round(time.Millisecond))

	pool := "apiVersion: ironlb.dev/v1alpha1\nkind: IPPool\nmetadata: {name: lan}\nspec:\n  addresses: [" + poolRange + "]\n"
	if err := rig.Eventually(30*time.Second, func() error {
		out, err := cp.KubectlStdin(ctx, pool, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying pool: %w\n%s", err, out)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	ipv4 := func(s *corev1.Service) { s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol} }
	if err := scale.CreateServices(ctx, cp.Client, "default", "smoke", services, ipv4); err != nil {
		t.Fatal(err)
	}
	vips := waitVIPs(ctx, t, cp, services)
	owners := waitOwners(t, fleet, vips, nil, ccm)
	t.Logf("%d VIPs announced, each by one speaker, after %s", len(vips), time.Since(start).Round(time.Millisecond))
	if err := rig.Eventually(60*time.Second, func() error {
		for _, s := range fleet.Speakers() {
			if fleet.Received(s.Node) == 0 {
				return fmt.Errorf("speaker %s received no instruction", s.Node)
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("%v\nCCM log tail:\n%s", err, ccm.Tail(30))
	}
	t.Logf("every speaker had its snapshot after %s", time.Since(start).Round(time.Millisecond))
	time.Sleep(2 * time.Second) // heartbeats flowing, steady state
	now := usage()
	t.Logf("%d speakers: %d goroutines (%.1f per speaker), heap %.1f MiB (%.2f MiB per speaker), RSS %.1f MiB",
		nodes, now.goroutines, float64(now.goroutines-base.goroutines)/float64(nodes),
		now.heapMiB, (now.heapMiB-base.heapMiB)/float64(nodes), now.rssMiB)

	victim := owners[vips[0]]
	var moved []netip.Addr
	for a, n := range owners {
		if n == victim {
			moved = append(moved, a)
		}
	}
	killed := time.Now()
	if err := fleet.Kill(victim); err != nil {
		t.Fatal(err)
	}
	after := waitOwners(t, fleet, vips, func(a netip.Addr, n string) error {
		if n == victim {
			return fmt.Errorf("%s still on %s", a, victim)
		}
		return nil
	}, ccm)
	t.Logf("killed %s: its %d VIPs announced elsewhere after %s", victim, len(moved), time.Since(killed).Round(time.Millisecond))
	for _, a := range vips {
		if !slices.Contains(moved, a) && after[a] != owners[a] {
			t.Errorf("%s moved from %s to %s, though %s did not die", a, owners[a], after[a], owners[a])
		}
	}
	t.Logf("smoke test wall time %s", time.Since(start).Round(time.Millisecond))
}

// resources is what the test process uses.
type resources struct {
	goroutines      int
	heapMiB, rssMiB float64
}

// usage measures the test process (RSS from /proc/self/status).
func usage() resources {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	r := resources{goroutines: runtime.NumGoroutine(), heapMiB: float64(m.HeapInuse) / (1 << 20)}
	if b, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				r.rssMiB = kb / 1024
			}
		}
	}
	return r
}

// relayKubeconfig writes a copy of kubeconfig pointing at a relay to the
// API server inside host's namespace.
func relayKubeconfig(t *testing.T, host *netrig.Host, cp *controlplane.ControlPlane, kubeconfig string) string {
	t.Helper()
	addr, err := host.Relay("127.0.0.1:0", strings.TrimPrefix(cp.URL, "https://"))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + addr.String()
	}
	path := filepath.Join(t.TempDir(), "ccm.kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// waitVIPs waits until the n Services have their addresses and returns them.
func waitVIPs(ctx context.Context, t *testing.T, cp *controlplane.ControlPlane, n int) []netip.Addr {
	t.Helper()
	var vips []netip.Addr
	err := rig.Eventually(60*time.Second, func() error {
		vips = vips[:0]
		for i := range n {
			svc, err := cp.Client.CoreV1().Services("default").Get(ctx, scale.Name("smoke", i), metav1.GetOptions{})
			if err != nil {
				return err
			}
			ing := svc.Status.LoadBalancer.Ingress
			if len(ing) != 1 {
				return fmt.Errorf("service %s has ingress %v", svc.Name, ing)
			}
			a, err := netip.ParseAddr(ing[0].IP)
			if err != nil {
				return err
			}
			vips = append(vips, a)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return vips
}

// waitOwners waits until every VIP is announced by exactly one live
// speaker, no other address is, and check (if set) accepts each owner;
// it returns the owners.
func waitOwners(t *testing.T, fleet *simspeakers.Fleet, vips []netip.Addr, check func(netip.Addr, string) error, ccm *procs.Process) map[netip.Addr]string {
	t.Helper()
	out := map[netip.Addr]string{}
	err := rig.Eventually(60*time.Second, func() error {
		owners := fleet.Owners()
		if len(owners) != len(vips) {
			return fmt.Errorf("%d addresses announced, want %d", len(owners), len(vips))
		}
		for _, a := range vips {
			if len(owners[a]) != 1 {
				return fmt.Errorf("%s announced by %v, want one speaker", a, owners[a])
			}
			if check != nil {
				if err := check(a, owners[a][0]); err != nil {
					return err
				}
			}
			out[a] = owners[a][0]
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nCCM log tail:\n%s", err, ccm.Tail(30))
	}
	return out
}
