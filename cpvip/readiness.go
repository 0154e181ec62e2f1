package cpvip

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Readiness checking of the local kube-apiserver.
const (
	// ReadyInterval is how often /readyz is polled.
	ReadyInterval = 100 * time.Millisecond
	// ReadyTimeout bounds one /readyz request.
	ReadyTimeout = 250 * time.Millisecond
	// UnreadyAfter failed checks in a row make the apiserver unready when
	// one of them was a definite failure (an answer other than 200, a
	// refused connection, a bad certificate): a stopping kube-apiserver
	// fails /readyz at once. Checks that only timed out are ambiguous (a
	// busy node: an apiserver starting beside it, etcd catching up) and
	// make it unready only after UnreadyAfterTimeouts in a row, about
	// three seconds, so that a starved but working holder does not give
	// the VIP away. ReadinessConfig.ReadyAfter successes make it ready
	// again.
	UnreadyAfter         = 3
	UnreadyAfterTimeouts = 9
	// BGPReadyAfter is ReadyAfter in BGP mode: ready for a second before
	// the route is advertised again.
	BGPReadyAfter = 10
	// maxReadyzBody bounds what is read of an answer.
	maxReadyzBody = 4096
)

// ReadinessConfig is where and how the local apiserver is checked.
type ReadinessConfig struct {
	// URL is the /readyz URL, such as https://127.0.0.1:6443/readyz.
	URL string
	// CAFile holds the CAs the apiserver's certificate must chain to.
	CAFile string
	// ServerName is the name its certificate must hold.
	ServerName string
	// Interval and Timeout default to ReadyInterval and ReadyTimeout.
	Interval, Timeout time.Duration
	// ReadyAfter is how many successful checks in a row turn an unready
	// apiserver ready (default 1). BGP mode asks for BGPReadyAfter, so
	// that an apiserver whose /readyz flickers does not have its route
	// advertised and withdrawn several times a second (routers damp
	// flapping routes).
	ReadyAfter int
}

// ReadyState is the apiserver's readiness as last judged.
type ReadyState struct {
	Ready bool
	// Err is the last check's failure ("" after a success).
	Err string
}

// Readiness polls the local apiserver's /readyz over TLS verified against
// the CA file (re-read when it changes; missing = not ready). It is safe
// for concurrent use.
type Readiness struct {
	cfg      ReadinessConfig
	log      logr.Logger
	onChange func(ReadyState)

	// client and caStamp belong to Run's goroutine.
	client  *http.Client
	caStamp string

	mu    sync.Mutex
	state ReadyState
}

// NewReadiness returns a Readiness; onChange (which must not block long)
// is called from Run's goroutine each time the apiserver turns ready or
// unready.
func NewReadiness(cfg ReadinessConfig, log logr.Logger, onChange func(ReadyState)) *Readiness {
	if cfg.Interval <= 0 {
		cfg.Interval = ReadyInterval
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = ReadyTimeout
	}
	if cfg.ReadyAfter <= 0 {
		cfg.ReadyAfter = 1
	}
	return &Readiness{cfg: cfg, log: log, onChange: onChange, state: ReadyState{Err: "not checked yet"}}
}

// State returns the current state.
func (r *Readiness) State() ReadyState {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// Run polls until ctx ends.
func (r *Readiness) Run(ctx context.Context) {
	t := time.NewTicker(r.cfg.Interval)
	defer t.Stop()
	failures := UnreadyAfterTimeouts // unready until the first successes
	definite := true                 // the current run of failures has a definite one
	successes := 0
	var lastLogged string
	for {
		err := r.check(ctx)
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		was := r.state.Ready
		if err == nil {
			failures, definite = 0, false
			successes = min(successes+1, r.cfg.ReadyAfter)
			if r.state.Ready || successes >= r.cfg.ReadyAfter {
				r.state = ReadyState{Ready: true}
			}
		} else {
			successes = 0
			failures = min(failures+1, UnreadyAfterTimeouts)
			definite = definite || !isTimeout(err)
			r.state.Err = err.Error()
			if failures >= UnreadyAfterTimeouts || (definite && failures >= UnreadyAfter) {
				r.state.Ready = false
			}
		}
		st := r.state
		r.mu.Unlock()
		if st.Ready != was {
			r.log.Info("Local apiserver readiness changed", "ready", st.Ready, "error", st.Err)
			if r.onChange != nil {
				r.onChange(st)
			}
		}
		if err != nil && err.Error() != lastLogged && !st.Ready {
			r.log.V(1).Info("Local apiserver not ready", "error", err)
		}
		if err != nil {
			lastLogged = err.Error()
		} else {
			lastLogged = ""
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isTimeout says whether a check failed only by running out of time.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// check does one /readyz request.
func (r *Readiness) check(ctx context.Context) error {
	if err := r.loadCA(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL, nil)
	if err != nil {
		return fmt.Errorf("readyz request: %w", err)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return fmt.Errorf("readyz: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxReadyzBody))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("readyz: %s: %.200q", resp.Status, body)
	}
	return nil
}

// loadCA (re)builds the client when the CA file changed.
func (r *Readiness) loadCA() error {
	fi, err := os.Stat(r.cfg.CAFile)
	if err != nil {
		r.client, r.caStamp = nil, ""
		return fmt.Errorf("apiserver CA file: %w", err)
	}
	stamp := fmt.Sprintf("%d:%d", fi.Size(), fi.ModTime().UnixNano())
	if r.client != nil && stamp == r.caStamp {
		return nil
	}
	pem, err := os.ReadFile(r.cfg.CAFile)
	if err != nil {
		return fmt.Errorf("apiserver CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return errors.New("apiserver CA file " + r.cfg.CAFile + " holds no PEM certificate")
	}
	if r.client != nil {
		r.client.CloseIdleConnections()
	}
	r.client = &http.Client{
		Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, ServerName: r.cfg.ServerName, MinVersion: tls.VersionTLS12},
			Proxy:               nil,
			MaxIdleConns:        1,
			IdleConnTimeout:     10 * time.Second,
			TLSHandshakeTimeout: r.cfg.Timeout,
		},
		Timeout: r.cfg.Timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	r.caStamp = stamp
	return nil
}
