package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/test/rig"
)

// TestLayer2RollingRestart is issue 21's item 6 on the layer-2 rig with
// the real CCM and speakers: a rolling restart of every speaker (SIGTERM,
// new process, next node) fails no new connection, breaks no long-lived
// one and moves no VIP; a drained (cordoned) node's VIPs move before its
// speaker stops; a crashed speaker's VIPs still move at once, and so do
// those of a node whose link goes down while its speaker restarts.
func TestLayer2RollingRestart(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	vips, err := r.SpreadVIPs(ctx, 12, func(i int) (netip.Addr, error) {
		name := fmt.Sprintf("roll-%d", i)
		c.createService(lbService("default", name, nil))
		return c.vip("default", name), nil
	})
	if err != nil {
		t.Fatalf("one VIP per node: %v", err)
	}

	t.Run("a rolling restart of every speaker fails nothing and moves nothing", func(t *testing.T) {
		res, err := r.RollingRestart(ctx, vips, 12, time.Second)
		t.Logf("%d restarts: %d of %d new connections failed, %d of %d long-lived connections broke, %v moves by the CCM %v, client saw %v; per node %v",
			res.Restarts, res.FailedConnections, res.Attempts, res.BrokenHolders, res.Holders, res.Moves.Total, res.Moves.Logged, res.ClientMoves, res.PerNode)
		if err != nil {
			t.Fatal(err)
		}
		if res.FailedConnections != 0 {
			t.Errorf("%d of %d new connections failed, want 0", res.FailedConnections, res.Attempts)
		}
		if res.BrokenHolders != 0 {
			t.Errorf("%d of %d long-lived connections broke, want 0:\n%s", res.BrokenHolders, res.Holders, strings.Join(res.Breaks, "\n"))
		}
		if n := res.VIPsMoved(); n != 0 {
			t.Errorf("%d VIP moves, want 0: CCM %v, client %v", n, res.Moves.Logged, res.ClientMoves)
		}
	})

	t.Run("a drained node's VIPs move before its speaker stops", func(t *testing.T) {
		ann := r.Announcers(ctx, vips)
		node := ann[vips[0]][0]
		var mine []netip.Addr
		for _, vip := range vips {
			if slices.Equal(ann[vip], []string{node}) {
				mine = append(mine, vip)
			}
		}
		mark, err := r.MarkMoves(ctx)
		if err != nil {
			t.Fatal(err)
		}
		cordon(t, ctx, c, node, true)
		defer cordon(t, ctx, c, node, false)
		// The speaker still runs: only the drain can move its VIPs.
		for _, vip := range mine {
			waitAnnouncer(t, ctx, r, vip, others(r, node)...)
		}
		moved, err := r.MovesSince(ctx, mark)
		if err != nil {
			t.Fatal(err)
		}
		if int(moved.Total) != len(mine) || len(moved.Others(node)) != 0 {
			t.Errorf("cordoning %s moved %v (logged %v), want its %d VIPs %v only", node, moved.Total, moved.Logged, len(mine), mine)
		}

		mark, err = r.MarkMoves(ctx)
		if err != nil {
			t.Fatal(err)
		}
		n := r.Node(node)
		if err := r.StopSpeaker(n); err != nil {
			t.Fatal(err)
		}
		waitMetrics(t, ctx, r, 10*time.Second, fmt.Sprintf(`ironlb_speaker_connected{node=%q} 0`, node))
		// The signal that the CCM has dealt with the stop and the new
		// process: the new speaker taken over.
		if err := r.StartNewSpeaker(ctx, n); err != nil {
			t.Fatal(err)
		}
		moved, err = r.MovesSince(ctx, mark)
		if err != nil {
			t.Fatal(err)
		}
		if moved.Total != 0 {
			t.Errorf("stopping the drained %s's speaker moved %v more VIPs: %v", node, moved.Total, moved.Logged)
		}
		for _, vip := range vips {
			if got := checkAnnouncer(t, ctx, r, vip); got == node {
				t.Errorf("%s answered by the cordoned %s", vip, node)
			}
		}
	})

	t.Run("a crashed speaker's VIPs move at once", func(t *testing.T) {
		f, err := r.MeasureFailover(ctx, vips[0], rig.Crash)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s crashed: %s moved to %s, client cut off %s (%d failed connections)", f.From, vips[0], f.To, f.Outage.Round(time.Millisecond), f.Failed)
	})

	t.Run("a node whose link goes down during a restart loses its VIPs promptly", func(t *testing.T) {
		vip := vips[len(vips)-1]
		node := checkAnnouncer(t, ctx, r, vip)
		n := r.Node(node)
		if err := r.StopSpeaker(n); err != nil {
			t.Fatal(err)
		}
		// Stopped for a restart, then gone: the CCM's dials to the
		// speaker's port now time out instead of being refused.
		if err := n.Host.SetLink(false); err != nil {
			t.Fatal(err)
		}
		down := time.Now()
		// Well within the restart grace (30 s), which would move the VIP
		// anyway: the move must come from the dials timing out.
		err := rig.Eventually(10*time.Second, func() error {
			got, err := r.Reach(ctx, vip, 300*time.Millisecond)
			if err != nil {
				_ = r.Client.FlushNeighbors()
				return err
			}
			if got == node {
				_ = r.Client.FlushNeighbors()
				return fmt.Errorf("%s still answered by %s", vip, node)
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s's link down during its speaker's restart: %v", node, err)
		} else {
			t.Logf("%s moved off %s %s after its link went down during the restart", vip, node, time.Since(down).Round(time.Millisecond))
		}
		if err := n.Host.SetLink(true); err != nil {
			t.Fatal(err)
		}
		if err := r.StartNewSpeaker(ctx, n); err != nil {
			t.Fatal(err)
		}
	})
}

// cordon sets the Node's spec.unschedulable, as kubectl cordon (and
// drain) and uncordon do.
func cordon(t *testing.T, ctx context.Context, c *cluster, node string, on bool) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"unschedulable":%t}}`, on)
	if _, err := c.cp.Client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("cordon %s = %t: %v", node, on, err)
	}
}

// others returns the names of the rig's nodes but node.
func others(r *rig.L2, node string) []string {
	var out []string
	for _, n := range r.Nodes {
		if n.Name != node {
			out = append(out, n.Name)
		}
	}
	return out
}
