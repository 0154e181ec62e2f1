package cpvip

import (
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	takeoversTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "takeovers_total",
		Help:           "Times this speaker took the control-plane VIP over.",
		StabilityLevel: metrics.ALPHA,
	})
	releasesTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "releases_total",
		Help:           "Times this speaker released the control-plane VIP, by reason (unready: its apiserver turned unready, precedence: another holder kept it after a partition healed, shutdown).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	rejectedTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "messages_rejected_total",
		Help:           "Election messages dropped, by reason (size, malformed, signature, vip, replay, clock, peers, rate, no-key).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
	reassertsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "reasserts_total",
		Help:           "Times this speaker, holding the control-plane VIP, heard another holder with a weaker claim and announced the VIP again (at most once per dead interval): a healed partition, or, if it keeps rising, a node that hears no election message (a firewall on UDP 7477) and answers for the VIP beside this one.",
		StabilityLevel: metrics.ALPHA,
	})
	stallsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "loop_stalls_total",
		Help:           "Times the election loop woke up more than 300 ms late (a starved node) and listened a dead interval again before any take-over.",
		StabilityLevel: metrics.ALPHA,
	})
	receivedTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "control_plane_vip", Name: "messages_accepted_total",
		Help:           "Election messages from other speakers accepted.",
		StabilityLevel: metrics.ALPHA,
	})
	holdingDesc = metrics.NewDesc("ironlb_control_plane_vip_holding",
		"1 while this speaker serves the control-plane VIP.", nil, nil, metrics.ALPHA, "")
	apiserverReadyDesc = metrics.NewDesc("ironlb_control_plane_vip_apiserver_ready",
		"1 while the local kube-apiserver's /readyz answers ok.", nil, nil, metrics.ALPHA, "")
	epochDesc = metrics.NewDesc("ironlb_control_plane_vip_epoch",
		"The holder's epoch as this speaker sees it.", nil, nil, metrics.ALPHA, "")
)

var speakerMetrics = scrape.New([]*metrics.Desc{holdingDesc, apiserverReadyDesc, epochDesc},
	takeoversTotal, releasesTotal, reassertsTotal, stallsTotal, rejectedTotal, receivedTotal)

// registerMetrics makes s the source of the gauges, served at /metrics.
func registerMetrics(s *Speaker) {
	speakerMetrics.Set(func(ch chan<- metrics.Metric) {
		st := s.Status()
		ch <- metrics.NewLazyConstMetric(holdingDesc, metrics.GaugeValue, scrape.Bool(st.Serving))
		ch <- metrics.NewLazyConstMetric(apiserverReadyDesc, metrics.GaugeValue, scrape.Bool(st.APIServerReady))
		ch <- metrics.NewLazyConstMetric(epochDesc, metrics.GaugeValue, float64(st.Epoch))
	})
}
