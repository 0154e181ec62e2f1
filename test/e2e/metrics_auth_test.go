package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/ironlb/ironlb/status"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// TestStatusMetricsReaderToken: `kubectl ironlb status --metrics-url` with
// a token of deploy/monitoring's ServiceAccount ironlb-metrics-reader reads
// a real ironlb-ccm's /metrics as shipped: the CCM (running with the
// ironlb-ccm ServiceAccount's token and deploy/'s RBAC) authenticates the
// token with a TokenReview and authorizes GET /metrics with a
// SubjectAccessReview against deploy/monitoring's ClusterRole. The layer-2
// rig runs three real speakers; the CCM's secure port, in its own network
// namespace, is reached through a port-forward on the host's loopback, as
// the plugin's help describes. With the reader's token the plugin shows
// every speaker connected with the version it reported, the serving
// certificate verified with --metrics-ca-file or, to loopback,
// --metrics-insecure-skip-tls-verify. A token of a ServiceAccount without
// that RBAC, no token and a forged one are refused, and the plugin says
// which token the CCM wants (401 or 403), and shows the speakers without what only the metrics tell.
func TestStatusMetricsReaderToken(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{MetricsAuth: true})
	applyMonitoringRBAC(t, ctx, c)
	if _, err := c.cp.Client.CoreV1().ServiceAccounts("ironlb-system").Create(ctx, &corev1.ServiceAccount{
		ObjectMeta: metav1.ObjectMeta{Name: "not-a-metrics-reader"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tokenFile := func(name, token string) string {
		path := filepath.Join(dir, name+".token")
		if err := os.WriteFile(path, []byte(token+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	reader := tokenFile("reader", saToken(t, ctx, c, "ironlb-system", "ironlb-metrics-reader"))
	other := tokenFile("other", saToken(t, ctx, c, "ironlb-system", "not-a-metrics-reader"))
	forged := tokenFile("forged", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06YWRtaW4ifQ.c2lnbmF0dXJl")

	bin, err := binaries.IronLB()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(bin, "ironlb-speaker"), "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(strings.TrimPrefix(string(out), "ironlb-speaker"))
	caFile := servingCA(t, filepath.Join(r.LogDir, r.CCM.Name+"-certs"))
	url := fmt.Sprintf("https://%s/metrics", portForward(t, r.Ctrl, "127.0.0.1:"+strconv.Itoa(rig.CCMSecurePort)))

	// plugin runs `kubectl ironlb status -o json` as the cluster's admin.
	plugin := func(args ...string) (*status.Status, string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, "kubectl-ironlb"),
			append([]string{"status", "-o", "json", "--kubeconfig", c.cp.KubeconfigPath, "--metrics-url", url}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl ironlb status %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
		}
		var st status.Status
		if err := json.Unmarshal(stdout.Bytes(), &st); err != nil {
			t.Fatalf("kubectl ironlb status: %v\n%s", err, stdout.String())
		}
		return &st, stdout.String()
	}
	// The rig's speaker pods carry no version (and are not Ready: no
	// kubelet runs them): the version, connected and healthy come from the
	// CCM's metrics only.
	yes := true
	var want, withoutMetrics []status.Speaker
	for _, n := range r.Nodes {
		pod := "ironlb-speaker-" + n.Name
		want = append(want, status.Speaker{Node: n.Name, Pod: pod, Version: version, Connected: &yes, Healthy: &yes})
		withoutMetrics = append(withoutMetrics, status.Speaker{Node: n.Name, Pod: pod})
	}

	for _, tc := range []struct {
		name string
		args []string
	}{
		{"reader token, certificate verified", []string{"--metrics-token-file", reader, "--metrics-ca-file", caFile}},
		{"reader token, loopback without verification", []string{"--metrics-token-file", reader, "--metrics-insecure-skip-tls-verify"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var last string
			err := rig.Eventually(time.Minute, func() error {
				st, raw := plugin(tc.args...)
				last = raw
				if st.Metrics == nil || st.Metrics.Error != "" {
					return fmt.Errorf("metrics not read: %+v", st.Metrics)
				}
				if diff := cmp.Diff(want, st.Speakers); diff != "" {
					return fmt.Errorf("speakers (-want +got):\n%s", diff)
				}
				return nil
			})
			if err != nil {
				t.Fatalf("%v\nlast output:\n%s", err, last)
			}
			t.Logf("kubectl ironlb status -o json %s:\n%s", strings.Join(tc.args, " "), last)
		})
	}

	for _, tc := range []struct {
		name   string
		args   []string
		status string
	}{
		{"token without the RBAC", []string{"--metrics-token-file", other, "--metrics-ca-file", caFile}, "403 Forbidden"},
		{"no token", []string{"--metrics-ca-file", caFile}, "403 Forbidden"},
		{"forged token", []string{"--metrics-token-file", forged, "--metrics-ca-file", caFile}, "401 Unauthorized"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st, raw := plugin(tc.args...)
			wantErr := tc.status + ": the CCM wants a token allowed GET /metrics (such as the ServiceAccount ironlb-metrics-reader's)"
			if st.Metrics == nil || st.Metrics.Error != wantErr {
				t.Fatalf("metrics %+v, want the error %q\n%s", st.Metrics, wantErr, raw)
			}
			if diff := cmp.Diff(withoutMetrics, st.Speakers); diff != "" {
				t.Errorf("speakers without metrics (-want +got):\n%s", diff)
			}
			t.Logf("kubectl ironlb status -o json %s: metrics %+v", strings.Join(tc.args, " "), *st.Metrics)
		})
	}
}

// applyMonitoringRBAC applies the plain Kubernetes objects of
// deploy/monitoring as kustomize renders them (the ServiceAccount
// ironlb-metrics-reader, its token Secret, its ClusterRole and binding),
// leaving out the Prometheus Operator's kinds, whose CRDs the rig lacks.
func applyMonitoringRBAC(t *testing.T, ctx context.Context, c *cluster) {
	t.Helper()
	out, err := c.cp.Kubectl(ctx, "kustomize", filepath.Join(repoRoot(t), "deploy", "monitoring"))
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var objs []*unstructured.Unstructured
	for _, o := range parseObjects(t, out) {
		switch o.GetKind() {
		case "ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding":
			objs = append(objs, o)
		}
	}
	if len(objs) != 4 {
		t.Fatalf("deploy/monitoring renders %d ServiceAccounts, Secrets and RBAC objects, want 4", len(objs))
	}
	if out, err := c.cp.KubectlStdin(ctx, toYAML(t, objs), "apply", "--server-side", "-f", "-"); err != nil {
		t.Fatalf("applying deploy/monitoring's RBAC: %v\n%s", err, out)
	}
}

// saToken requests a short-lived token of a ServiceAccount (the TokenRequest
// API, as `kubectl create token` does).
func saToken(t *testing.T, ctx context.Context, c *cluster, namespace, name string) string {
	t.Helper()
	expiry := int64(600)
	tr, err := c.cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token of %s/%s: %v", namespace, name, err)
	}
	return tr.Status.Token
}

// servingCA returns the certificate file the CCM wrote to its cert dir: its
// self-signed serving certificate followed by the CA that signed it.
func servingCA(t *testing.T, certDir string) string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(certDir, "*.crt"))
	if err != nil || len(files) != 1 {
		t.Fatalf("the CCM's serving certificate in %s: %v %v", certDir, files, err)
	}
	return files[0]
}

// portForward listens on the host's loopback and forwards every connection
// to target inside h's namespace, as `kubectl port-forward` does to a pod.
// It returns the listening address and stops when the test ends.
func portForward(t *testing.T, h *netrig.Host, target string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-done
	})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				up, err := h.DialContext(ctx, "tcp", target)
				if err != nil {
					return
				}
				defer up.Close()
				stop := context.AfterFunc(ctx, func() { conn.Close(); up.Close() })
				defer stop()
				go func() {
					_, _ = io.Copy(up, conn)
					if tc, ok := up.(*net.TCPConn); ok {
						_ = tc.CloseWrite()
					}
				}()
				_, _ = io.Copy(conn, up)
			}()
		}
	}()
	return ln.Addr().String()
}
