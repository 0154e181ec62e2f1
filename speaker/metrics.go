package speaker

import (
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	instructionsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "instructions_total",
		Help:           "Instructions received from the CCM, by kind (snapshot, update, heartbeat, certificate, attest: a request for the current enrollment token, unknown) and result (applied, refused, fenced: from a leader older than the one followed, ignored: a kind this speaker does not know).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind", "result"})
	announcedDesc = metrics.NewDesc("ironlb_speaker_announced_vips",
		"VIPs this speaker answers for, by state (announcing, failed).", []string{"state"}, nil, metrics.ALPHA, "")
	streamsDesc = metrics.NewDesc("ironlb_speaker_ccm_streams",
		"Open control streams from CCMs (1 in steady state; 0 while no CCM is connected: the speaker keeps its last assignment).", nil, nil, metrics.ALPHA, "")
	appliedDesc = metrics.NewDesc("ironlb_speaker_applied_version",
		"Version of the CCM's instructions applied on the current stream.", nil, nil, metrics.ALPHA, "")
	interfaceUpDesc = metrics.NewDesc("ironlb_speaker_interface_usable",
		"1 while the interface can carry announcements.", []string{"interface"}, nil, metrics.ALPHA, "")
)

// agentMetrics reports the agent's state at scrape time.
var agentMetrics = scrape.New([]*metrics.Desc{announcedDesc, streamsDesc, appliedDesc, interfaceUpDesc}, instructionsTotal)

// RegisterMetrics exposes a's state in the legacy registry
// (k8s.io/component-base/metrics/legacyregistry), served at /metrics.
func RegisterMetrics(a *Agent) { agentMetrics.Set(a.collectMetrics) }

func (a *Agent) collectMetrics(ch chan<- metrics.Metric) {
	a.mu.Lock()
	ok, failed := 0, 0
	for _, v := range a.vips {
		if v.err != nil {
			failed++
		} else {
			ok++
		}
	}
	streams, applied := len(a.streams), a.applied
	ifcs := a.interfacesLocked()
	a.mu.Unlock()
	ch <- metrics.NewLazyConstMetric(announcedDesc, metrics.GaugeValue, float64(ok), "announcing")
	ch <- metrics.NewLazyConstMetric(announcedDesc, metrics.GaugeValue, float64(failed), "failed")
	ch <- metrics.NewLazyConstMetric(streamsDesc, metrics.GaugeValue, float64(streams))
	ch <- metrics.NewLazyConstMetric(appliedDesc, metrics.GaugeValue, float64(applied))
	for _, i := range ifcs {
		ch <- metrics.NewLazyConstMetric(interfaceUpDesc, metrics.GaugeValue, scrape.Bool(i.GetError() == ""), i.GetName())
	}
}
