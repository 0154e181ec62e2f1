// Package controlplane starts a real etcd and kube-apiserver on free loopback
// ports for tests and the demo: RBAC authorization on, an admin kubeconfig
// written to disk, and everything stopped and deleted afterwards.
//
// The binaries come from `make controlplane`, which builds them from the Go
// module proxy (see test/tools). Several control planes may run at once: each
// gets its own folder, ports and certificate authority.
package controlplane

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/procs"
)

// ServiceCIDRs are the ClusterIP ranges of the test API server. ClusterIPs
// are only allocated, never routed: the rig runs no kube-proxy.
const ServiceCIDRs = "10.96.0.0/16,fd00:10:96::/108"

// Options configures Start.
type Options struct {
	// Dir holds data, certificates, logs and kubeconfigs. Empty means a new
	// temporary folder, removed by Stop.
	Dir string
	// APIServerArgs are extra kube-apiserver flags.
	APIServerArgs []string
}

// ControlPlane is a running etcd and kube-apiserver.
type ControlPlane struct {
	// Dir holds everything the control plane wrote.
	Dir string
	// URL is the API server's address, https://127.0.0.1:<port>.
	URL string
	// KubeconfigPath is an admin (system:masters) kubeconfig.
	KubeconfigPath string
	// Config is the admin REST config.
	Config *rest.Config
	// Client is an admin clientset.
	Client kubernetes.Interface
	// Bin holds the control-plane binaries' paths.
	Bin binaries.ControlPlane

	ownDir    bool
	ca        *authority
	etcd      *procs.Process
	apiserver *procs.Process
	etcdURL   string
}

// ForTest starts a control plane that is stopped and deleted when the test
// ends, whether it passed or not. On failure the logs' tails are printed.
func ForTest(t testing.TB) *ControlPlane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{})
	if err != nil {
		t.Fatalf("starting control plane: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kube-apiserver log tail:\n%s", cp.apiserver.Tail(40))
		}
		if err := cp.Stop(); err != nil {
			t.Errorf("stopping control plane: %v", err)
		}
	})
	return cp
}

// Start starts etcd and kube-apiserver and waits until the API server is
// ready. On error nothing is left running.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	bin, err := binaries.FindControlPlane()
	if err != nil {
		return nil, err
	}
	cp = &ControlPlane{Dir: opts.Dir, Bin: bin}
	if cp.Dir == "" {
		if cp.Dir, err = os.MkdirTemp("", "ironlb-controlplane-"); err != nil {
			return nil, err
		}
		cp.ownDir = true
	} else if err := os.MkdirAll(cp.Dir, 0o755); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			_ = cp.Stop()
		}
	}()
	if err := cp.writeCertificates(); err != nil {
		return nil, fmt.Errorf("writing certificates: %w", err)
	}
	// Free ports are picked by binding port 0 and closing; another process
	// may grab one in between, so a start that fails is retried on new ports.
	for attempt := 1; ; attempt++ {
		err = cp.startEtcd(ctx)
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
	}
	for attempt := 1; ; attempt++ {
		err = cp.startAPIServer(ctx, opts.APIServerArgs)
		if err == nil {
			break
		}
		if attempt == 3 || ctx.Err() != nil {
			return nil, err
		}
	}
	return cp, nil
}

func (cp *ControlPlane) path(name string) string { return filepath.Join(cp.Dir, name) }

func (cp *ControlPlane) writeCertificates() error {
	ca, err := newAuthority("ironlb-test-ca")
	if err != nil {
		return err
	}
	cp.ca = ca
	servingCert, servingKey, err := ca.issue(pkix.Name{CommonName: "kube-apiserver"},
		[]net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		[]string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		x509.ExtKeyUsageServerAuth)
	if err != nil {
		return err
	}
	adminCert, adminKey, err := ca.issue(pkix.Name{CommonName: "ironlb-test-admin", Organization: []string{"system:masters"}},
		nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	// Like kubeadm, a separate CA for the aggregation layer's front proxy:
	// components with delegated authentication expect its bundle.
	frontProxyCA, err := newAuthority("ironlb-test-front-proxy-ca")
	if err != nil {
		return err
	}
	proxyCert, proxyKey, err := frontProxyCA.issue(pkix.Name{CommonName: "front-proxy-client"}, nil, nil, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"front-proxy-ca.crt":     frontProxyCA.certPEM,
		"front-proxy-client.crt": proxyCert,
		"front-proxy-client.key": proxyKey,
		"ca.crt":                 ca.certPEM,
		"serving.crt":            servingCert,
		"serving.key":            servingKey,
		"admin.crt":              adminCert,
		"admin.key":              adminKey,
	}
	for name, data := range files {
		if err := os.WriteFile(cp.path(name), data, 0o600); err != nil {
			return err
		}
	}
	return writeServiceAccountKeys(cp.path("sa.key"), cp.path("sa.pub"))
}

func (cp *ControlPlane) startEtcd(ctx context.Context) error {
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := cp.path("etcd-data")
	_ = os.RemoveAll(dataDir)
	args := []string{
		"--name=controlplane",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=controlplane=" + peer,
		"--unsafe-no-fsync", // test data: durability across power loss is not needed
		"--log-level=warn",
	}
	p, err := procs.Start("etcd", cp.path("etcd.log"), cp.Bin.Etcd, args, procs.Options{})
	if err != nil {
		return err
	}
	cp.etcd = p
	err = poll(ctx, 30*time.Second, p, func() error {
		resp, err := http.Get(client + "/health")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("etcd /health: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("etcd did not become healthy: %w\n%s", err, p.Tail(20))
	}
	cp.etcdURL = client
	return nil
}

func (cp *ControlPlane) startAPIServer(ctx context.Context, extra []string) error {
	ports, err := freePorts(1)
	if err != nil {
		return err
	}
	cp.URL = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	args := []string{
		"--etcd-servers=" + cp.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--tls-cert-file=" + cp.path("serving.crt"),
		"--tls-private-key-file=" + cp.path("serving.key"),
		"--client-ca-file=" + cp.path("ca.crt"),
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + cp.path("sa.pub"),
		"--service-account-signing-key-file=" + cp.path("sa.key"),
		"--service-cluster-ip-range=" + ServiceCIDRs,
		"--requestheader-client-ca-file=" + cp.path("front-proxy-ca.crt"),
		"--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User",
		"--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file=" + cp.path("front-proxy-client.crt"),
		"--proxy-client-key-file=" + cp.path("front-proxy-client.key"),
		"--authorization-mode=RBAC",
		// The API server is on loopback, which may not appear in the
		// "kubernetes" Service's endpoints.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--enable-priority-and-fairness=false",
		"--max-requests-inflight=2000",
		"--max-mutating-requests-inflight=1000",
		"--v=0",
	}
	args = append(args, extra...)
	p, err := procs.Start("kube-apiserver", cp.path("kube-apiserver.log"), cp.Bin.KubeAPIServer, args, procs.Options{})
	if err != nil {
		return err
	}
	cp.apiserver = p
	if err := cp.writeAdminKubeconfig(); err != nil {
		_ = p.Kill()
		return err
	}
	err = poll(ctx, 90*time.Second, p, func() error {
		body, err := cp.Client.Discovery().RESTClient().Get().AbsPath("/readyz").DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("%w: %s", err, body)
		}
		return nil
	})
	if err != nil {
		_ = p.Kill()
		return fmt.Errorf("kube-apiserver did not become ready: %w\n%s", err, p.Tail(30))
	}
	return nil
}

func (cp *ControlPlane) writeAdminKubeconfig() error {
	cp.KubeconfigPath = cp.path("admin.kubeconfig")
	cfg := cp.kubeconfig("admin", &clientcmdapi.AuthInfo{
		ClientCertificate: cp.path("admin.crt"),
		ClientKey:         cp.path("admin.key"),
	})
	if err := clientcmd.WriteToFile(*cfg, cp.KubeconfigPath); err != nil {
		return fmt.Errorf("writing admin kubeconfig: %w", err)
	}
	restCfg, err := clientcmd.BuildConfigFromFlags("", cp.KubeconfigPath)
	if err != nil {
		return err
	}
	restCfg.QPS, restCfg.Burst = 500, 1000
	cp.Config = restCfg
	cp.Client, err = kubernetes.NewForConfig(restCfg)
	return err
}

func (cp *ControlPlane) kubeconfig(user string, auth *clientcmdapi.AuthInfo) *clientcmdapi.Config {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["local"] = &clientcmdapi.Cluster{Server: cp.URL, CertificateAuthority: cp.path("ca.crt")}
	cfg.AuthInfos[user] = auth
	cfg.Contexts["local"] = &clientcmdapi.Context{Cluster: "local", AuthInfo: user}
	cfg.CurrentContext = "local"
	return cfg
}

// ServiceAccountKubeconfig requests a token for the service account
// namespace/name and writes a kubeconfig that authenticates with it, so a
// process runs with exactly the permissions bound to that account.
func (cp *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	expiry := int64(6 * 3600)
	tr, err := cp.Client.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &expiry},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting token for %s/%s: %w", namespace, name, err)
	}
	user := "system:serviceaccount:" + namespace + ":" + name
	path := cp.path(fmt.Sprintf("sa-%s-%s.kubeconfig", namespace, name))
	if err := clientcmd.WriteToFile(*cp.kubeconfig(user, &clientcmdapi.AuthInfo{Token: tr.Status.Token}), path); err != nil {
		return "", err
	}
	return path, nil
}

// Kubectl runs the control plane's kubectl as admin and returns its output.
func (cp *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cp.Bin.Kubectl, append([]string{"--kubeconfig=" + cp.KubeconfigPath}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// KubectlStdin runs kubectl with stdin as its input.
func (cp *ControlPlane) KubectlStdin(ctx context.Context, stdin string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, cp.Bin.Kubectl, append([]string{"--kubeconfig=" + cp.KubeconfigPath}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Stop stops kube-apiserver and etcd and, when Start made the folder,
// deletes it.
// APIServerPid is the kube-apiserver's process ID.
func (cp *ControlPlane) APIServerPid() int { return cp.apiserver.Pid() }

func (cp *ControlPlane) Stop() error {
	var errs []error
	for _, p := range []*procs.Process{cp.apiserver, cp.etcd} {
		if p != nil {
			if err := p.Stop(15 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if cp.ownDir {
		if err := os.RemoveAll(cp.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// APIServer returns the kube-apiserver process.
func (cp *ControlPlane) APIServer() *procs.Process { return cp.apiserver }

func freePorts(n int) ([]int, error) {
	var ports []int
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// poll calls check until it succeeds, the process exits, or the time is up.
func poll(ctx context.Context, timeout time.Duration, p *procs.Process, check func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if last = check(); last == nil {
			return nil
		}
		if p.Exited() {
			return fmt.Errorf("%s exited: %v (last check: %v)", p.Name, p.Err(), last)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
