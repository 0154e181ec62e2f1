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
	"github.com/ironlb/ironlb/test/scale"
)

// bulk creates m layer-2 Services at once and reports the time from the
// first create call until the last VIP was announced (each by exactly one
// live speaker) and the API writes per Service made by anyone but the
// bench (the CCM's writes and Events), once they stop.
func (r *scaleRig) bulk(ctx context.Context, m int) error {
	before, err := r.cp.RequestCounts(ctx)
	if err != nil {
		return err
	}
	start := time.Now()
	if err := scale.CreateServices(ctx, r.cp.Client, "default", "bulk", m, ipv6); err != nil {
		return err
	}
	var vips map[string]string
	err = rig.Eventually(10*time.Minute, func() error {
		if vips, err = scale.Addresses(ctx, r.cp.Client, "default"); err != nil {
			return err
		}
		if len(vips) < m {
			return fmt.Errorf("%d of %d Services have an address", len(vips), m)
		}
		return nil
	})
	if err != nil {
		return err
	}
	owners, err := r.waitOwners(10*time.Minute, len(vips), nil)
	if err != nil {
		return err
	}
	last := start
	for a, node := range owners {
		last = maxTime(last, r.fleet.Announced(node)[a])
	}
	report(r.name+"_bulk_all_announced_s", last.Sub(start).Seconds(), "s")
	fmt.Fprintf(os.Stderr, "bench: %d VIPs announced by %d speakers after %s\n", len(owners), countNodes(owners), last.Sub(start).Round(time.Millisecond))
	// The trailing writes (the announced-by annotation, Events) end:
	// wait until the counts stand still over two seconds.
	var w map[string]float64
	prev := -1.0
	err = rig.Eventually(2*time.Minute, func() error {
		time.Sleep(2 * time.Second)
		after, err := r.cp.RequestCounts(ctx)
		if err != nil {
			return err
		}
		w = controlplane.Writes(before, after)
		total := 0.0
		for k, v := range w {
			if serviceWrite(k) {
				total += v
			}
		}
		if total != prev {
			prev = total
			return fmt.Errorf("API writes still growing: %.0f", total)
		}
		return nil
	})
	if err != nil {
		return err
	}
	w["POST services"] -= float64(m) // the bench's own creates
	delete(w, "POST ipaddresses")    // the API server's ClusterIP allocations
	fmt.Fprintf(os.Stderr, "bench: API writes during %d Services: %s\n", m, controlplane.FormatCounts(w))
	total := 0.0
	for k, v := range w {
		if serviceWrite(k) {
			total += v
		}
	}
	report(r.name+"_api_writes_per_service", total/float64(m), "requests")
	return nil
}

// serviceWrite reports whether API writes counted under key (as
// controlplane.Writes names them) are the Services' doing: not leases
// (leader election), nodes (the CCM's node controllers, still at work on
// the simulated nodes) or token reviews (speakers enrolling, which are
// reads).
func serviceWrite(key string) bool {
	return !strings.HasSuffix(key, "leases") && !strings.Contains(key, " nodes") && !strings.HasSuffix(key, "tokenreviews")
}

// waitOwners waits until n addresses are announced, each by exactly one
// live speaker, and check (if set) accepts each owner; it returns the
// owners.
func (r *scaleRig) waitOwners(timeout time.Duration, n int, check func(netip.Addr, string) error) (map[netip.Addr]string, error) {
	out := map[netip.Addr]string{}
	err := rig.Eventually(timeout, func() error {
		clear(out)
		owners := r.fleet.Owners()
		if len(owners) != n {
			return fmt.Errorf("%d addresses announced, want %d", len(owners), n)
		}
		for a, nodes := range owners {
			if len(nodes) != 1 {
				return fmt.Errorf("%s announced by %v, want one speaker", a, nodes)
			}
			if check != nil {
				if err := check(a, nodes[0]); err != nil {
					return err
				}
			}
			out[a] = nodes[0]
		}
		return nil
	})
	return out, err
}

// changes creates and then deletes k Services one at a time and reports
// the p50 and p99 time from each call until the affected speaker had the
// instruction, and the most speakers told anything other than a heartbeat
// about one change.
func (r *scaleRig) changes(ctx context.Context, k int) error {
	var lat []time.Duration
	touched := 0
	for i := range k {
		svc := scale.Service("default", "change", i)
		ipv6(svc)
		counts := r.counts()
		sent := time.Now()
		if _, err := r.cp.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating %s: %w", svc.Name, err)
		}
		var vip, owner string
		err := rig.Eventually(time.Minute, func() error {
			s, err := r.cp.Client.CoreV1().Services("default").Get(ctx, svc.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				return fmt.Errorf("%s has no address", svc.Name)
			}
			vip = s.Status.LoadBalancer.Ingress[0].IP
			for node, a := range r.fleet.Arrivals(vip) {
				if a.Added && a.At.After(sent) {
					owner = node
					lat = append(lat, a.At.Sub(sent))
					return nil
				}
			}
			return fmt.Errorf("no speaker was told to announce %s (%s)", vip, svc.Name)
		})
		if err != nil {
			return err
		}
		n, err := r.touched(counts)
		if err != nil {
			return err
		}
		touched = max(touched, n)
		counts = r.counts()
		sent = time.Now()
		if err := r.cp.Client.CoreV1().Services("default").Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("deleting %s: %w", svc.Name, err)
		}
		err = rig.Eventually(time.Minute, func() error {
			if a, ok := r.fleet.Speaker(owner).Arrival(vip); ok && !a.Added && a.At.After(sent) {
				lat = append(lat, a.At.Sub(sent))
				return nil
			}
			return fmt.Errorf("%s was not told to withdraw %s (%s deleted)", owner, vip, svc.Name)
		})
		if err != nil {
			return err
		}
		if n, err = r.touched(counts); err != nil {
			return err
		}
		touched = max(touched, n)
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / float64(time.Millisecond) }
	report(r.name+"_change_p50_ms", q(0.50), "ms")
	report(r.name+"_change_p99_ms", q(0.99), "ms")
	report(r.name+"_change_speakers_touched", float64(touched), "speakers")
	return nil
}

// speakerCounts are the live speakers' instruction counts at one moment.
type speakerCounts map[string]struct{ other, heartbeats int }

// counts returns every live speaker's counts now.
func (r *scaleRig) counts() speakerCounts {
	out := speakerCounts{}
	for _, s := range r.fleet.Speakers() {
		if s.Killed() {
			continue
		}
		hb := s.Received()["heartbeat"]
		out[s.Node] = struct{ other, heartbeats int }{r.fleet.Received(s.Node), hb}
	}
	return out
}

// touched waits until every live speaker has had two more heartbeats
// than in before (the CCM sends each stream's instructions in order, so
// whatever it sent about the change came before them), then returns how
// many speakers received anything else since before.
func (r *scaleRig) touched(before speakerCounts) (int, error) {
	var n int
	err := rig.Eventually(time.Minute, func() error {
		n = 0
		now := r.counts()
		for node, b := range before {
			c, ok := now[node]
			if !ok {
				continue
			}
			if c.heartbeats < b.heartbeats+2 {
				return fmt.Errorf("%s had %d heartbeats since the change, want 2", node, c.heartbeats-b.heartbeats)
			}
			if c.other > b.other {
				n++
			}
		}
		return nil
	})
	return n, err
}

// nodeLoss kills the speaker announcing the most VIPs and reports the time
// from the kill until the last of its VIPs was announced by another
// speaker (which includes the CCM's detection of the loss).
func (r *scaleRig) nodeLoss() error {
	owners := r.fleet.Owners()
	held := map[string][]netip.Addr{}
	for a, nodes := range owners {
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
		return fmt.Errorf("no speaker announces anything")
	}
	killed := time.Now()
	if err := r.fleet.Kill(victim); err != nil {
		return err
	}
	after, err := r.waitOwners(5*time.Minute, len(owners), func(a netip.Addr, n string) error {
		if n == victim {
			return fmt.Errorf("%s still on %s", a, victim)
		}
		return nil
	})
	if err != nil {
		return err
	}
	last := killed
	for _, a := range held[victim] {
		last = maxTime(last, r.fleet.Announced(after[a])[a])
	}
	fmt.Fprintf(os.Stderr, "bench: killed %s: its %d VIPs announced elsewhere after %s\n", victim, len(held[victim]), last.Sub(killed).Round(time.Millisecond))
	report(r.name+"_node_loss_ms", float64(last.Sub(killed))/float64(time.Millisecond), "ms")
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// countNodes counts the distinct nodes in owners.
func countNodes(owners map[netip.Addr]string) int {
	seen := map[string]bool{}
	for _, n := range owners {
		seen[n] = true
	}
	return len(seen)
}
