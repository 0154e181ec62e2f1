package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// minL2Trials is the fewest trials a layer-2 figure is based on.
const minL2Trials = 10

// restartTrials is how many rolling restarts of every speaker are measured.
const restartTrials = 3

// benchL2 measures, on the layer-2 rig with the real CCM and speakers at
// their defaults: how long after a Service is created the client first
// connects to its VIP, how long the speakers' address-in-use probes take,
// how long the client is cut off when the announcing node fails (speaker
// crash, and silent loss of the node's link), what a rolling restart of
// every speaker does to the client's connections, and, under load (both
// cores busy, 1,000 Services churning), the silent failover and the VIP
// moves no failure caused.
//
// The CCM runs with the binary's defaults (heartbeat, misses, restart
// grace) and deploy/'s flags but for leader election, off with one CCM.
func benchL2(ctx context.Context, trials int) error {
	trials = max(trials, minL2Trials)
	cp, _, r, stop, err := startL2Rig(ctx, rig.L2Options{ExtraPrefixes: []netip.Prefix{rig.LoadPrefix}})
	if err != nil {
		return err
	}
	defer stop()
	fail := func(err error) error {
		fmt.Fprintf(os.Stderr, "process logs:\n%s\n", r.Logs(30))
		return err
	}
	pool := `apiVersion: ironlb.dev/v1alpha1
kind: IPPool
metadata: {name: lan}
spec:
  addresses: [192.0.2.200-192.0.2.219]
`
	err = rig.Eventually(30*time.Second, func() error {
		out, err := cp.KubectlStdin(ctx, pool, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("applying pool: %w\n%s", err, out)
		}
		return nil
	})
	if err != nil {
		return err
	}

	var reach []float64
	for i := range trials {
		name := fmt.Sprintf("reach-%d", i)
		start := time.Now()
		if _, err := cp.Client.CoreV1().Services("default").Create(ctx, lbService(name), metav1.CreateOptions{}); err != nil {
			return err
		}
		vip, err := waitVIP(ctx, cp, name)
		if err != nil {
			return fail(err)
		}
		for {
			if _, err := r.Reach(ctx, vip, 200*time.Millisecond); err == nil {
				break
			}
			if time.Since(start) > 30*time.Second {
				return fail(fmt.Errorf("%s (%s) not reachable after 30 s", name, vip))
			}
			time.Sleep(5 * time.Millisecond)
		}
		reach = append(reach, time.Since(start).Seconds())
		// Keep the pool from running dry.
		if err := cp.Client.CoreV1().Services("default").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return err
		}
	}
	report("service_create_to_reachable_p50", median(reach), "s")
	// Without the probes (speakers before issue 21) the figure is missing;
	// the other figures still print and the group fails at the end.
	probeErr := benchConflictProbe(ctx, r)
	if probeErr != nil {
		fmt.Fprintf(os.Stderr, "bench: l2_conflict_probe_ms: %v\n", probeErr)
	}

	if _, err := cp.Client.CoreV1().Services("default").Create(ctx, lbService("failover"), metav1.CreateOptions{}); err != nil {
		return err
	}
	vip, err := waitVIP(ctx, cp, "failover")
	if err != nil {
		return fail(err)
	}
	for _, mode := range []rig.FailureMode{rig.Crash, rig.Silent} {
		var outages []float64
		for range trials {
			f, err := r.MeasureFailover(ctx, vip, mode)
			if err != nil {
				return fail(err)
			}
			outages = append(outages, f.Outage.Seconds())
			fmt.Fprintf(os.Stderr, "bench: l2_failover_%s trial %d: %.3f s, %s to %s, %d failed attempts\n", mode, len(outages), f.Outage.Seconds(), f.From, f.To, f.Failed)
		}
		report(fmt.Sprintf("l2_failover_%s_p50", mode), median(outages), "s")
		report(fmt.Sprintf("l2_failover_%s_max", mode), slices.Max(outages), "s")
	}
	if err := benchRollingRestart(ctx, cp, r, restartTrials); err != nil {
		return fail(fmt.Errorf("rolling restart: %w", err))
	}
	if err := benchUnderLoad(ctx, r, vip, trials); err != nil {
		return fail(fmt.Errorf("under load: %w", err))
	}
	if probeErr != nil {
		return fmt.Errorf("l2_conflict_probe_ms: %w", probeErr)
	}
	return nil
}

// startL2Rig starts a control plane with deploy/ installed, a LAN and the
// layer-2 rig (the shipped CCM and speakers) with opts (its Kubeconfig
// filled in); stop ends them all.
func startL2Rig(ctx context.Context, opts rig.L2Options) (cp *controlplane.ControlPlane, lan *netrig.LAN, r *rig.L2, stop func(), err error) {
	if err := netrig.Usable(); err != nil {
		return nil, nil, nil, nil, fmt.Errorf("network namespaces: %w", err)
	}
	var stops []func()
	stop = func() {
		for _, s := range slices.Backward(stops) {
			s()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	if cp, err = controlplane.Start(ctx, controlplane.Options{Dir: os.Getenv("IRONLB_BENCH_DIR")}); err != nil {
		return nil, nil, nil, nil, err
	}
	stops = append(stops, func() { cp.Stop() })
	if lan, err = netrig.NewLANNoTest(); err != nil {
		return nil, nil, nil, nil, err
	}
	stops = append(stops, func() { lan.Close() })
	if opts.Kubeconfig, err = rig.InstallDeploy(ctx, cp); err != nil {
		return nil, nil, nil, nil, err
	}
	if r, err = rig.StartL2(ctx, cp, lan, opts); err != nil {
		return nil, nil, nil, nil, err
	}
	stops = append(stops, r.Stop)
	return cp, lan, r, stop, nil
}

// waitVIP polls (every 10 ms, so as not to blur the figures) until the
// Service has an address in its status.
func waitVIP(ctx context.Context, cp *controlplane.ControlPlane, name string) (netip.Addr, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		svc, err := cp.Client.CoreV1().Services("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(svc.Status.LoadBalancer.Ingress) > 0 {
			return netip.ParseAddr(svc.Status.LoadBalancer.Ingress[0].IP)
		}
		if time.Now().After(deadline) {
			return netip.Addr{}, fmt.Errorf("Service %s has no address after 30 s (last error: %v)", name, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lbService(name string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
		},
	}
}
