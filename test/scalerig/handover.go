package scalerig

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// leaseName is the shipped CCMs' Lease (deploy/ccm: ironlb-system).
const leaseName = "ironlb-ccm"

// placement is where each VIP is announced, and since when: the layer-2
// owner's and each BGP advertiser's start. A VIP withdrawn and announced
// again has a new start.
type placement map[netip.Addr]map[string]time.Time

// placed returns the live speakers' placement now.
func (r *Rig) placed() placement {
	out := placement{}
	for _, s := range r.Fleet.Speakers() {
		if s.Killed() {
			continue
		}
		note := func(a netip.Addr, at time.Time) {
			if out[a] == nil {
				out[a] = map[string]time.Time{}
			}
			out[a][s.Node] = at
		}
		for a, at := range s.Recorder.Announced() {
			note(a, at)
		}
		for p, at := range s.BGP.Exported() {
			note(p.Addr(), at)
		}
	}
	return out
}

// moved returns the VIPs of before whose placement differs in after,
// each described.
func moved(before, after placement) []string {
	var out []string
	for _, a := range slices.SortedFunc(maps.Keys(before), netip.Addr.Compare) {
		b, c := before[a], after[a]
		same := len(c) == len(b)
		for node, at := range b {
			if got, ok := c[node]; !ok || !got.Equal(at) {
				same = false
			}
		}
		if !same {
			out = append(out, fmt.Sprintf("%s on %v, then %v", a, slices.Sorted(maps.Keys(b)), slices.Sorted(maps.Keys(c))))
		}
	}
	return out
}

// Handover stops the leading CCM gracefully (SIGTERM) with the standby
// running and reports the time from the signal until every live speaker
// had a snapshot of the new leader's term (s), the time from the new
// leader's Lease acquisition until then (s), and how many VIPs moved (or
// were withdrawn and announced again) meanwhile, which must be none. It
// returns that count; the standby is the leading CCM afterwards.
func (r *Rig) Handover(ctx context.Context) (int, error) {
	if r.Standby == nil {
		return 0, fmt.Errorf("handover: no standby CCM (Options.Standby)")
	}
	var term uint64
	for _, s := range r.Fleet.Speakers() {
		for _, snap := range s.Snapshots() {
			term = max(term, snap.Term)
		}
	}
	before := r.placed()
	stopped := time.Now()
	if err := r.CCM.Stop(30 * time.Second); err != nil {
		return 0, fmt.Errorf("stopping the leading CCM: %w", err)
	}
	r.logf("leading CCM stopped %s after SIGTERM", time.Since(stopped).Round(time.Millisecond))
	r.CCM, r.Standby, r.ccmPort, r.stbPort = r.Standby, nil, r.stbPort, 0
	var last time.Time
	var leader string
	err := poll(ctx, 2*time.Minute, func() error {
		last = time.Time{}
		for _, s := range r.Fleet.Speakers() {
			if s.Killed() {
				continue
			}
			got := false
			for _, snap := range s.Snapshots() {
				if snap.Term > term {
					got, leader = true, snap.Leader
					last = maxTime(last, snap.At)
					break
				}
			}
			if !got {
				return fmt.Errorf("%s has no snapshot of a term after %d", s.Node, term)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	lease, err := r.CP.Client.CoordinationV1().Leases("ironlb-system").Get(ctx, leaseName, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("reading Lease %s: %w", leaseName, err)
	}
	if lease.Spec.AcquireTime == nil {
		return 0, fmt.Errorf("Lease %s has no acquireTime", leaseName)
	}
	acquired := lease.Spec.AcquireTime.Time
	// The snapshots are applied after they arrive: wait for two
	// heartbeats after them on every stream before comparing.
	if _, err := r.touched(r.counts()); err != nil {
		return 0, err
	}
	m := moved(before, r.placed())
	n := len(m)
	if n > 0 {
		r.logf("moved or announced again: %s", strings.Join(m[:min(n, 5)], "; "))
	}
	r.logf("handover to %s (Lease acquired %s after SIGTERM): every speaker had its snapshot %s after SIGTERM; %d VIPs moved",
		leader, acquired.Sub(stopped).Round(time.Millisecond), last.Sub(stopped).Round(time.Millisecond), n)
	r.report("handover_s", last.Sub(stopped).Seconds(), "s")
	r.report("handover_from_lease_s", last.Sub(acquired).Seconds(), "s")
	r.report("handover_vips_moved", float64(n), "VIPs")
	return n, nil
}
