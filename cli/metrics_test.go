package cli

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/status/statustest"
	"github.com/ironlb/ironlb/test/controlplane"
)

// seen is what a metrics endpoint received: each request's Authorization
// header ("" for none) and whether it presented a client certificate.
type seen struct {
	mu       sync.Mutex
	requests []string
}

func (s *seen) add(r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := r.URL.Path + " auth=" + r.Header.Get("Authorization")
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		e += " client-cert=" + r.TLS.PeerCertificates[0].Subject.CommonName
	}
	s.requests = append(s.requests, e)
}

func (s *seen) get() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

// recordingServer serves the leading CCM's metrics over HTTPS (asking for
// a client certificate) and records what each request carried; /redirect
// answers 302 to target.
func recordingServer(t *testing.T, metrics []byte, target string) (*httptest.Server, *seen) {
	rec := &seen{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.add(r)
		if r.URL.Path == "/redirect" {
			http.Redirect(w, r, target, http.StatusFound)
			return
		}
		_, _ = w.Write(metrics)
	}))
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, rec
}

// TestStatusMetricsCredentials: the kubeconfig's credentials (a bearer
// token, a client certificate) reach the API server only, never the
// metrics URL, not with --metrics-insecure-skip-tls-verify and not across
// a redirect; a token meant for metrics (--metrics-token-file) reaches the
// metrics URL's own host only, over verified HTTPS or to loopback.
func TestStatusMetricsCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a control plane")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := controlplane.ForTest(t)
	statustest.Fixture(t, ctx, cp)
	if out, err := cp.Kubectl(ctx, "create", "serviceaccount", "-n", "default", "admin-sa"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := cp.Kubectl(ctx, "create", "clusterrolebinding", "admin-sa", "--clusterrole=cluster-admin", "--serviceaccount=default:admin-sa"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	tokenKubeconfig, err := cp.ServiceAccountKubeconfig(ctx, "default", "admin-sa")
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(statustest.MetricsServer(t).URL)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	dir := t.TempDir()
	metricsToken := filepath.Join(dir, "metrics-token")
	if err := os.WriteFile(metricsToken, []byte("metrics-only-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name       string
		kubeconfig string
		flags      func(srv, other *httptest.Server) []string
		// wantSrv and wantOther are what the metrics URL's server and the
		// redirect's target received.
		wantSrv, wantOther []string
		wantCode           int
		wantMetricsErr     string // substring of Status.Metrics.Error
		wantStderr         string
	}{
		{
			name: "kubeconfig token, insecure skip verify", kubeconfig: tokenKubeconfig,
			flags: func(srv, _ *httptest.Server) []string {
				return []string{"--metrics-url", srv.URL + "/metrics", "--metrics-insecure-skip-tls-verify"}
			},
			wantSrv:  []string{"/metrics auth="},
			wantCode: ExitOK,
		},
		{
			name: "kubeconfig client certificate, insecure skip verify", kubeconfig: cp.KubeconfigPath,
			flags: func(srv, _ *httptest.Server) []string {
				return []string{"--metrics-url", srv.URL + "/metrics", "--metrics-insecure-skip-tls-verify"}
			},
			wantSrv:  []string{"/metrics auth="},
			wantCode: ExitOK,
		},
		{
			name: "redirect to another host", kubeconfig: tokenKubeconfig,
			flags: func(srv, _ *httptest.Server) []string {
				return []string{"--metrics-url", srv.URL + "/redirect", "--metrics-insecure-skip-tls-verify"}
			},
			wantSrv:        []string{"/redirect auth="},
			wantCode:       ExitOK,
			wantMetricsErr: "redirect",
		},
		{
			name: "metrics token, redirect", kubeconfig: tokenKubeconfig,
			flags: func(srv, _ *httptest.Server) []string {
				return []string{"--metrics-url", srv.URL + "/redirect", "--metrics-insecure-skip-tls-verify", "--metrics-token-file", metricsToken}
			},
			wantSrv:        []string{"/redirect auth=Bearer metrics-only-token"},
			wantCode:       ExitOK,
			wantMetricsErr: "redirect",
		},
		{
			name: "metrics token, verified by CA file", kubeconfig: tokenKubeconfig,
			flags: func(srv, _ *httptest.Server) []string {
				return []string{"--metrics-url", srv.URL + "/metrics", "--metrics-ca-file", caFile(t, srv), "--metrics-token-file", metricsToken}
			},
			wantSrv:  []string{"/metrics auth=Bearer metrics-only-token"},
			wantCode: ExitOK,
		},
		{
			name: "metrics token, unverified remote host", kubeconfig: tokenKubeconfig,
			flags: func(*httptest.Server, *httptest.Server) []string {
				return []string{"--metrics-url", "https://192.0.2.1:10258/metrics", "--metrics-insecure-skip-tls-verify", "--metrics-token-file", metricsToken}
			},
			wantCode:   ExitError,
			wantStderr: "refusing to send a token to 192.0.2.1:10258, whose certificate is not verified",
		},
		{
			name: "metrics token, plain HTTP", kubeconfig: tokenKubeconfig,
			flags: func(*httptest.Server, *httptest.Server) []string {
				return []string{"--metrics-url", "http://127.0.0.1:1/metrics", "--metrics-token-file", metricsToken}
			},
			wantCode:   ExitError,
			wantStderr: "refusing to send a token over plain HTTP",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			other, otherSeen := recordingServer(t, metrics, "")
			srv, srvSeen := recordingServer(t, metrics, other.URL+"/metrics")
			var out, errOut bytes.Buffer
			args := append([]string{"status", "--kubeconfig", tc.kubeconfig, "-o", "json"}, tc.flags(srv, other)...)
			code := Run(args, nil, &out, &errOut)
			if code != tc.wantCode || !strings.Contains(errOut.String(), tc.wantStderr) {
				t.Fatalf("exit status %d, stderr %q; want %d, %q", code, errOut.String(), tc.wantCode, tc.wantStderr)
			}
			if diff := cmp.Diff(tc.wantSrv, srvSeen.get()); diff != "" {
				t.Errorf("the metrics URL's server received (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantOther, otherSeen.get()); diff != "" {
				t.Errorf("the redirect's target received (-want +got):\n%s", diff)
			}
			if code != ExitOK {
				return
			}
			var st status.Status
			if err := json.Unmarshal(out.Bytes(), &st); err != nil {
				t.Fatalf("%v\n%s", err, out.String())
			}
			switch {
			case st.Metrics == nil:
				t.Errorf("no metrics section")
			case tc.wantMetricsErr == "" && st.Metrics.Error != "":
				t.Errorf("metrics: %s", st.Metrics.Error)
			case !strings.Contains(st.Metrics.Error, tc.wantMetricsErr):
				t.Errorf("metrics error %q, want it to mention %q", st.Metrics.Error, tc.wantMetricsErr)
			}
		})
	}
}

// caFile writes srv's certificate as a CA file.
func caFile(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
