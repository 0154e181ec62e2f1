package scalerig

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/ironlb/ironlb/test/controlplane"
	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
)

// Bulk creates m Services at once (KindOf: half layer 2, half BGP, one
// BGP Service in ten Local, whose EndpointSlices come first) and reports
// the time from the first create call until the last VIP was announced
// where it should be (check), over all and per kind, and the API writes
// per Service made by anyone but the rig (the CCM's writes and Events),
// once they stop.
func (r *Rig) Bulk(ctx context.Context, m int) error {
	if err := r.createSlices(ctx, "bulk", m); err != nil {
		return err
	}
	before, err := r.CP.RequestCounts(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := scale.CreateServices(ctx, r.CP.Client, Namespace, "bulk", m, shape); err != nil {
		return err
	}
	wants, at, err := r.waitAnnounced(ctx, bulkTimeout(m, len(r.Fleet.Speakers())))
	if err != nil {
		return err
	}
	if len(wants) != m {
		return fmt.Errorf("%d VIPs for %d Services", len(wants), m)
	}
	l2, bgp := byKind(wants, at)
	last := maxTime(l2, bgp)
	r.report("bulk_all_announced_s", last.Sub(start).Seconds(), "s")
	// Layer 2: one speaker each; BGP: every eligible speaker each, so
	// its last VIP waits for the slowest of all speakers.
	r.report("bulk_l2_announced_s", l2.Sub(start).Seconds(), "s")
	if !layer2Only {
		r.report("bulk_bgp_announced_s", bgp.Sub(start).Seconds(), "s")
	}
	r.logf("%d VIPs announced after %s (layer 2 %s, BGP %s)", len(wants), last.Sub(start).Round(time.Millisecond),
		l2.Sub(start).Round(time.Millisecond), bgp.Sub(start).Round(time.Millisecond))
	return r.writesPerService(ctx, before, m)
}

// bulkTimeout bounds bulk creation of m Services on n nodes: a minute,
// 50 ms a Service, and, unless every Service is a layer-2 one, 200 µs for
// each node × BGP VIP (every node advertises every BGP VIP, so each is an
// update to every node and its report back: on the rig's two shared
// cores, 1,000 × 3,000 half BGP took longer than the first two terms).
func bulkTimeout(m, n int) time.Duration {
	d := time.Minute + time.Duration(m)*50*time.Millisecond
	if !layer2Only {
		d += time.Duration(n*m/2) * 200 * time.Microsecond
	}
	return d
}

// writesPerService waits until the API writes since before stand still
// over two seconds (the trailing Announced conditions and Events), and
// reports those made for m Services by anyone but the rig, per Service.
func (r *Rig) writesPerService(ctx context.Context, before map[string]float64, m int) error {
	var w map[string]float64
	prev := -1.0
	err := rig.Eventually(2*time.Minute, func() error {
		time.Sleep(2 * time.Second)
		after, err := r.CP.RequestCounts(ctx)
		if err != nil {
			return err
		}
		w = controlplane.Writes(before, after)
		total := serviceWrites(w)
		if total != prev {
			prev = total
			return fmt.Errorf("API writes still growing: %.0f", total)
		}
		return nil
	})
	if err != nil {
		return err
	}
	w["POST services"] -= float64(m) // the rig's own creates
	delete(w, "POST ipaddresses")    // the API server's ClusterIP allocations
	delete(w, "POST endpointslices") // the rig's
	r.logf("API writes during %d Services: %s", m, controlplane.FormatCounts(w))
	r.report("api_writes_per_service", serviceWrites(w)/float64(m), "requests")
	return nil
}

// serviceWrites sums the API writes counted in w (as controlplane.Writes
// names them) that are the Services' doing: not leases (leader election),
// nodes (the CCM's node controllers, still at work on the simulated
// nodes) or token reviews (speakers enrolling, which are reads).
func serviceWrites(w map[string]float64) float64 {
	total := 0.0
	for k, v := range w {
		if !strings.HasSuffix(k, "leases") && !strings.Contains(k, " nodes") && !strings.HasSuffix(k, "tokenreviews") {
			total += v
		}
	}
	return total
}

// NodeLoss kills the speaker announcing the most layer-2 VIPs and reports
// the time from the kill until the last of its VIPs was announced by
// another speaker (which includes the CCM's detection of the loss); every
// other VIP must stay where it should be (check). It returns the dead
// node.
func (r *Rig) NodeLoss(ctx context.Context) (string, error) {
	held := map[string][]netip.Addr{}
	for a, nodes := range r.Fleet.Owners() {
		for _, n := range nodes {
			held[n] = append(held[n], a)
		}
	}
	victim := ""
	for n, as := range held {
		if victim == "" || len(as) > len(held[victim]) || len(as) == len(held[victim]) && n < victim {
			victim = n
		}
	}
	if victim == "" {
		return "", fmt.Errorf("no speaker announces anything over layer 2")
	}
	killed := time.Now()
	if err := r.Fleet.Kill(victim); err != nil {
		return "", err
	}
	_, at, err := r.waitAnnounced(ctx, 5*time.Minute)
	if err != nil {
		return "", fmt.Errorf("after %s was killed: %w", victim, err)
	}
	last := killed
	for _, a := range held[victim] {
		last = maxTime(last, at[a])
	}
	r.logf("killed %s: its %d layer-2 VIPs announced elsewhere after %s", victim, len(held[victim]), last.Sub(killed).Round(time.Millisecond))
	r.report("node_loss_ms", float64(last.Sub(killed))/float64(time.Millisecond), "ms")
	return victim, nil
}
