package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
)

const services = 1000

// benchServices measures, at --concurrent-service-syncs=1 and =10, the time
// until 1,000 new Services all have addresses, the p50 and p99 latency from
// each create call to a watch seeing its address, and the CCM's peak RSS.
func benchServices(ctx context.Context, trials int) error {
	for _, syncs := range []int{1, 10} {
		var all, p50, p99, rss []float64
		for trial := range trials {
			r, peak, err := servicesTrial(ctx, syncs)
			if err != nil {
				return fmt.Errorf("syncs=%d trial %d: %w", syncs, trial+1, err)
			}
			all = append(all, r.AllAssigned.Seconds())
			p50 = append(p50, r.Quantile(0.50).Seconds())
			p99 = append(p99, r.Quantile(0.99).Seconds())
			rss = append(rss, float64(peak)/(1<<20))
		}
		report(fmt.Sprintf("services_%d_all_assigned_syncs%d", services, syncs), median(all), "s")
		report(fmt.Sprintf("services_%d_latency_p50_syncs%d", services, syncs), median(p50), "s")
		report(fmt.Sprintf("services_%d_latency_p99_syncs%d", services, syncs), median(p99), "s")
		report(fmt.Sprintf("ccm_peak_rss_services_%d_syncs%d", services, syncs), median(rss), "MiB")
	}
	return nil
}

// servicesTrial runs one measurement on a fresh control plane.
func servicesTrial(ctx context.Context, syncs int) (scale.Result, int64, error) {
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		return scale.Result{}, 0, err
	}
	defer cp.Stop()
	root, err := binaries.RepoRoot()
	if err != nil {
		return scale.Result{}, 0, err
	}
	if _, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy")); err != nil {
		return scale.Result{}, 0, err
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "kube-system", "ironlb-ccm")
	if err != nil {
		return scale.Result{}, 0, err
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "ironlb.dev/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": "bench"},
		"spec":     map[string]any{"addresses": []any{"192.0.2.0/24", "198.51.100.0/24", "2001:db8:1000::/112"}},
	}}
	if _, err := dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return scale.Result{}, 0, err
	}
	ccm, err := rig.StartCCM(rig.CCMOptions{
		Name: "ironlb-ccm", Kubeconfig: kubeconfig, LogDir: cp.Dir, LeaderElect: true,
		Args: []string{"--concurrent-service-syncs=" + strconv.Itoa(syncs), "--kube-api-qps=200", "--kube-api-burst=400"},
	})
	if err != nil {
		return scale.Result{}, 0, err
	}
	defer ccm.Stop(10 * time.Second)
	if err := ccm.WaitForLog(`"Restored allocations from Service status"`, time.Minute); err != nil {
		return scale.Result{}, 0, err
	}
	res, err := scale.Measure(ctx, cp.Client, "default", "bench", services)
	if err != nil {
		return scale.Result{}, 0, fmt.Errorf("%w\nCCM log tail:\n%s", err, ccm.Tail(20))
	}
	peak, err := peakRSS(ccm.Pid())
	return res, peak, err
}

// peakRSS reads a process's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
