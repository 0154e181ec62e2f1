package cluster_test

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ironlb/ironlb/test/cluster"
)

// curlProber starts a curl (-m 1) from the outside client to vip every
// interval, each on its own, and keeps every outcome.
type curlProber struct {
	done chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	res  []probe
}

type probe struct {
	at time.Time
	ok bool
}

func startCurlProber(c *cluster.Cluster, vip netip.Addr, interval time.Duration) *curlProber {
	p := &curlProber{done: make(chan struct{})}
	url := fmt.Sprintf("http://%s/hostname", vip)
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		inflight := make(chan struct{}, 40)
		for {
			select {
			case <-p.done:
				return
			case <-tick.C:
			}
			select {
			case inflight <- struct{}{}:
			default:
				continue // 40 hanging already: skip a beat
			}
			p.wg.Add(1)
			go func(at time.Time) {
				defer p.wg.Done()
				out, err := c.Client.Run("curl", "-sS", "-m", "1", url)
				<-inflight
				p.mu.Lock()
				p.res = append(p.res, probe{at: at, ok: err == nil && strings.HasPrefix(out, "web-")})
				p.mu.Unlock()
			}(time.Now())
		}
	}()
	return p
}

// stop ends the probing and returns the outage: from the start of the
// first failed request to the start of the first successful one after
// it (zero if none failed), and how many of how many requests failed.
func (p *curlProber) stop() (outage time.Duration, failed, total int) {
	close(p.done)
	p.wg.Wait()
	res := slices.Clone(p.res)
	slices.SortFunc(res, func(a, b probe) int { return a.at.Compare(b.at) })
	var firstFail time.Time
	for _, r := range res {
		switch {
		case !r.ok:
			failed++
			if firstFail.IsZero() {
				firstFail = r.at
			}
		case !firstFail.IsZero() && outage == 0:
			outage = r.at.Sub(firstFail)
		}
	}
	return outage, failed, len(res)
}
