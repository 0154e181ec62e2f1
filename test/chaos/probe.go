package chaos

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// steadyFor is how long a Service must have held its address before the
// prober expects its VIP to answer (an announcement takes milliseconds).
const steadyFor = 3 * time.Second

// sampler checks that announced VIPs answer the client: twice a second it
// connects to the VIP of a random Service that has held its address for a
// while. A failed connection counts only if the Service still holds the
// address afterwards (it was not deleted meanwhile).
type sampler struct {
	r   *rig.L2
	w   *watcher
	rng *rand.Rand

	mu         sync.Mutex
	probes     int
	unanswered int
}

func (s *sampler) run(ctx context.Context) {
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		steady := s.w.steady(steadyFor)
		if len(steady) == 0 {
			continue
		}
		keys := make([]string, 0, len(steady))
		for k := range steady {
			keys = append(keys, k)
		}
		key := keys[s.rng.IntN(len(keys))]
		addr := netip.MustParseAddr(steady[key])
		_, err := s.r.Reach(ctx, addr, time.Second)
		if err != nil {
			// Once more, in case the client's neighbor entry was stale.
			_, err = s.r.Reach(ctx, addr, time.Second)
		}
		s.mu.Lock()
		s.probes++
		if err != nil && ctx.Err() == nil && s.w.holds(key, steady[key], steadyFor) {
			s.unanswered++
			logf("sampler: %s's VIP %s does not answer: %v", key, addr, err)
		}
		s.mu.Unlock()
	}
}

func (s *sampler) result() (probes, unanswered int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.probes, s.unanswered
}

// Connections to watched VIPs: one every probeInterval to each, failed
// when not answered within probeTimeout (generous: the machine runs the
// whole cluster on two cores).
const (
	probeInterval = 50 * time.Millisecond
	probeTimeout  = time.Second
)

// watchConnections connects to each of vips every probeInterval until stop
// is called, and returns the attempts and the failed ones.
func watchConnections(r *rig.L2, vips []netip.Addr) (stop func() (attempts, failed int)) {
	var ps []*netrig.Probe
	for _, v := range vips {
		ps = append(ps, r.Client.StartProbe(netip.AddrPortFrom(v, rig.ServicePort), probeInterval, probeTimeout))
	}
	return func() (int, int) {
		attempts, failed := 0, 0
		for _, p := range ps {
			rs := p.Stop()
			attempts += len(rs)
			fails := netrig.Failures(rs)
			failed += len(fails)
			for _, f := range fails {
				logf("a connection failed at %s: %v", f.At.Format("15:04:05.000"), f.Err)
			}
		}
		return attempts, failed
	}
}
