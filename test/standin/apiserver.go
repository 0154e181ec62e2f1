// Package standin serves what a control-plane speaker meets on a node
// instead of a real kube-apiserver: HTTPS on port 6443 of every address of
// a netrig host, with a certificate for the name every kubeadm API-server
// certificate holds (kubernetes) from a test CA, a /readyz a test turns on
// and off, and kube-apiserver's planned shutdown (--shutdown-delay-duration:
// /readyz fails at once, requests are served for the delay, then the
// listener closes).
package standin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// Port is kube-apiserver's secure port.
const Port = 6443

// ServerName is the name the stand-in's certificate holds, as kubeadm's
// API-server certificates do.
const ServerName = "kubernetes"

// CA is a test CA and the serving certificate it issued for ServerName
// and 127.0.0.1.
type CA struct {
	// File is the CA certificate in PEM, as /etc/kubernetes/pki/ca.crt.
	File string
	// Pool holds the CA, for clients.
	Pool *x509.CertPool
	cert tls.Certificate
}

// NewCA writes a new CA's certificate to dir/ca.crt and issues a serving
// certificate.
func NewCA(dir string) (*CA, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kubernetes"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("creating the test CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames:    []string{ServerName, "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("issuing the serving certificate: %w", err)
	}
	file := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	return &CA{File: file, Pool: pool, cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}}, nil
}

// APIServer is the stand-in kube-apiserver of one node.
type APIServer struct {
	// Node names the node; every request but /readyz is answered with it.
	Node string

	srv      *http.Server
	ready    atomic.Bool
	stopping atomic.Bool
	once     sync.Once
	closed   chan struct{}
}

// Start serves HTTPS on port 6443 of every address of h, ready.
func Start(h *netrig.Host, node string, ca *CA) (*APIServer, error) {
	ln, err := h.Listen("tcp", fmt.Sprintf(":%d", Port))
	if err != nil {
		return nil, err
	}
	a := &APIServer{Node: node, closed: make(chan struct{})}
	a.ready.Store(true)
	mux := http.NewServeMux()
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case a.stopping.Load():
			http.Error(w, "[-]shutdown failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
		case !a.ready.Load():
			http.Error(w, "[-]etcd failed: reason withheld\nreadyz check failed", http.StatusInternalServerError)
		default:
			fmt.Fprint(w, "ok")
		}
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, a.Node) })
	a.srv = &http.Server{
		Handler:           mux,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{ca.cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 5 * time.Second,
		ErrorLog:          nil,
	}
	go func() {
		_ = a.srv.ServeTLS(ln, "", "")
	}()
	return a, nil
}

// SetReady makes /readyz answer ok (true) or fail.
func (a *APIServer) SetReady(ready bool) { a.ready.Store(ready) }

// Shutdown is kube-apiserver's reaction to SIGTERM with
// --shutdown-delay-duration=delay: /readyz fails at once, requests go on
// being served for delay, then the listener closes and the requests in
// flight finish. It returns at once; Closed is closed at the end.
func (a *APIServer) Shutdown(delay time.Duration) {
	a.stopping.Store(true)
	go func() {
		time.Sleep(delay)
		_ = a.Close()
	}()
}

// Closed is closed once the stand-in stopped serving.
func (a *APIServer) Closed() <-chan struct{} { return a.closed }

// Close stops serving at once (a crash, or the end of a test).
func (a *APIServer) Close() error {
	var err error
	a.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = a.srv.Shutdown(ctx)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		close(a.closed)
	})
	return err
}

// Client returns an HTTPS client for the stand-ins that opens a new
// connection for every request (no keep-alive), dialing with dial.
func Client(ca *CA, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext:       dial,
		TLSClientConfig:   &tls.Config{RootCAs: ca.Pool, ServerName: ServerName, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
}
