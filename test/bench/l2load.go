package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/ironlb/ironlb/test/rig"
)

// quietLoad is how long the load runs with no failure injected while
// l2_spurious_moves_under_load counts moves.
const quietLoad = 60 * time.Second

// benchUnderLoad starts the load (1,000 Services churning 10 replacements
// a second, busy loops saturating every CPU) and prints:
// l2_spurious_moves_under_load, the VIP moves the CCM made (its
// ironlb_failovers_total) that no injected failure caused, over 60 s with
// no failure plus the silent failovers below, less each failover's moves
// of the failed node's VIPs (must be 0); and
// l2_failover_silent_under_load_p50, the silent failover of vip measured
// as l2_failover_silent_p50 is, with the load running.
func benchUnderLoad(ctx context.Context, r *rig.L2, vip netip.Addr, trials int) error {
	start := time.Now()
	load, err := rig.StartLoad(ctx, r, rig.LoadOptions{})
	if err != nil {
		return fmt.Errorf("starting the load: %w", err)
	}
	defer load.Stop()
	fmt.Fprintf(os.Stderr, "bench: load in place after %s\n", time.Since(start).Round(time.Second))

	mark, err := r.MarkMoves(ctx)
	if err != nil {
		return err
	}
	time.Sleep(quietLoad)
	quiet, err := r.MovesSince(ctx, mark)
	if err != nil {
		return err
	}
	spurious := quiet.Except()
	fmt.Fprintf(os.Stderr, "bench: %v moves in %s of load with no failure: %v\n", quiet.Total, quietLoad, quiet.Logged[:min(len(quiet.Logged), 10)])

	var outages []float64
	for range trials {
		mark, err := r.MarkMoves(ctx)
		if err != nil {
			return err
		}
		f, err := r.MeasureFailover(ctx, vip, rig.Silent)
		if err != nil {
			return err
		}
		outages = append(outages, f.Outage.Seconds())
		mv, err := r.MovesSince(ctx, mark)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "bench: silent failover under load %s → %s: client cut off %s (%d failed connections), %v VIPs moved\n",
			f.From, f.To, f.Outage.Round(time.Millisecond), f.Failed, mv.Total)
		if n := mv.Except(f.From); n > 0 {
			spurious += n
			fmt.Fprintf(os.Stderr, "bench: %d spurious moves during the silent failover of %s: %v\n", n, f.From, mv.Others(f.From)[:min(len(mv.Others(f.From)), 10)])
		}
	}
	st := load.Stop()
	fmt.Fprintf(os.Stderr, "bench: load: %d Services created, %d deleted, %d API errors (last: %v)\n", st.Created, st.Deleted, st.Errors, st.LastError)
	report("l2_failover_silent_under_load_p50", median(outages), "s")
	report("l2_failover_silent_under_load_max", slices.Max(outages), "s")
	report("l2_spurious_moves_under_load", float64(spurious), "moves")
	return nil
}
