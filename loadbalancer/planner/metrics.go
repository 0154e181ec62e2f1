package planner

import (
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	failoversTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "failovers_total",
		Help:           "VIPs moved from one node to another, by why the old node lost it (node_not_ready, node_excluded, node_deleted, node_selector, no_local_endpoint, fewer_local_endpoints, speaker_lost, speaker_unhealthy, missing_capability, announce_failed, data_plane_down, node_cordoned, ...).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	settlesTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "mass_speaker_losses_total",
		Help:           "Times most speakers were lost at once and the planner held their VIPs in place for the settle window.",
		StabilityLevel: metrics.ALPHA,
	})
	announcementsDesc = metrics.NewDesc("ironlb_announcements",
		"VIPs each node is told to announce.", []string{"node"}, nil, metrics.ALPHA, "")
	unannouncedDesc = metrics.NewDesc("ironlb_unannounced_vips",
		"VIPs no node may announce now (see the NoAnnouncingNode Event on their Service).", nil, nil, metrics.ALPHA, "")
	outsideDesc = metrics.NewDesc("ironlb_addresses_outside_pools",
		"VIPs held by Services that no IPPool covers any more (see the AddressOutsidePools Event); they keep their last announcement scope.", nil, nil, metrics.ALPHA, "")
	addressConflictsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Name: "address_conflicts_total",
		Help:           "Times a VIP's announcer found another host on the LAN answering for it (see the AddressInUse Event).",
		StabilityLevel: metrics.ALPHA,
	})
	inUseDesc = metrics.NewDesc("ironlb_vips_address_in_use",
		"VIPs another host on the LAN answers for, which IronLB does not announce meanwhile (see the AddressInUse Event on their Service).", nil, nil, metrics.ALPHA, "")
	settlingDesc = metrics.NewDesc("ironlb_planner_settling",
		"1 while VIPs of speakers lost in a mass loss are held in place (the settle window).", nil, nil, metrics.ALPHA, "")
)

// plannerMetrics reports the planner's state at scrape time.
var plannerMetrics = scrape.New([]*metrics.Desc{announcementsDesc, unannouncedDesc, outsideDesc, inUseDesc, settlingDesc},
	failoversTotal, settlesTotal, addressConflictsTotal)

func (p *Planner) collectMetrics(ch chan<- metrics.Metric) {
	p.mu.Lock()
	counts := map[string]int{}
	none, outside, inUse := 0, 0, 0
	for _, v := range p.vips {
		if len(v.announcers) == 0 {
			none++
		}
		for _, n := range v.announcers {
			counts[n]++
		}
		if v.pool == "" {
			outside++
		}
		if v.inUse != "" {
			inUse++
		}
	}
	settling := p.settle.active
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
	ch <- metrics.NewLazyConstMetric(outsideDesc, metrics.GaugeValue, float64(outside))
	ch <- metrics.NewLazyConstMetric(inUseDesc, metrics.GaugeValue, float64(inUse))
	ch <- metrics.NewLazyConstMetric(settlingDesc, metrics.GaugeValue, scrape.Bool(settling))
}
