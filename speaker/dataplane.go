package speaker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// DefaultKubeProxyHealthzURL is kube-proxy's health check on every node.
const DefaultKubeProxyHealthzURL = "http://127.0.0.1:10256/healthz"

// How the data plane is checked.
const (
	dataPlanePoll        = 100 * time.Millisecond
	dataPlaneTimeout     = 200 * time.Millisecond
	dataPlaneFailures    = 2 // consecutive failures that make it not ready
	dataPlaneHoldDown    = 3 * time.Second
	dataPlaneHoldDownMax = 60 * time.Second
	// dataPlaneFlapWindow: a failure this soon after a recovery doubles
	// the hold-down.
	dataPlaneFlapWindow = 60 * time.Second
)

// DataPlaneHealth follows the node's data plane through kube-proxy's
// health check (Report.data_plane). It gates only once kube-proxy has
// answered healthy since the speaker started: a node without kube-proxy
// (another data plane) is never gated. It is not ready after
// dataPlaneFailures consecutive failed checks (a refused connection fails
// it at once: kube-proxy is not running), and ready again after a
// hold-down of continuous health: dataPlaneHoldDown, doubled on every
// failure within dataPlaneFlapWindow of the last recovery, up to
// dataPlaneHoldDownMax.
type DataPlaneHealth struct {
	url    string
	client *http.Client
	log    logr.Logger
	now    func() time.Time

	mu           sync.Mutex
	seenHealthy  bool
	toldUnseen   bool // logged that kube-proxy has not answered yet
	ready        bool
	reason       string
	since        time.Time
	fails        int
	holdDown     time.Duration
	healthySince time.Time // of the current run of healthy checks while not ready
	recovered    time.Time // last not ready → ready
	onChange     func()
}

// NewDataPlaneHealth checks kube-proxy's health at url.
func NewDataPlaneHealth(url string, log logr.Logger) *DataPlaneHealth {
	return newDataPlaneHealth(url, log, time.Now)
}

func newDataPlaneHealth(url string, log logr.Logger, now func() time.Time) *DataPlaneHealth {
	return &DataPlaneHealth{
		url: url, log: log, now: now,
		client:   &http.Client{Timeout: dataPlaneTimeout},
		ready:    true,
		since:    now(),
		holdDown: dataPlaneHoldDown,
	}
}

// WithDataPlane makes the agent report h (Report.data_plane, capability
// "data-plane") and tell the CCM when it changes.
func WithDataPlane(h *DataPlaneHealth) Option {
	return func(a *Agent) {
		a.dataPlane = h
		h.mu.Lock()
		h.onChange = func() {
			a.mu.Lock()
			defer a.mu.Unlock()
			a.notifyLocked()
		}
		h.mu.Unlock()
	}
}

// Run checks every dataPlanePoll until ctx ends.
func (h *DataPlaneHealth) Run(ctx context.Context) {
	t := time.NewTicker(dataPlanePoll)
	defer t.Stop()
	for {
		ok, refused, reason := h.check(ctx)
		if ctx.Err() != nil {
			return
		}
		h.observe(ok, refused, reason)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// check asks kube-proxy once.
func (h *DataPlaneHealth) check(ctx context.Context) (ok, refused bool, reason string) {
	ctx, cancel := context.WithTimeout(ctx, dataPlaneTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, h.url, nil)
	if err != nil {
		return false, false, fmt.Sprintf("kube-proxy health check %s: %v", h.url, err)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		return false, errors.Is(err, syscall.ECONNREFUSED), fmt.Sprintf("kube-proxy health check %s: %v", h.url, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, false, fmt.Sprintf("kube-proxy health check %s answered %s", h.url, resp.Status)
	}
	return true, false, ""
}

// observe takes the result of one check.
func (h *DataPlaneHealth) observe(ok, refused bool, reason string) {
	h.mu.Lock()
	changed := h.observeLocked(ok, refused, reason)
	fn := h.onChange
	h.mu.Unlock()
	if changed && fn != nil {
		fn()
	}
}

func (h *DataPlaneHealth) observeLocked(ok, refused bool, reason string) bool {
	now := h.now()
	if !h.seenHealthy {
		if ok {
			h.seenHealthy = true
			h.log.Info("kube-proxy answers its health check: VIPs leave this node while it is unhealthy", "url", h.url)
		} else if !h.toldUnseen {
			h.toldUnseen = true
			h.log.Info("kube-proxy has not answered its health check (yet): this node's VIPs are not gated on it until it does", "url", h.url, "reason", reason)
		}
		return false
	}
	if ok {
		h.fails = 0
		if h.ready {
			return false
		}
		if h.healthySince.IsZero() {
			h.healthySince = now
		}
		if now.Sub(h.healthySince) < h.holdDown {
			return false
		}
		h.ready, h.reason, h.since, h.recovered = true, "", now, now
		h.log.Info("kube-proxy is healthy again: the node's data plane is ready", "heldDown", h.holdDown)
		return true
	}
	h.healthySince = time.Time{}
	h.fails++
	if h.ready && (refused || h.fails >= dataPlaneFailures) {
		if !h.recovered.IsZero() && now.Sub(h.recovered) <= dataPlaneFlapWindow {
			h.holdDown = min(2*h.holdDown, dataPlaneHoldDownMax)
		} else {
			h.holdDown = dataPlaneHoldDown
		}
		h.ready, h.reason, h.since = false, reason, now
		h.log.Info("kube-proxy is unhealthy: the node's data plane is not ready", "reason", reason, "holdDown", h.holdDown)
		return true
	}
	return false
}

// Status is what Report.data_plane says.
func (h *DataPlaneHealth) Status() *speakerv1.DataPlane {
	h.mu.Lock()
	defer h.mu.Unlock()
	return &speakerv1.DataPlane{Ready: h.ready, Reason: h.reason, SinceUnixMs: h.since.UnixMilli()}
}
