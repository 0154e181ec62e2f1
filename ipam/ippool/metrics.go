package ippool

import (
	"math/big"

	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var poolAddresses = metrics.NewDesc("ironlb_pool_addresses",
	"Addresses of an IPPool by family and state (total, used, free). IPv6 counts above 2^53 are approximate.",
	[]string{"pool", "family", "state"}, nil, metrics.ALPHA, "")

// poolMetrics reports every pool's counts from the allocator at scrape
// time, so the figures are never stale.
var poolMetrics = scrape.New([]*metrics.Desc{poolAddresses})

func (c *Controller) collectMetrics(ch chan<- metrics.Metric) {
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
