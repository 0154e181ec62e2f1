package dhcplease

import (
	"errors"

	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	acquisitionsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "dhcp", Name: "acquisitions_total",
		Help:           "Leases IronLB asked the LAN's DHCP server for, by result (granted, no_answer, refused, not_requested, no_speaker, invalid).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	renewalsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "dhcp", Name: "renewals_total",
		Help:           "Lease renewals, by result (sent, granted, refused, unanswered, expired).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	leasesDesc = metrics.NewDesc("ironlb_dhcp_leases",
		"Addresses IronLB holds leased from the LAN's DHCP server, by pool.", []string{"pool"}, nil, metrics.ALPHA, "")
)

var managerMetrics = scrape.New([]*metrics.Desc{leasesDesc}, acquisitionsTotal, renewalsTotal)

// collect reports the leases at scrape time.
func (m *Manager) collect(ch chan<- metrics.Metric) {
	m.mu.Lock()
	n := map[string]int{}
	for _, l := range m.leases {
		n[l.Pool]++
	}
	m.mu.Unlock()
	for p, c := range n {
		ch <- metrics.NewLazyConstMetric(leasesDesc, metrics.GaugeValue, float64(c), p)
	}
}

// resultOf is the result label of acquisitions_total for err.
func resultOf(err error) string {
	switch {
	case err == nil:
		return "granted"
	case errors.Is(err, ErrNoAnswer):
		return "no_answer"
	case errors.Is(err, ErrRefused):
		return "refused"
	case errors.Is(err, ErrNotRequested):
		return "not_requested"
	case errors.Is(err, ErrNoSpeaker):
		return "no_speaker"
	}
	return "invalid"
}
