package speakers

import (
	"net/netip"
	"slices"

	"k8s.io/component-base/metrics"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	lossDetection = metrics.NewHistogram(&metrics.HistogramOpts{
		Namespace: "ironlb", Name: "speaker_loss_detection_seconds",
		Help:           "Time from a speaker's last report to the CCM declaring it lost (stream broken or heartbeats missed); its VIPs move right after.",
		Buckets:        []float64{0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5, 10},
		StabilityLevel: metrics.ALPHA,
	})
	connectedDesc = metrics.NewDesc("ironlb_speaker_connected",
		"1 while the CCM has a working stream to the node's speaker.", []string{"node"}, nil, metrics.ALPHA, "")
	healthyDesc = metrics.NewDesc("ironlb_speaker_healthy",
		"1 while the node's speaker reports its default interface usable.", []string{"node"}, nil, metrics.ALPHA, "")
	infoDesc = metrics.NewDesc("ironlb_speaker_info",
		"1 for each node's speaker that reported since the CCM started leading, labelled with the version it reported.", []string{"node", "version"}, nil, metrics.ALPHA, "")
	lagDesc = metrics.NewDesc("ironlb_speaker_version_lag",
		"Instructions sent to the speaker on its stream that it has not confirmed yet.", []string{"node"}, nil, metrics.ALPHA, "")
	bgpUpDesc = metrics.NewDesc("ironlb_bgp_session_up",
		"1 while the node's BGP session with the peer is Established, as its speaker last reported.", []string{"node", "peer"}, nil, metrics.ALPHA, "")
	bgpRoutesDesc = metrics.NewDesc("ironlb_bgp_advertised_routes",
		"Routes the node's speaker advertises to the peer, as it last reported.", []string{"node", "peer"}, nil, metrics.ALPHA, "")
	bfdUpDesc = metrics.NewDesc("ironlb_bfd_session_up",
		"1 while the node's BFD session with the BGP peer is Up, as its speaker last reported.", []string{"node", "peer"}, nil, metrics.ALPHA, "")
	bfdFlaps = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "bfd", Name: "session_flaps_total",
		Help:           "Times a node's BFD session with the BGP peer went from Up to Down, as its speaker reported.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node", "peer"})
	bgpFlaps = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "bgp", Name: "session_flaps_total",
		Help:           "Times a node's Established BGP session with the peer went down, as its speaker reported.",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node", "peer"})
	heartbeatsSent = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeats_sent_total",
		Help:           "Heartbeats the CCM wrote on its streams to the speakers (every speaker answers each with a report).",
		StabilityLevel: metrics.ALPHA,
	})
	heartbeatIntervalSeconds = metrics.NewGauge(&metrics.GaugeOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "heartbeat_interval_seconds",
		Help:           "Interval between heartbeats on each speaker stream now: speakers.heartbeatInterval, or a multiple of it that keeps all streams within speakers.heartbeatRate.",
		StabilityLevel: metrics.ALPHA,
	})
	reportsReceived = metrics.NewCounter(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "reports_received_total",
		Help:           "Reports the CCM read from the speakers' streams (heartbeat answers included).",
		StabilityLevel: metrics.ALPHA,
	})
	reportItemsIgnored = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "report_items_ignored_total",
		Help:           "Parts of a node's speaker's reports the CCM did not take in: reports merged into the next because they came too fast (RateLimited), VIPs it did not allocate (UnknownVIP), BGP sessions with peers it did not configure on the node (UnknownPeer).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"node", "reason"})
)

// deletePeerSeries deletes the series of node's sessions with peers (no
// longer configured on it).
func deletePeerSeries(node string, peers []*speakerv1.BGPPeer) {
	for _, p := range peers {
		names := []string{p.GetAddress()}
		if a, err := netip.ParseAddr(p.GetAddress()); err == nil && a.String() != p.GetAddress() {
			names = append(names, a.String()) // as the speaker reports it
		}
		for _, n := range names {
			l := map[string]string{"node": node, "peer": n}
			bgpFlaps.Delete(l)
			bfdFlaps.Delete(l)
		}
	}
}

// deleteNodeSeries deletes the series of a deleted node, configured with
// peers.
func deleteNodeSeries(node string, peers []*speakerv1.BGPPeer) {
	deletePeerSeries(node, peers)
	for _, why := range ignoreReasons {
		reportItemsIgnored.Delete(map[string]string{"node": node, "reason": string(why)})
	}
}

// managerMetrics reports the sessions' state at scrape time.
var managerMetrics = scrape.New([]*metrics.Desc{connectedDesc, healthyDesc, infoDesc, lagDesc, bgpUpDesc, bgpRoutesDesc, bfdUpDesc}, lossDetection, bgpFlaps, bfdFlaps, reportItemsIgnored, heartbeatsSent, heartbeatIntervalSeconds, reportsReceived)

func (m *Manager) collectMetrics(ch chan<- metrics.Metric) {
	for _, n := range m.Nodes() {
		st, ok := m.State(n)
		if !ok {
			continue
		}
		ch <- metrics.NewLazyConstMetric(connectedDesc, metrics.GaugeValue, scrape.Bool(st.Connected), n)
		ch <- metrics.NewLazyConstMetric(healthyDesc, metrics.GaugeValue, scrape.Bool(st.Connected && st.Healthy), n)
		if st.Reported {
			ch <- metrics.NewLazyConstMetric(infoDesc, metrics.GaugeValue, 1, n, st.Version)
		}
		lag := 0.0
		if st.Connected && st.Sent > st.Applied {
			lag = float64(st.Sent - st.Applied)
		}
		ch <- metrics.NewLazyConstMetric(lagDesc, metrics.GaugeValue, lag, n)
		for i, s := range st.BGPSessions {
			// A speaker reports each peer once. Should one repeat a peer,
			// its first entry counts, as for the flap counters: a series
			// collected twice fails the whole scrape of /metrics.
			if slices.ContainsFunc(st.BGPSessions[:i], func(o *speakerv1.BGPSessionStatus) bool { return o.GetPeer() == s.GetPeer() }) {
				continue
			}
			ch <- metrics.NewLazyConstMetric(bgpUpDesc, metrics.GaugeValue, scrape.Bool(s.GetState() == "Established"), n, s.GetPeer())
			ch <- metrics.NewLazyConstMetric(bgpRoutesDesc, metrics.GaugeValue, float64(s.GetAdvertised()), n, s.GetPeer())
			if b := s.GetBfd(); b != nil {
				ch <- metrics.NewLazyConstMetric(bfdUpDesc, metrics.GaugeValue, scrape.Bool(b.GetState() == "Up"), n, s.GetPeer())
			}
		}
	}
}
