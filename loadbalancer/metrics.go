package loadbalancer

import (
	"errors"

	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
	"github.com/ironlb/ironlb/ipam"
)

var (
	allocationsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "allocations_total",
		Help:           "Addresses assigned to Services, by pool.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"pool"})
	allocationFailuresTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "allocation_failures_total",
		Help:           "EnsureLoadBalancer calls that could not give a Service its addresses, by reason (no_pools, exhausted, conflict, no_pool, unknown_namespace, invalid, dhcp: no lease from a DHCP-backed pool's server yet, other).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	restoreConflictsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "restore_conflicts_total",
		Help:           "Services that could not keep an address of their status at a restart, because another Service held it without a common sharing key (see the AddressConflict Event).",
		StabilityLevel: metrics.ALPHA,
	})
	sharingConflictsDesc = metrics.NewDesc("ironlb_address_sharing_conflicts",
		"Shared addresses whose sharers clash (a port used twice, different externalTrafficPolicy): kept across a restart, reported by a SharingConflict Event; fix the Services.", nil, nil, metrics.ALPHA, "")
	outsidePolicyDesc = metrics.NewDesc("ironlb_services_outside_pool_policy",
		"Services keeping an address of the pool that its spec.serviceAllocation no longer allows (see the AddressNoLongerAllowed Event), by pool.", []string{"pool"}, nil, metrics.ALPHA, "")
	otherLoadBalancersDesc = metrics.NewDesc("ironlb_other_load_balancer_addresses",
		"Addresses that Services IronLB does not serve (another loadBalancerClass) list in their status, which IronLB never hands out.", nil, nil, metrics.ALPHA, "")
)

// balancerMetrics reports the allocator's state at scrape time.
var balancerMetrics = scrape.New([]*metrics.Desc{sharingConflictsDesc, outsidePolicyDesc, otherLoadBalancersDesc},
	allocationsTotal, allocationFailuresTotal, restoreConflictsTotal)

func (b *Balancer) collectMetrics(ch chan<- metrics.Metric) {
	ch <- metrics.NewLazyConstMetric(sharingConflictsDesc, metrics.GaugeValue, float64(b.alloc.ConflictingAddresses()))
	ch <- metrics.NewLazyConstMetric(otherLoadBalancersDesc, metrics.GaugeValue, float64(b.foreignAddresses()))
	outside := b.policy.outside()
	for _, p := range b.pools.Pools() {
		if _, ok := outside[p]; !ok {
			outside[p] = 0
		}
	}
	for p, n := range outside {
		ch <- metrics.NewLazyConstMetric(outsidePolicyDesc, metrics.GaugeValue, float64(n), p)
	}
}

// failureReason is the reason label of allocation_failures_total for err.
func failureReason(err error) string {
	switch {
	case errors.Is(err, ipam.ErrNoPools):
		return "no_pools"
	case errors.Is(err, ipam.ErrUnknownNamespace):
		return "unknown_namespace"
	case errors.Is(err, ipam.ErrExhausted):
		return "exhausted"
	case errors.Is(err, ipam.ErrConflict):
		return "conflict"
	case errors.Is(err, ipam.ErrNoPool):
		return "no_pool"
	case errors.Is(err, ipam.ErrInvalid):
		return "invalid"
	}
	return "other"
}
