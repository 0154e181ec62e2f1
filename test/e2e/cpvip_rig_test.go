package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/binaries"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/procs"
	"github.com/ironlb/ironlb/test/rig"
)

// cpVIP is the rig's control-plane VIP.
var cpVIP = netip.MustParseAddr("192.0.2.250")

// cpRig is a LAN with a client and control-plane nodes, each running the
// real ironlb-speaker control-plane next to a stand-in kube-apiserver.
type cpRig struct {
	t       *testing.T
	ctx     context.Context
	lan     *netrig.LAN
	client  *netrig.Host
	nodes   []*cpNode
	dir     string
	bin     string
	caFile  string
	keyFile string
	cert    tls.Certificate
	pool    *x509.CertPool
}

// cpNode is one control-plane node.
type cpNode struct {
	name    string
	ip      netip.Addr
	host    *netrig.Host
	api     *standInAPIServer
	speaker *procs.Process
	starts  int
}

// newCPRig builds the LAN, the client, n nodes (192.0.2.11...) with their
// stand-in apiservers (ready), and starts every speaker.
func newCPRig(t *testing.T, ctx context.Context, n int) *cpRig {
	t.Helper()
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	bindir, err := binaries.IronLB()
	if err != nil {
		t.Fatal(err)
	}
	r := &cpRig{t: t, ctx: ctx, lan: netrig.NewLAN(t), dir: t.TempDir(), bin: filepath.Join(bindir, "ironlb-speaker")}
	r.writeCredentials()
	if r.client, err = r.lan.AddHost("client", netip.PrefixFrom(rig.ClientIPv4, 24)); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("cp%d", i)
		ip := netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + i)})
		h, err := r.lan.AddHost(name, netip.PrefixFrom(ip, 24))
		if err != nil {
			t.Fatal(err)
		}
		node := &cpNode{name: name, ip: ip, host: h, api: &standInAPIServer{name: name, host: h, cert: r.cert}}
		node.api.ready.Store(true)
		if err := node.api.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.api.stop)
		r.nodes = append(r.nodes, node)
	}
	for _, node := range r.nodes {
		r.startSpeaker(node)
	}
	t.Cleanup(func() {
		for _, node := range r.nodes {
			if node.speaker != nil {
				_ = node.speaker.Stop(2 * time.Second)
			}
		}
		if t.Failed() {
			for _, node := range r.nodes {
				t.Logf("%s's speaker log (tail):\n%s", node.name, tail(node.speaker.LogPath, 30))
			}
		}
	})
	return r
}

func tail(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(l[max(0, len(l)-lines):], "\n")
}

// writeCredentials writes the test CA (ca.crt), the stand-in apiserver's
// certificate (SANs kubernetes and 127.0.0.1) and the election key file.
func (r *cpRig) writeCredentials() {
	t := r.t
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test-kubernetes-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: []string{"kubernetes"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1"), cpVIP.AsSlice()},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	r.cert = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	r.pool = x509.NewCertPool()
	r.pool.AddCert(ca)
	r.caFile = filepath.Join(r.dir, "ca.crt")
	if err := os.WriteFile(r.caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	r.keyFile = filepath.Join(r.dir, "election.key")
	if err := os.WriteFile(r.keyFile, secret, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startSpeaker starts node's real ironlb-speaker control-plane.
func (r *cpRig) startSpeaker(node *cpNode) {
	r.t.Helper()
	node.starts++
	args := []string{"control-plane", "--vip", cpVIP.String(), "--node-name", node.name,
		"--apiserver-ca-file", r.caFile, "--key-file", r.keyFile, "--v", "1"}
	p, err := procs.Start(fmt.Sprintf("%s-speaker-%d", node.name, node.starts),
		filepath.Join(r.dir, fmt.Sprintf("%s-speaker-%d.log", node.name, node.starts)), r.bin, args,
		procs.Options{Wrap: []string{"ip", "netns", "exec", node.host.Name}})
	if err != nil {
		r.t.Fatal(err)
	}
	node.speaker = p
}

// status reads node's /status from the client (over the LAN).
func (r *cpRig) status(node *cpNode) (cpvip.Status, error) {
	ctx, cancel := context.WithTimeout(r.ctx, time.Second)
	defer cancel()
	body, err := rig.Get(ctx, r.client.DialContext, fmt.Sprintf("http://%s:%d/status", node.ip, cpvip.DefaultHealthPort))
	if err != nil {
		return cpvip.Status{}, err
	}
	var st cpvip.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		return cpvip.Status{}, fmt.Errorf("%s's /status: %w", node.name, err)
	}
	return st, nil
}

// metric reads the sum of a metric from node's /metrics.
func (r *cpRig) metric(node *cpNode, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(r.ctx, time.Second)
	defer cancel()
	body, err := rig.Get(ctx, r.client.DialContext, fmt.Sprintf("http://%s:%d/metrics", node.ip, cpvip.DefaultHealthPort))
	if err != nil {
		return 0, err
	}
	return rig.SumMetric(body, name), nil
}

// takeovers is the sum of every running speaker's takeovers_total.
func (r *cpRig) takeovers() float64 {
	r.t.Helper()
	var sum float64
	for _, n := range r.nodes {
		v, err := r.metric(n, "ironlb_control_plane_vip_takeovers_total")
		if err != nil {
			r.t.Fatal(err)
		}
		sum += v
	}
	return sum
}

// servers returns the nodes whose /status says they serve the VIP (nodes
// that cannot be asked count as not serving unless in assume).
func (r *cpRig) servers(skip ...*cpNode) []*cpNode {
	var out []*cpNode
	for _, n := range r.nodes {
		if contains(skip, n) {
			continue
		}
		st, err := r.status(n)
		if err == nil && st.Serving {
			out = append(out, n)
		}
	}
	return out
}

func contains(ns []*cpNode, n *cpNode) bool {
	for _, x := range ns {
		if x == n {
			return true
		}
	}
	return false
}

// answering returns the nodes whose MAC answered an ARP request for the
// VIP from the client.
func (r *cpRig) answering() ([]*cpNode, error) {
	macs, err := rig.AnsweringMACs(r.ctx, r.client, rig.ClientIPv4, cpVIP, 200*time.Millisecond)
	if err != nil {
		return nil, err
	}
	var out []*cpNode
	for _, m := range macs {
		for _, n := range r.nodes {
			if n.host.MAC.String() == m.String() {
				out = append(out, n)
			}
		}
	}
	if len(out) != len(macs) {
		return out, fmt.Errorf("unknown MACs among %v", macs)
	}
	return out, nil
}

// waitOneHolder waits until exactly one node (not in skip) says it serves
// and exactly its MAC answers ARP for the VIP; it returns that node.
func (r *cpRig) waitOneHolder(timeout time.Duration, skip ...*cpNode) *cpNode {
	r.t.Helper()
	var holder *cpNode
	err := rig.Eventually(timeout, func() error {
		s := r.servers(skip...)
		if len(s) != 1 {
			return fmt.Errorf("%d nodes serve the VIP: %v", len(s), names(s))
		}
		a, err := r.answering()
		if err != nil {
			return err
		}
		if len(a) != 1 || a[0] != s[0] {
			return fmt.Errorf("%s serves, but ARP for the VIP is answered by %v", s[0].name, names(a))
		}
		holder = s[0]
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return holder
}

func names(ns []*cpNode) []string {
	var out []string
	for _, n := range ns {
		out = append(out, n.name)
	}
	return out
}

// reach does one HTTPS request to the VIP from the client, verified with
// the test CA, and returns the name of the node that answered.
func (r *cpRig) reach(timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(r.ctx, timeout)
	defer cancel()
	hc := &http.Client{Transport: &http.Transport{
		DialContext:       r.client.DialContext,
		TLSClientConfig:   &tls.Config{RootCAs: r.pool, ServerName: "kubernetes"},
		DisableKeepAlives: true,
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+net.JoinHostPort(cpVIP.String(), "6443")+"/node", nil)
	if err != nil {
		return "", err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// waitReachedOtherThan measures from since until an HTTPS request to the
// VIP from the client is answered by a node other than old.
func (r *cpRig) waitReachedOtherThan(old *cpNode, since time.Time, timeout time.Duration) (string, time.Duration) {
	r.t.Helper()
	for time.Since(since) < timeout {
		got, err := r.reach(150 * time.Millisecond)
		if err == nil && got != old.name {
			return got, time.Since(since)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Fatalf("the VIP was not reached on a node other than %s within %s", old.name, timeout)
	return "", 0
}

func (r *cpRig) node(name string) *cpNode {
	for _, n := range r.nodes {
		if n.name == name {
			return n
		}
	}
	r.t.Fatalf("no node %s", name)
	return nil
}

// standInAPIServer stands in for a kube-apiserver: HTTPS on :6443 in the
// node's namespace with a certificate for "kubernetes"; /readyz answers ok
// or 503 (ready), /node the node's name.
type standInAPIServer struct {
	name  string
	host  *netrig.Host
	cert  tls.Certificate
	ready atomic.Bool

	mu  sync.Mutex
	srv *http.Server
}

func (a *standInAPIServer) start() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		return nil
	}
	ln, err := a.host.Listen("tcp", ":6443")
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !a.ready.Load() {
			http.Error(w, "[-]etcd failed", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	mux.HandleFunc("/node", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, a.name) })
	a.srv = &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{a.cert}}, ReadHeaderTimeout: 5 * time.Second}
	srv := a.srv
	go func() {
		if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			panic(err)
		}
	}()
	return nil
}

// stop closes the listener and every connection, as a dead apiserver.
func (a *standInAPIServer) stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.srv != nil {
		_ = a.srv.Close()
		a.srv = nil
	}
}
