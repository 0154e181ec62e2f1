package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
)

// rollingHolders is how many long-lived connections the client holds to
// each VIP during a rolling restart (the BGP figure holds 12 too).
const rollingHolders = 12

// rollingGap is how long no speaker runs on a node during its restart:
// about what the kubelet takes to start the new pod.
const rollingGap = time.Second

// benchRollingRestart prints what a rolling restart of every speaker
// (SIGTERM, a new process 1 s after the old one exited, next node: a DaemonSet rollout with
// maxUnavailable 1) does to a client opening a connection every 10 ms to
// one VIP per node and holding 12 long-lived connections to each:
// l2_rolling_restart_failed_connections and
// l2_rolling_restart_broken_long_lived (the worst of the trials; both must
// be 0) and l2_rolling_restart_vips_moved (the most VIP moves of a trial,
// by the CCM's ironlb_failovers_total or the client's view).
func benchRollingRestart(ctx context.Context, cp *controlplane.ControlPlane, r *rig.L2, trials int) error {
	var failed, broken, moved []float64
	for trial := range trials {
		vips, err := r.SpreadVIPs(ctx, 12, func(i int) (netip.Addr, error) {
			name := fmt.Sprintf("restart-%d-%d", trial, i)
			if _, err := cp.Client.CoreV1().Services("default").Create(ctx, lbService(name), metav1.CreateOptions{}); err != nil {
				return netip.Addr{}, err
			}
			return waitVIP(ctx, cp, name)
		})
		if err != nil {
			return err
		}
		res, err := r.RollingRestart(ctx, vips, rollingHolders, rollingGap)
		fmt.Fprintf(os.Stderr, "bench: rolling restart %d: %d of %d connections failed, %d of %d long-lived broken, %v VIP moves by the CCM, client saw %v; per node %v\n",
			trial+1, res.FailedConnections, res.Attempts, res.BrokenHolders, res.Holders, res.Moves.Total, res.ClientMoves, res.PerNode)
		for _, b := range res.Breaks[:min(len(res.Breaks), 5)] {
			fmt.Fprintf(os.Stderr, "bench:   broken %s\n", b)
		}
		if err != nil {
			return err
		}
		failed = append(failed, float64(res.FailedConnections))
		broken = append(broken, float64(res.BrokenHolders))
		moved = append(moved, float64(res.VIPsMoved()))
		// Free the pool for the next trial.
		svcs, err := cp.Client.CoreV1().Services("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range svcs.Items {
			if strings.HasPrefix(s.Name, fmt.Sprintf("restart-%d-", trial)) {
				if err := cp.Client.CoreV1().Services("default").Delete(ctx, s.Name, metav1.DeleteOptions{}); err != nil {
					return err
				}
			}
		}
	}
	report("l2_rolling_restart_failed_connections", slices.Max(failed), "connections")
	report("l2_rolling_restart_broken_long_lived", slices.Max(broken), "connections")
	report("l2_rolling_restart_vips_moved", slices.Max(moved), "moves")
	return nil
}
