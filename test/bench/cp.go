package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/cluster"
)

// benchCP brings up the real kubeadm cluster once with three control-plane
// nodes behind IronLB's control-plane VIP (layer 2, the speaker's static
// pod: make cluster CONTROL_PLANES=3), IronLB's images built from this
// tree, and measures from the client behind the router, through the VIP,
// how long the API server is unreachable (GET /readyz over a new TLS
// connection every 20 ms, verified against the cluster CA) when the VIP's
// holder loses its kube-apiserver (its static pod moved away) or its
// network (its link cut): cp_vip_failover_apiserver_stop_p50 and
// cp_vip_failover_node_loss_p50 (medians over the trials), and
// cp_vip_moves_on_rejoin, the VIP's moves when the old holder came back,
// summed over every trial (the design wants 0). Each trial restores the
// node and waits until it is back before the next. The measuring is
// test/cluster's MeasureFailover, which TestRealClusterHA runs too.
func benchCP(ctx context.Context, trials int) error {
	root, err := binaries.RepoRoot()
	if err != nil {
		return err
	}
	tools := os.Getenv("IRONLB_TOOLS_BIN")
	if tools == "" {
		tools = filepath.Join(root, ".cache", "bin")
	}
	tmp, err := os.MkdirTemp("", "ironlb-bench-cp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	images := filepath.Join(tmp, "images")
	if err := cluster.BuildIronLBImages(ctx, root, images); err != nil {
		return err
	}
	c, err := cluster.Up(ctx, cluster.Options{
		Dir:           filepath.Join(tmp, "cluster"),
		Nodes:         3,
		ControlPlanes: 3,
		ToolsBin:      tools,
		ImageCache:    filepath.Join(root, ".cache", "cluster-images"),
		RepoRoot:      root,
		IronLBImages:  images,
		NoCoreDNS:     true,
		Log:           prefixWriter{"bench: cp: "},
	})
	if err != nil {
		return err
	}
	defer c.Close()
	outages := map[cluster.Disruption][]float64{}
	var moves uint64
	for trial := range trials {
		for _, d := range []cluster.Disruption{cluster.APIServerStop, cluster.NodeLoss} {
			f, err := c.MeasureFailover(ctx, d)
			if err != nil {
				return fmt.Errorf("trial %d, %s: %w", trial+1, d, err)
			}
			fmt.Fprintf(os.Stderr, "bench: cp trial %d: %s\n", trial+1, f)
			for _, l := range f.MoveLog {
				fmt.Fprintf(os.Stderr, "bench: cp   %s\n", l)
			}
			outages[d] = append(outages[d], f.Outage.Seconds())
			moves += f.MovesOnRejoin
		}
	}
	report("cp_vip_failover_apiserver_stop_p50", median(outages[cluster.APIServerStop]), "s")
	report("cp_vip_failover_node_loss_p50", median(outages[cluster.NodeLoss]), "s")
	report("cp_vip_moves_on_rejoin", float64(moves), "moves")
	return nil
}

// prefixWriter writes each write to stderr as a line with a prefix.
type prefixWriter struct{ prefix string }

func (w prefixWriter) Write(p []byte) (int, error) {
	_, err := fmt.Fprintf(os.Stderr, "%s%s", w.prefix, p)
	return len(p), err
}
