package cpvip

import (
	"context"
	"net/http"
	"net/netip"

	"github.com/go-logr/logr"
	"k8s.io/component-base/metrics"

	"github.com/ironlb/ironlb/internal/scrape"
)

// BGPModeConfig is a BGP control-plane speaker's configuration.
type BGPModeConfig struct {
	VIP       netip.Addr
	Node      string
	NodeIP    netip.Addr
	BGP       BGPConfig
	Readiness ReadinessConfig
}

// BGPMode is a BGP control-plane speaker: the local apiserver's readiness
// (Readiness, the same checks as layer 2) drives the BGP runner.
type BGPMode struct {
	cfg     BGPModeConfig
	b       *BGP
	ready   *Readiness
	readyCh chan bool // holds the latest readiness not yet taken
}

// NewBGPMode returns a BGP control-plane speaker; Run runs it.
func NewBGPMode(cfg BGPModeConfig, log logr.Logger) (*BGPMode, error) {
	b, err := NewBGP(log, cfg.BGP, cfg.VIP, cfg.NodeIP)
	if err != nil {
		return nil, err
	}
	m := &BGPMode{cfg: cfg, b: b, readyCh: make(chan bool, 1)}
	m.ready = NewReadiness(cfg.Readiness, log.WithName("apiserver"), m.readyChanged)
	speakerMetrics.Set(func(ch chan<- metrics.Metric) {
		st := m.Status()
		ch <- metrics.NewLazyConstMetric(holdingDesc, metrics.GaugeValue, scrape.Bool(st.Serving))
		ch <- metrics.NewLazyConstMetric(apiserverReadyDesc, metrics.GaugeValue, scrape.Bool(st.APIServerReady))
	})
	return m, nil
}

// readyChanged hands the latest readiness to the runner, replacing one it
// has not taken yet (Readiness calls it from one goroutine).
func (m *BGPMode) readyChanged(st ReadyState) {
	for {
		select {
		case m.readyCh <- st.Ready:
			return
		default:
			select {
			case <-m.readyCh:
			default:
			}
		}
	}
}

// Run checks the apiserver and advertises the VIP while it is ready, until
// ctx ends; then withdraws it (see BGP.Run).
func (m *BGPMode) Run(ctx context.Context) error {
	go m.ready.Run(ctx)
	return m.b.Run(ctx, m.readyCh)
}

// Status returns the speaker's current view.
func (m *BGPMode) Status() Status {
	rs := m.ready.State()
	st := Status{VIP: m.cfg.VIP.String(), Node: m.cfg.Node, NodeIP: m.cfg.NodeIP.String(),
		APIServerReady: rs.Ready, APIServerError: rs.Err}
	m.b.Fill(&st)
	return st
}

// HTTPHandler serves /healthz (the runner's loop goes round), /readyz (the
// BGP sessions are set up), /status and /metrics.
func (m *BGPMode) HTTPHandler() http.Handler {
	return endpoints{
		loop:     "BGP loop",
		lastLoop: m.b.lastLoop.Load,
		ready: func() string {
			if !m.b.applied.Load() {
				return "BGP sessions not set up yet"
			}
			return ""
		},
		status: m.Status,
	}.handler()
}

// ListenAndServe serves the HTTP endpoints on addr until ctx ends.
func (m *BGPMode) ListenAndServe(ctx context.Context, addr string) error {
	return serveHTTP(ctx, addr, m.HTTPHandler())
}
