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

// LocalMove moves the endpoints of k (or as many as there are) of the
// bulk's Services with externalTrafficPolicy Local, one at a time, to as
// many other nodes (half the fleet away), and reports the p50 and p99
// time from the EndpointSlice update until every new node was told to
// advertise the VIP (and every old one to withdraw it), and the most
// speakers told anything about one move (the old and the new nodes:
// 2 × 3). It returns that count. m is the bulk's size.
func (r *Rig) LocalMove(ctx context.Context, m, k int) (int, error) {
	var lat []time.Duration
	most := 0
	for i := 0; i < m && len(lat) < k; i++ {
		if KindOf(i) != Local {
			continue
		}
		name := scale.Name("bulk", i)
		svc, err := r.CP.Client.CoreV1().Services(Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return 0, fmt.Errorf("reading %s: %w", name, err)
		}
		if len(svc.Status.LoadBalancer.Ingress) == 0 {
			return 0, fmt.Errorf("%s has no address", name)
		}
		vip := svc.Status.LoadBalancer.Ingress[0].IP
		old := r.local[name]
		moved := r.localNodes(i/localEvery, r.opts.Nodes/2)
		counts := r.counts()
		sent := time.Now()
		if _, err := r.CP.Client.DiscoveryV1().EndpointSlices(Namespace).Update(ctx, endpointSlice(name, moved), metav1.UpdateOptions{}); err != nil {
			return 0, fmt.Errorf("moving %s's endpoints: %w", name, err)
		}
		r.local[name] = moved
		err = rig.Eventually(time.Minute, func() error {
			last, added := r.told(vip, sent, true)
			_, withdrawn := r.told(vip, sent, false)
			for _, n := range moved {
				if !slices.Contains(added, n) {
					return fmt.Errorf("%s was not told to advertise %s (%s's endpoints moved there)", n, vip, name)
				}
			}
			for _, n := range old {
				if !slices.Contains(withdrawn, n) && !slices.Contains(moved, n) {
					return fmt.Errorf("%s was not told to withdraw %s (%s's endpoints left it)", n, vip, name)
				}
			}
			lat = append(lat, last.Sub(sent))
			return nil
		})
		if err != nil {
			return 0, err
		}
		n, err := r.touched(counts)
		if err != nil {
			return 0, err
		}
		most = max(most, n)
	}
	if len(lat) == 0 {
		return 0, fmt.Errorf("no Service with externalTrafficPolicy Local among %d", m)
	}
	if _, _, err := r.waitAnnounced(ctx, time.Minute); err != nil {
		return 0, fmt.Errorf("after moving endpoints: %w", err)
	}
	r.report("local_move_p50_ms", quantileMs(lat, 0.50), "ms")
	r.report("local_move_p99_ms", quantileMs(lat, 0.99), "ms")
	r.report("local_move_speakers_touched", float64(most), "speakers")
	return most, nil
}
