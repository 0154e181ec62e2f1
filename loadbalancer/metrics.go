package loadbalancer

import (
	"strings"

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
	failoversTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "failovers_total",
		Help:           "VIPs moved from one node to another, by why the old node lost it.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	announcementsDesc = metrics.NewDesc("ironlb_announcements",
		"VIPs each node is told to announce.", []string{"node"}, nil, metrics.ALPHA, "")
	unannouncedDesc = metrics.NewDesc("ironlb_unannounced_vips",
		"VIPs no node may announce now (see the NoAnnouncingNode Event on their Service).", nil, nil, metrics.ALPHA, "")
)

// plannerMetrics reports the planner's state at scrape time.
var plannerMetrics = scrape.New([]*metrics.Desc{announcementsDesc, unannouncedDesc},
	allocationsTotal, allocationFailuresTotal, failoversTotal)

func (p *Planner) collectMetrics(ch chan<- metrics.Metric) {
	p.mu.Lock()
	counts := map[string]int{}
	none := 0
	for _, v := range p.vips {
		if v.owner == "" {
			none++
		} else {
			counts[v.owner]++
		}
	}
	p.mu.Unlock()
	for _, n := range p.speakers.Nodes() {
		if _, ok := counts[n]; !ok {
			counts[n] = 0
		}
	}
	for n, c := range counts {
		ch <- metrics.NewLazyConstMetric(announcementsDesc, metrics.GaugeValue, float64(c), n)
	}
	ch <- metrics.NewLazyConstMetric(unannouncedDesc, metrics.GaugeValue, float64(none))
}

// reasonCode turns an eligibility reason into a short metric label.
func reasonCode(reason string) string {
	for _, c := range []struct{ substr, code string }{
		{"not Ready", "node_not_ready"},
		{"labelled", "node_excluded"},
		{"nodeSelector", "node_selector"},
		{"no ready endpoint", "no_local_endpoint"},
		{"not connected", "speaker_lost"},
		{"unhealthy", "speaker_unhealthy"},
		{"announce it", "announce_failed"},
		{"deleted", "node_deleted"},
		{"InternalIP", "no_node_address"},
	} {
		if strings.Contains(reason, c.substr) {
			return c.code
		}
	}
	return "other"
}
