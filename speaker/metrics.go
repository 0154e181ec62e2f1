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
	probeDuration = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "probe_duration_seconds",
		Help:           "How long one probe of the LAN (ARP probes, IPv6 duplicate address detection) for the VIPs of one instruction on one interface took.",
		Buckets:        []float64{0.01, 0.025, 0.04, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2},
		StabilityLevel: metrics.ALPHA,
	})
	claimsTotal = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "vip_claims_total",
		Help:           "Packets of other hosts claiming a VIP this speaker answers for, by kind (arp-request, arp-reply, arp-probe, na, ns, dad, other).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"kind"})
	yieldsTotal = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "vip_yields_total",
		Help:           "VIPs given up because another host claimed them while this speaker was cut off from the CCM.",
		StabilityLevel: metrics.ALPHA,
	})
	conflictsDesc = metrics.NewDesc("ironlb_speaker_vip_conflicts",
		"VIPs not announced because a probe found another host using the address (CONFLICT).", nil, nil, metrics.ALPHA, "")
	interfaceUpDesc = metrics.NewDesc("ironlb_speaker_interface_usable",
		"1 while the interface can carry announcements.", []string{"interface"}, nil, metrics.ALPHA, "")
)

// agentMetrics reports the agent's state at scrape time.
var agentMetrics = scrape.New([]*metrics.Desc{announcedDesc, streamsDesc, appliedDesc, interfaceUpDesc, conflictsDesc},
	instructionsTotal, probeDuration, claimsTotal, yieldsTotal)

// RegisterMetrics exposes a's state in the legacy registry
// (k8s.io/component-base/metrics/legacyregistry), served at /metrics.
func RegisterMetrics(a *Agent) { agentMetrics.Set(a.collectMetrics) }

func (a *Agent) collectMetrics(ch chan<- metrics.Metric) {
	a.mu.Lock()
	ok, failed, conflicts := 0, 0, 0
	for _, v := range a.vips {
		switch {
		case v.err != nil:
			failed++
		case v.state == stateConflict:
			conflicts++
		case v.state == stateAnnouncing:
			ok++
		}
	}
	streams, applied := len(a.streams), a.applied
	ifcs := a.interfacesLocked()
	a.mu.Unlock()
	ch <- metrics.NewLazyConstMetric(announcedDesc, metrics.GaugeValue, float64(ok), "announcing")
	ch <- metrics.NewLazyConstMetric(announcedDesc, metrics.GaugeValue, float64(failed), "failed")
	ch <- metrics.NewLazyConstMetric(conflictsDesc, metrics.GaugeValue, float64(conflicts))
	ch <- metrics.NewLazyConstMetric(streamsDesc, metrics.GaugeValue, float64(streams))
	ch <- metrics.NewLazyConstMetric(appliedDesc, metrics.GaugeValue, float64(applied))
	for _, i := range ifcs {
		ch <- metrics.NewLazyConstMetric(interfaceUpDesc, metrics.GaugeValue, scrape.Bool(i.GetError() == ""), i.GetName())
	}
}
