package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// cpBGPTrials is the least number of trials of each figure of the cp-bgp
// group.
const cpBGPTrials = 5

// benchCPBGP measures the control-plane VIP in BGP mode on the
// control-plane BGP rig (three nodes running ironlb-speaker control-plane
// --mode bgp at its shipped defaults, stand-in apiservers, FRR with BFD at
// its defaults): how long until the router drops a node whose apiserver
// turned unready, and one whose link was cut; how many requests (a new
// connection every 10 ms from behind the router) a planned apiserver stop
// loses with kube-apiserver's --shutdown-delay-duration=2s, and without
// it. Each trial takes the next node.
func benchCPBGP(ctx context.Context, trials int) error {
	trials = max(trials, cpBGPTrials)
	lan, err := netrig.NewLANNoTest()
	if err != nil {
		return err
	}
	defer lan.Close()
	upstream, err := netrig.NewLANNoTest()
	if err != nil {
		return err
	}
	defer upstream.Close()
	dir, err := os.MkdirTemp("", "ironlb-bench-cpbgp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	r, err := rig.StartCPBGP(ctx, lan, upstream, filepath.Join(dir, "logs"))
	if err != nil {
		return err
	}
	defer r.Stop()
	fail := func(err error) error {
		for _, n := range r.Nodes {
			if n.Speaker != nil {
				fmt.Fprintf(os.Stderr, "%s:\n%s\n", n.Speaker.Name, n.Speaker.Tail(30))
			}
		}
		return err
	}
	var unready, loss []float64
	failed, failedNoDelay := 0, 0
	for i := range trials {
		n := r.Nodes[i%len(r.Nodes)]
		took, err := r.MeasureUnready(n)
		if err != nil {
			return fail(fmt.Errorf("trial %d, %s unready: %w", i, n.Name, err))
		}
		unready = append(unready, took.Seconds())
		if took, err = r.MeasureNodeLoss(n); err != nil {
			return fail(fmt.Errorf("trial %d, %s's link cut: %w", i, n.Name, err))
		}
		loss = append(loss, took.Seconds())
		st, err := r.PlannedStop(n, 2*time.Second, 10*time.Millisecond, time.Second)
		if err != nil {
			return fail(fmt.Errorf("trial %d, %s's planned stop: %w", i, n.Name, err))
		}
		failed = max(failed, st.Failed)
		fmt.Fprintf(os.Stderr, "cp-bgp trial %d: %s unready %s, link cut %s, planned stop (2s delay): %s %q\n",
			i, n.Name, time.Duration(unready[i]*float64(time.Second)).Round(time.Millisecond),
			time.Duration(loss[i]*float64(time.Second)).Round(time.Millisecond), st, st.Errors)
		if st, err = r.PlannedStop(n, 0, 10*time.Millisecond, time.Second); err != nil {
			return fail(fmt.Errorf("trial %d, %s's planned stop without delay: %w", i, n.Name, err))
		}
		failedNoDelay = max(failedNoDelay, st.Failed)
		fmt.Fprintf(os.Stderr, "cp-bgp trial %d: planned stop without --shutdown-delay-duration: %s\n", i, st)
	}
	report("cp_vip_bgp_withdraw_unready_p50", median(unready), "s")
	report("cp_vip_bgp_node_loss_p50", median(loss), "s")
	// The worst trial.
	report("cp_vip_bgp_planned_stop_failed_requests", float64(failed), "requests")
	report("cp_vip_bgp_planned_stop_no_shutdown_delay_failed_requests", float64(failedNoDelay), "requests")
	return nil
}
