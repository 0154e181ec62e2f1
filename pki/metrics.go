package pki

import (
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

var (
	caValidDesc = metrics.NewDesc("ironlb_ca_valid",
		"1 while the CCM can use the CA Secret ironlb-ca to issue certificates; 0 when it is invalid (see the InvalidCA Event on the Secret): speakers keep what they announce, but the CCM cannot reach them.", nil, nil, metrics.ALPHA, "")
	caTrustedDesc = metrics.NewDesc("ironlb_ca_trusted",
		"CAs the CCM trusts: 2 during a rotation (ironlb-ca-previous present), else 1.", nil, nil, metrics.ALPHA, "")
	enrollments = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "enrollments_total",
		Help:           "Speaker enrollments by result: Enrolled, or the reason of the refusal (WrongNode, InvalidToken, NoToken, WrongServiceAccount, NoNodeInToken, TokenReviewFailed, IssueFailed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
)

// caMetrics reports the bundle's state at scrape time.
var caMetrics = scrape.New([]*metrics.Desc{caValidDesc, caTrustedDesc}, enrollments)

func (b *Bundle) collectMetrics(ch chan<- metrics.Metric) {
	st := b.state.Load()
	ch <- metrics.NewLazyConstMetric(caValidDesc, metrics.GaugeValue, scrape.Bool(st.problem == "" && st.current != nil))
	n := 0.0
	if st.current != nil {
		n++
	}
	if st.previous != nil {
		n++
	}
	ch <- metrics.NewLazyConstMetric(caTrustedDesc, metrics.GaugeValue, n)
}
