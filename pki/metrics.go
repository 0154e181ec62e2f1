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
		Help:           "Speaker enrollments by result: Enrolled, or the reason of the refusal (WrongNode, InvalidToken, NoToken, WrongServiceAccount, NoNodeInToken, NoPodInToken, PodGone, NodeGone, TokenReviewFailed, IssueFailed).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	renewals = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "renewals_total",
		Help:           "Node certificate renewals by result: Renewed, or the reason of the refusal (as for enrollments, and NotEnrolled; PodGone also when the token is another pod's than the certificate's).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"result"})
	revocations = metrics.NewCounterVec(&metrics.CounterOpts{
		Namespace: "ironlb", Subsystem: "speaker", Name: "revoked_sessions_total",
		Help:           "Speaker streams closed, or handshakes treated as not enrolled, because the pod or the Node the speaker's certificate was issued for is gone, by reason (PodGone, NodeGone, NotAttested, RenewalRefused, Unknown).",
		StabilityLevel: metrics.ALPHA,
	}, []string{"reason"})
)

// caMetrics reports the bundle's state at scrape time.
var caMetrics = scrape.New([]*metrics.Desc{caValidDesc, caTrustedDesc}, enrollments, renewals, revocations)

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
