package cli

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// maxTokenFileBytes bounds --metrics-token-file: a ServiceAccount token is
// a few kilobytes.
const maxTokenFileBytes = 64 << 10

// metricsOptions are the --metrics-* flags.
type metricsOptions struct {
	url, tokenFile, caFile string
	insecure               bool
}

// errRedirect is returned for any redirect: a metrics endpoint has no
// reason to send one, and following it would take the request, and its
// token, elsewhere.
var errRedirect = errors.New("the metrics endpoint answered with a redirect, which kubectl-ironlb does not follow")

// metricsClient returns the client that reads the CCM's metrics. It never
// carries the kubeconfig's credentials (token, client certificate, exec
// plugin, basic auth): those are for the API server only. It sends only the
// metrics-only bearer token of --metrics-token-file, only over HTTPS, only to
// the URL's own host, and with --metrics-insecure-skip-tls-verify only to a
// loopback address (a kubectl port-forward, whose tunnel runs through the API
// server). It follows no redirect.
func metricsClient(o metricsOptions) (*http.Client, error) {
	u, err := url.Parse(o.url)
	if err != nil {
		return nil, fmt.Errorf("--metrics-url: %w", err)
	}
	if u.Scheme != "https" && u.Scheme != "http" || u.Host == "" {
		return nil, fmt.Errorf("--metrics-url %q: must be an http:// or https:// URL", o.url)
	}
	if u.User != nil {
		return nil, fmt.Errorf("--metrics-url: must not carry credentials; use --metrics-token-file")
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return nil, fmt.Errorf("--metrics-ca-file: %w", err)
		}
		tlsCfg.RootCAs = x509.NewCertPool()
		if !tlsCfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--metrics-ca-file %s: no PEM certificate in it", o.caFile)
		}
	}
	if o.insecure {
		tlsCfg.InsecureSkipVerify = true //nolint:gosec // asked for; then a token goes to loopback only (below)
	}
	var token string
	if o.tokenFile != "" {
		if token, err = readToken(o.tokenFile); err != nil {
			return nil, err
		}
		switch {
		case u.Scheme != "https":
			return nil, fmt.Errorf("--metrics-token-file: refusing to send a token over plain HTTP to %s", u.Host)
		case o.insecure && !isLoopback(u.Hostname()):
			return nil, fmt.Errorf("--metrics-token-file with --metrics-insecure-skip-tls-verify: refusing to send a token to %s, whose certificate is not verified; give --metrics-ca-file, or port-forward to 127.0.0.1", u.Host)
		}
	}
	var rt http.RoundTripper = &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     tlsCfg,
		TLSHandshakeTimeout: 5 * time.Second,
		DisableKeepAlives:   true,
	}
	if token != "" {
		rt = &bearer{next: rt, token: token, scheme: u.Scheme, host: u.Host}
	}
	return &http.Client{
		Transport:     rt,
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return errRedirect },
	}, nil
}

// readToken reads a bearer token file: one line, printable ASCII.
func readToken(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("--metrics-token-file: %w", err)
	}
	defer f.Close()
	// A pipe (--metrics-token-file <(kubectl create token ...)) may
	// deliver the token in several reads.
	data, err := io.ReadAll(io.LimitReader(f, maxTokenFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("--metrics-token-file %s: %w", path, err)
	}
	if len(data) > maxTokenFileBytes {
		return "", fmt.Errorf("--metrics-token-file %s: longer than %d bytes", path, maxTokenFileBytes)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("--metrics-token-file %s: empty", path)
	}
	for _, c := range token {
		if c <= ' ' || c > '~' {
			return "", fmt.Errorf("--metrics-token-file %s: not a bearer token (one line of printable ASCII)", path)
		}
	}
	return token, nil
}

// bearer adds the token to requests for the metrics URL's scheme and host,
// and to nothing else.
type bearer struct {
	next                http.RoundTripper
	token, scheme, host string
}

func (b *bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != b.scheme || req.URL.Host != b.host {
		return b.next.RoundTrip(req)
	}
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
