package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
)

const services = 1000

// benchServices measures, with ironlb-ccm as deploy/ ships it (its flags,
// the binary's defaults, its ServiceAccount's permissions, leader election
// on): the time from the last of 1,000 concurrent create calls until every
// Service has an address, the p50 and p99 latency from each create call to
// a watch seeing its address, the API writes made per Service, and the
// CCM's peak RSS. Then the same for Services of IronLB's
// loadBalancerClass, served by IronLB's own controller instead of the
// cloud-provider service controller.
func benchServices(ctx context.Context, trials int) error {
	var after, p50, p99, rss, writes []float64
	for trial := range trials {
		r, peak, w, err := servicesTrial(ctx, "")
		if err != nil {
			return fmt.Errorf("trial %d: %w", trial+1, err)
		}
		after = append(after, r.AfterLastCreate.Seconds())
		p50 = append(p50, r.Quantile(0.50).Seconds())
		p99 = append(p99, r.Quantile(0.99).Seconds())
		rss = append(rss, float64(peak)/(1<<20))
		writes = append(writes, w)
	}
	report(fmt.Sprintf("services_%d_all_assigned_defaults_s", services), median(after), "s")
	report(fmt.Sprintf("services_%d_latency_p50_defaults", services), median(p50), "s")
	report(fmt.Sprintf("services_%d_latency_p99_defaults", services), median(p99), "s")
	report(fmt.Sprintf("services_%d_api_writes_per_service_defaults", services), median(writes), "requests")
	report(fmt.Sprintf("ccm_peak_rss_services_%d_defaults", services), median(rss), "MiB")
	after, p50, p99, writes = nil, nil, nil, nil
	for trial := range trials {
		r, _, w, err := servicesTrial(ctx, lbclass.DefaultName)
		if err != nil {
			return fmt.Errorf("loadBalancerClass trial %d: %w", trial+1, err)
		}
		after = append(after, r.AfterLastCreate.Seconds())
		p50 = append(p50, r.Quantile(0.50).Seconds())
		p99 = append(p99, r.Quantile(0.99).Seconds())
		writes = append(writes, w)
	}
	report(fmt.Sprintf("services_%d_class_all_assigned_defaults_s", services), median(after), "s")
	report(fmt.Sprintf("services_%d_class_latency_p50_defaults", services), median(p50), "s")
	report(fmt.Sprintf("services_%d_class_latency_p99_defaults", services), median(p99), "s")
	report(fmt.Sprintf("services_%d_class_api_writes_per_service_defaults", services), median(writes), "requests")
	return nil
}

// servicesTrial runs one measurement on a fresh control plane, with
// Services of loadBalancerClass class ("": none). It returns the result,
// the CCM's peak RSS and the API writes per Service made by anyone but the
// test's own creates (the CCM's writes and Events).
func servicesTrial(ctx context.Context, class string) (scale.Result, int64, float64, error) {
	cp, err := controlplane.Start(ctx, controlplane.Options{})
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	defer cp.Stop()
	root, err := binaries.RepoRoot()
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	if _, err := cp.Kubectl(ctx, "apply", "--server-side", "-k", filepath.Join(root, "deploy")); err != nil {
		return scale.Result{}, 0, 0, err
	}
	kubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "ironlb-system", "ironlb-ccm")
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "ironlb.dev/v1alpha1", "kind": "IPPool",
		"metadata": map[string]any{"name": "bench"},
		"spec":     map[string]any{"addresses": []any{"192.0.2.0/24", "198.51.100.0/24", "2001:db8:1000::/112"}},
	}}
	if _, err := dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return scale.Result{}, 0, 0, err
	}
	ccm, err := rig.StartCCM(rig.CCMOptions{Name: "ironlb-ccm", Kubeconfig: kubeconfig, LogDir: cp.Dir, Shipped: true, Args: extraCCMArgs()})
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	defer ccm.Stop(10 * time.Second)
	if err := ccm.WaitForLog(`"Restored allocations from Service status"`, time.Minute); err != nil {
		return scale.Result{}, 0, 0, err
	}
	before, err := cp.RequestCounts(ctx)
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	var mutate []func(*corev1.Service)
	if class != "" {
		mutate = append(mutate, func(s *corev1.Service) { s.Spec.LoadBalancerClass = &class })
	}
	res, err := scale.Measure(ctx, cp.Client, "default", "bench", services, mutate...)
	if err != nil {
		return scale.Result{}, 0, 0, fmt.Errorf("%w\nCCM log tail:\n%s", err, ccm.Tail(20))
	}
	// Let the trailing writes (the ironlb.dev/Announced status condition, Events) land.
	time.Sleep(5 * time.Second)
	after, err := cp.RequestCounts(ctx)
	if err != nil {
		return scale.Result{}, 0, 0, err
	}
	w := controlplane.Writes(before, after)
	w["POST services"] -= services // the test's own creates
	delete(w, "POST ipaddresses")  // the API server's ClusterIP allocations
	fmt.Fprintf(os.Stderr, "bench: API writes during 1000 Services: %s\n", controlplane.FormatCounts(w))
	total := 0.0
	for k, v := range w {
		if strings.HasSuffix(k, "leases") { // leader election renewals
			continue
		}
		total += v
	}
	peak, err := procs.PeakRSS(ccm.Pid())
	return res, peak, total / services, err
}

// extraCCMArgs are flags added to the shipped ones from $IRONLB_BENCH_CCM_ARGS,
// for experiments; the figures make bench prints use none.
func extraCCMArgs() []string { return strings.Fields(os.Getenv("IRONLB_BENCH_CCM_ARGS")) }
