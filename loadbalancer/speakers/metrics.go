package speakers

import (
	"sync"

	"k8s.io/component-base/metrics"
	"k8s.io/component-base/metrics/legacyregistry"
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
	lagDesc = metrics.NewDesc("ironlb_speaker_version_lag",
		"Instructions sent to the speaker on its stream that it has not confirmed yet.", []string{"node"}, nil, metrics.ALPHA, "")
)

var (
	registerOnce sync.Once
	managerMu    sync.Mutex
	manager      *Manager
)

func registerMetrics(m *Manager) {
	managerMu.Lock()
	manager = m
	managerMu.Unlock()
	registerOnce.Do(func() {
		legacyregistry.MustRegister(lossDetection)
		legacyregistry.CustomMustRegister(&collector{})
	})
}

type collector struct{ metrics.BaseStableCollector }

func (*collector) DescribeWithStability(ch chan<- *metrics.Desc) {
	ch <- connectedDesc
	ch <- healthyDesc
	ch <- lagDesc
}

func (*collector) CollectWithStability(ch chan<- metrics.Metric) {
	managerMu.Lock()
	m := manager
	managerMu.Unlock()
	if m == nil {
		return
	}
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	for _, n := range m.Nodes() {
		st, ok := m.State(n)
		if !ok {
			continue
		}
		ch <- metrics.NewLazyConstMetric(connectedDesc, metrics.GaugeValue, b(st.Connected), n)
		ch <- metrics.NewLazyConstMetric(healthyDesc, metrics.GaugeValue, b(st.Connected && st.Healthy), n)
		lag := 0.0
		if st.Connected && st.Sent > st.Applied {
			lag = float64(st.Sent - st.Applied)
		}
		ch <- metrics.NewLazyConstMetric(lagDesc, metrics.GaugeValue, lag, n)
	}
}
