package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// ReadyzProbe asks an API server address for GET /readyz over a new TCP
// connection and TLS session every interval, from the outside client,
// verifying the server's certificate against the cluster CA, and records
// each attempt: OK when the answer is 200 "ok", Node the node whose API
// server answered (each kubeadm API server certificate names its own
// node's address).
type ReadyzProbe struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	once   sync.Once

	mu      sync.Mutex
	results []netrig.ProbeResult
}

// clusterCA is the cluster CA's pool (kubeadm's /etc/kubernetes/pki/ca.crt
// on node-1).
func (c *Cluster) clusterCA() (*x509.CertPool, error) {
	b, err := os.ReadFile(c.Nodes[0].HostPath("/etc/kubernetes/pki/ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("the cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("the cluster CA: no certificate in ca.crt")
	}
	return pool, nil
}

// StartReadyzProbe starts probing https://<addr>:6443/readyz every
// interval, each attempt (connect, TLS, request, answer) within timeout;
// attempts run concurrently, so a hanging one does not delay the next.
func (c *Cluster) StartReadyzProbe(addr netip.Addr, interval, timeout time.Duration) (*ReadyzProbe, error) {
	pool, err := c.clusterCA()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &ReadyzProbe{cancel: cancel}
	hc := &http.Client{Transport: &http.Transport{
		DialContext:       c.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: addr.String()},
		DisableKeepAlives: true,
	}}
	url := "https://" + net.JoinHostPort(addr.String(), "6443") + "/readyz"
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.wg.Add(1)
			go func(at time.Time) {
				defer p.wg.Done()
				r := c.readyzOnce(ctx, hc, url, at, timeout)
				if ctx.Err() != nil && !r.OK {
					return // cut short by Stop
				}
				p.mu.Lock()
				p.results = append(p.results, r)
				p.mu.Unlock()
			}(time.Now())
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return p, nil
}

func (c *Cluster) readyzOnce(ctx context.Context, hc *http.Client, url string, at time.Time, timeout time.Duration) netrig.ProbeResult {
	r := netrig.ProbeResult{At: at}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		r.Err = err
		return r
	}
	resp, err := hc.Do(req)
	if err != nil {
		r.Err = err
		return r
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if err != nil {
		r.Err = err
		return r
	}
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != "ok" {
		r.Err = fmt.Errorf("%s: %s", resp.Status, firstLine(string(body)))
		return r
	}
	r.OK, r.Node = true, c.certNode(resp.TLS)
	return r
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

// certNode names the node whose address the serving certificate lists.
func (c *Cluster) certNode(cs *tls.ConnectionState) string {
	if cs == nil || len(cs.PeerCertificates) == 0 {
		return ""
	}
	for i := range c.Nodes {
		for _, ip := range cs.PeerCertificates[0].IPAddresses {
			if a, ok := netip.AddrFromSlice(ip); ok && a.Unmap() == NodeIP(i+1) {
				return NodeName(i + 1)
			}
		}
	}
	return ""
}

// Results returns the attempts so far, sorted by when they started.
func (p *ReadyzProbe) Results() []netrig.ProbeResult {
	p.mu.Lock()
	rs := append([]netrig.ProbeResult(nil), p.results...)
	p.mu.Unlock()
	sort.SliceStable(rs, func(i, j int) bool { return rs[i].At.Before(rs[j].At) })
	return rs
}

// Stop stops the probe and returns every attempt (see Results); attempts
// cut short by Stop are not recorded.
func (p *ReadyzProbe) Stop() []netrig.ProbeResult {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
	})
	return p.Results()
}

// recovered reports whether an attempt failed at or after after and a
// later one succeeded.
func recovered(rs []netrig.ProbeResult, after time.Time) bool {
	o := netrig.Outage(rs, after)
	return o > 0 && o != netrig.NeverRecovered
}

// okSince reports whether an attempt made at or after since succeeded.
func okSince(rs []netrig.ProbeResult, since time.Time) bool {
	for _, r := range rs {
		if r.OK && !r.At.Before(since) {
			return true
		}
	}
	return false
}

// lastOK returns the last successful attempt.
func lastOK(rs []netrig.ProbeResult) (netrig.ProbeResult, bool) {
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].OK {
			return rs[i], true
		}
	}
	return netrig.ProbeResult{}, false
}
