package loadbalancer

import (
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	allocationsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "allocations_total",
		Help:           "Addresses assigned to Services, by pool.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	allocationFailuresTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "allocation_failures_total",
		Help:           "EnsureLoadBalancer calls that could not give a Service its addresses, by reason (no_pools, exhausted, conflict, no_pool, invalid, other).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	restoreConflictsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "restore_conflicts_total",
		Help:           "Services that could not keep an address of their status at a restart, because another Service held it without a common sharing key (see the AddressConflict Event).",
		StabilityLevel: metrics.ALPHA,
	})
	sharingConflictsDesc = metrics.NewDesc("ironlb_address_sharing_conflicts",
		"Shared addresses whose sharers clash (a port used twice, different externalTrafficPolicy): kept across a restart, reported by a SharingConflict Event; fix the Services.", nil, nil, metrics.ALPHA, "")
)

// balancerMetrics reports the allocator's state at scrape time.
var balancerMetrics = scrape.New([]*metrics.Desc{sharingConflictsDesc},
	allocationsTotal, allocationFailuresTotal, restoreConflictsTotal)

func (b *Balancer) collectMetrics(ch chan<- metrics.Metric) {
	ch <- metrics.NewLazyConstMetric(sharingConflictsDesc, metrics.GaugeValue, float64(b.alloc.ConflictingAddresses()))
}
