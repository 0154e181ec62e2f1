package capiipam

import (
	"strings"

	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	refusalsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "capi", Name: "claim_refusals_total",
		Help:           "Attempts to answer a Cluster API IPAddressClaim that failed, by the reason of its Ready condition (PoolNotFound, PoolNotEnabled, PoolNotReady, NamespaceNotAllowed, PoolExhausted, AddressConflict, AllocationFailed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	claimsDesc = metrics.NewDesc("ironlb_capi_claims",
		"Cluster API IPAddressClaims naming IronLB IPPools, by state: ready (answered), refused (Ready=False), paused.", []string{"state"}, nil, metrics.ALPHA, "")
)

var claimMetrics = scrape.New([]*metrics.Desc{claimsDesc}, refusalsTotal)

func (c *Controller) collectMetrics(ch chan<- metrics.Metric) {
	counts := map[string]float64{"ready": 0, "refused": 0, "paused": 0}
	c.mu.Lock()
	for _, s := range c.state {
		state, _, _ := strings.Cut(s, "\x00")
		switch state {
		case string(ReasonReady):
			counts["ready"]++
		case "paused":
			counts["paused"]++
		default:
			counts["refused"]++
		}
	}
	c.mu.Unlock()
	for state, n := range counts {
		ch <- metrics.NewLazyConstMetric(claimsDesc, metrics.GaugeValue, n, state)
	}
}
