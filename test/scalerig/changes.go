package scalerig

import (
	"context"
	"fmt"
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
)

// Touched is the most speakers told anything other than a heartbeat
// about one Service change, by kind.
type Touched struct {
	L2, BGP int
}

// Changes creates and then deletes k layer-2 and k BGP Services, one at a
// time, and reports per kind the p50 and p99 time from each call until
// every affected speaker had the instruction (layer 2: the one announcing
// it; BGP: every live speaker, all being eligible), and the most speakers
// told anything about one change. It returns those counts.
func (r *Rig) Changes(ctx context.Context, k int) (Touched, error) {
	var t Touched
	var lat [2][]time.Duration
	kinds := 2
	if layer2Only {
		kinds = 1
	}
	for i := range k {
		for kind, idx := range []int{2 * i, bgpIndex(i)}[:kinds] {
			l, n, err := r.change(ctx, idx)
			if err != nil {
				return t, err
			}
			lat[kind] = append(lat[kind], l...)
			if kind == 0 {
				t.L2 = max(t.L2, n)
			} else {
				t.BGP = max(t.BGP, n)
			}
		}
	}
	// The layer-2 figures keep their names from before BGP joined.
	for kind, name := range []string{"change", "change_bgp"}[:kinds] {
		r.report(name+"_p50_ms", quantileMs(lat[kind], 0.50), "ms")
		r.report(name+"_p99_ms", quantileMs(lat[kind], 0.99), "ms")
	}
	r.report("change_speakers_touched", float64(t.L2), "speakers")
	if !layer2Only {
		// A BGP change touches every eligible speaker: here all of them.
		r.report("change_bgp_speakers_touched", float64(t.BGP), "speakers")
	}
	return t, nil
}

// bgpIndex is the i-th Service index that KindOf makes BGP (not Local).
func bgpIndex(i int) int {
	if layer2Only {
		return -1 // none: Changes makes layer-2 changes only
	}
	for j := 1; ; j += 2 {
		if KindOf(j) == BGP {
			if i == 0 {
				return j
			}
			i--
		}
	}
}

// change creates Service change-<idx>, waits until the speakers that must
// announce it were told, deletes it and waits until they were told to
// withdraw it; it returns both latencies and the most speakers told
// anything about either.
func (r *Rig) change(ctx context.Context, idx int) ([]time.Duration, int, error) {
	svc := scale.Service(Namespace, "change", idx)
	shape(svc)
	bgp := KindOf(idx) != L2
	counts := r.counts()
	sent := time.Now()
	if _, err := r.CP.Client.CoreV1().Services(Namespace).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return nil, 0, fmt.Errorf("creating %s: %w", svc.Name, err)
	}
	var vip string
	var told []string
	var lat []time.Duration
	err := rig.Eventually(time.Minute, func() error {
		s, err := r.CP.Client.CoreV1().Services(Namespace).Get(ctx, svc.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			return fmt.Errorf("%s has no address", svc.Name)
		}
		vip = s.Status.LoadBalancer.Ingress[0].IP
		last, nodes := r.told(vip, sent, true)
		if len(nodes) == 0 || bgp && len(nodes) < len(counts) {
			return fmt.Errorf("%d speakers were told to announce %s (%s)", len(nodes), vip, svc.Name)
		}
		told = nodes
		lat = append(lat, last.Sub(sent))
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	n1, err := r.touched(counts)
	if err != nil {
		return nil, 0, err
	}
	counts = r.counts()
	sent = time.Now()
	if err := r.CP.Client.CoreV1().Services(Namespace).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil {
		return nil, 0, fmt.Errorf("deleting %s: %w", svc.Name, err)
	}
	err = rig.Eventually(time.Minute, func() error {
		last, nodes := r.told(vip, sent, false)
		for _, n := range told {
			if !slices.Contains(nodes, n) {
				return fmt.Errorf("%s was not told to withdraw %s (%s deleted)", n, vip, svc.Name)
			}
		}
		lat = append(lat, last.Sub(sent))
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	n2, err := r.touched(counts)
	return lat, max(n1, n2), err
}

// told returns the live speakers whose latest instruction about vip
// arrived after since and announced it (added) or withdrew it, and when
// the last of them arrived.
func (r *Rig) told(vip string, since time.Time, added bool) (time.Time, []string) {
	var last time.Time
	var nodes []string
	for node, a := range r.Fleet.Arrivals(vip) {
		if s := r.Fleet.Speaker(node); s.Killed() || a.Added != added || !a.At.After(since) {
			continue
		}
		nodes = append(nodes, node)
		last = maxTime(last, a.At)
	}
	return last, nodes
}

// speakerCounts are the live speakers' instruction counts at one moment.
type speakerCounts map[string]struct{ other, heartbeats int }

// counts returns every live speaker's counts now.
func (r *Rig) counts() speakerCounts {
	out := speakerCounts{}
	for _, s := range r.Fleet.Speakers() {
		if s.Killed() {
			continue
		}
		out[s.Node] = struct{ other, heartbeats int }{r.Fleet.Received(s.Node), s.Received()["heartbeat"]}
	}
	return out
}

// touched waits until every live speaker has had two more heartbeats
// than in before (the CCM sends each stream's instructions in order, so
// whatever it sent about the change came before them), then returns how
// many speakers received anything else since before.
func (r *Rig) touched(before speakerCounts) (int, error) {
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

// quantileMs is the q-quantile of lat in milliseconds (0 when empty).
func quantileMs(lat []time.Duration, q float64) float64 {
	if len(lat) == 0 {
		return 0
	}
	s := slices.Clone(lat)
	slices.Sort(s)
	return float64(s[int(q*float64(len(s)-1))]) / float64(time.Millisecond)
}
