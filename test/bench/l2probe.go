package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/ironlb/ironlb/test/rig"
)

// probeMetric is the speakers' histogram of their address-in-use probes
// (ARP probes / DAD before a VIP is first announced).
const probeMetric = "ironlb_speaker_probe_duration_seconds"

// benchConflictProbe prints l2_conflict_probe_ms: the mean duration of the
// speakers' address-in-use probes, from their own histogram (_sum over
// _count, every speaker's summed). The mean, not the median: the probes
// last about the same (≈40 ms by design) and the histogram's buckets
// around it (40 and 50 ms) only bound a median to within 10 ms; the
// median histogram_quantile would show is printed on stderr. It runs
// after the Services of service_create_to_reachable were created, each a
// first placement, so probed, on an idle machine.
func benchConflictProbe(ctx context.Context, r *rig.L2) error {
	var expositions []string
	for _, n := range r.Nodes {
		m, err := r.SpeakerMetrics(ctx, n)
		if err != nil {
			return fmt.Errorf("%s's metrics: %w", n.Name, err)
		}
		expositions = append(expositions, m)
	}
	q, count, err := histogramQuantile(0.5, probeMetric, expositions...)
	if err != nil {
		return err
	}
	if count == 0 {
		return fmt.Errorf("the speakers recorded no probe in %s", probeMetric)
	}
	sum := 0.0
	for _, e := range expositions {
		sum += rig.SumMetric(e, probeMetric+"_sum")
	}
	fmt.Fprintf(os.Stderr, "bench: %v probes, median by histogram_quantile %.1f ms\n", count, q*1000)
	report("l2_conflict_probe_ms", sum/count*1000, "ms")
	return nil
}

// histogramQuantile computes quantile q of the histogram name summed over
// the expositions (Prometheus text format), interpolating linearly inside
// the bucket that holds it. It returns the quantile and the observation
// count.
func histogramQuantile(q float64, name string, expositions ...string) (float64, float64, error) {
	buckets := map[float64]float64{} // upper bound -> cumulative count
	for _, e := range expositions {
		for _, line := range strings.Split(e, "\n") {
			rest, ok := strings.CutPrefix(line, name+"_bucket{")
			if !ok {
				continue
			}
			_, after, ok := strings.Cut(rest, `le="`)
			if !ok {
				continue
			}
			le, tail, ok := strings.Cut(after, `"`)
			if !ok {
				continue
			}
			f := strings.Fields(tail[strings.IndexByte(tail, '}')+1:])
			if len(f) == 0 {
				continue
			}
			v, err := strconv.ParseFloat(f[0], 64)
			if err != nil {
				return 0, 0, fmt.Errorf("%s: %q: %w", name, line, err)
			}
			ub := math.Inf(1)
			if le != "+Inf" {
				if ub, err = strconv.ParseFloat(le, 64); err != nil {
					return 0, 0, fmt.Errorf("%s: %q: %w", name, line, err)
				}
			}
			buckets[ub] += v
		}
	}
	if len(buckets) == 0 {
		return 0, 0, fmt.Errorf("no histogram %s in the speakers' /metrics", name)
	}
	bounds := make([]float64, 0, len(buckets))
	for ub := range buckets {
		bounds = append(bounds, ub)
	}
	slices.Sort(bounds)
	total := buckets[bounds[len(bounds)-1]]
	if total == 0 {
		return 0, 0, nil
	}
	rank := q * total
	lower, below := 0.0, 0.0
	for _, ub := range bounds {
		c := buckets[ub]
		if c >= rank {
			if math.IsInf(ub, 1) {
				return lower, total, nil // beyond the last finite bucket
			}
			return lower + (ub-lower)*(rank-below)/(c-below), total, nil
		}
		lower, below = ub, c
	}
	return lower, total, nil
}
