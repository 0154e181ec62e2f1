package ippool

import (
	"math/big"
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
)

var poolAddresses = metrics.NewDesc("ironlb_pool_addresses",
	"Addresses of an IPPool by family and state (total, used, free). IPv6 counts above 2^53 are approximate.",
	[]string{"pool", "family", "state"}, nil, metrics.ALPHA, "")

// poolCollector reports every pool's counts from the allocator at scrape
// time, so the figures are never stale.
type poolCollector struct {
	metrics.BaseStableCollector
	c *Controller
}

var (
	registerOnce sync.Once
	collectorMu  sync.Mutex
	collected    *Controller
)

// registerMetrics makes c the source of ironlb_pool_addresses (the latest
// controller wins: one runs per process).
func registerMetrics(c *Controller) {
	collectorMu.Lock()
	collected = c
	collectorMu.Unlock()
	registerOnce.Do(func() { legacyregistry.CustomMustRegister(&poolCollector{}) })
}

func (pc *poolCollector) DescribeWithStability(ch chan<- *metrics.Desc) { ch <- poolAddresses }

func (pc *poolCollector) CollectWithStability(ch chan<- metrics.Metric) {
	collectorMu.Lock()
	c := collected
	collectorMu.Unlock()
	if c == nil {
		return
	}
	for _, pool := range c.Pools() {
		v4, v6, ok := c.alloc.Stats(pool)
		if !ok {
			continue
		}
		emit(ch, pool, "IPv4", v4.Total, v4.Used, v4.Free)
		emit(ch, pool, "IPv6", v6.Total, v6.Used, v6.Free)
	}
}

func emit(ch chan<- metrics.Metric, pool, family string, total *big.Int, used uint64, free *big.Int) {
	if total == nil || total.Sign() == 0 {
		return // the pool has no addresses of this family
	}
	f := func(b *big.Int) float64 { v, _ := new(big.Float).SetInt(b).Float64(); return v }
	ch <- metrics.NewLazyConstMetric(poolAddresses, metrics.GaugeValue, f(total), pool, family, "total")
	ch <- metrics.NewLazyConstMetric(poolAddresses, metrics.GaugeValue, float64(used), pool, family, "used")
	ch <- metrics.NewLazyConstMetric(poolAddresses, metrics.GaugeValue, f(free), pool, family, "free")
}
