package pki

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/klog/v2"
)

// reloadInterval is the minimum time between two checks of the mounted
// files for changes.
const reloadInterval = time.Second

// ServerTLSConfig returns the TLS configuration for a speaker's gRPC
// server, built from dir/ca.crt, dir/tls.crt and dir/tls.key as mounted
// from the ironlb-speaker-tls Secret. It requires TLS 1.3 and a client
// certificate that chains to ca.crt, is valid for client authentication and
// carries CCMIdentity; clients without a certificate, with a certificate
// from another CA or with a speaker certificate are rejected.
//
// The files are re-read at most once per second during handshakes, so
// certificates and CA updated by the kubelet take effect without a
// restart. A set of files that fails to load (for example while only some
// of them were replaced) is ignored and the previous one kept. ServerTLSConfig
// returns an error if the files cannot be loaded initially.
func ServerTLSConfig(dir string) (*tls.Config, error) {
	return serverTLSConfig(dir, reloadInterval, time.Now)
}

func serverTLSConfig(dir string, interval time.Duration, now func() time.Time) (*tls.Config, error) {
	r := &fileReloader{dir: dir, interval: interval, now: now}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		ClientAuth: tls.RequireAnyClientCert,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return r.current().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs.PeerCertificates, r.current().pool, x509.ExtKeyUsageClientAuth, CCMIdentity, now())
		},
	}, nil
}

// fileReloader caches the key pair and CA pool loaded from a directory and
// reloads them when the file contents change.
type fileReloader struct {
	dir      string
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex
	lastCheck time.Time
	raw       [3][]byte // ca.crt, tls.crt, tls.key as last loaded
	lastErr   string
	loaded    *loadedFiles
}

type loadedFiles struct {
	cert *tls.Certificate
	pool *x509.CertPool
}

// current returns the loaded files, reloading them first if the check
// interval has elapsed. Reload failures keep the previous files.
func (r *fileReloader) current() *loadedFiles {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); now.Sub(r.lastCheck) >= r.interval {
		r.lastCheck = now
		if err := r.reloadLocked(); err != nil {
			if msg := err.Error(); msg != r.lastErr {
				r.lastErr = msg
				klog.ErrorS(err, "ironlb pki: keeping previous TLS files", "dir", r.dir)
			}
		} else {
			r.lastErr = ""
		}
	}
	return r.loaded
}

func (r *fileReloader) reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lastCheck = r.now()
	return r.reloadLocked()
}

func (r *fileReloader) reloadLocked() error {
	var raw [3][]byte
	for i, name := range []string{CACertKey, TLSCertKey, TLSKeyKey} {
		data, err := os.ReadFile(filepath.Join(r.dir, name))
		if err != nil {
			return fmt.Errorf("ironlb pki: read speaker TLS files: %w", err)
		}
		raw[i] = data
	}
	if r.loaded != nil && bytes.Equal(raw[0], r.raw[0]) && bytes.Equal(raw[1], r.raw[1]) && bytes.Equal(raw[2], r.raw[2]) {
		return nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(raw[0]) {
		return fmt.Errorf("ironlb pki: %s: no PEM certificate", filepath.Join(r.dir, CACertKey))
	}
	cert, err := tls.X509KeyPair(raw[1], raw[2])
	if err != nil {
		return fmt.Errorf("ironlb pki: load %s and %s from %s: %w", TLSCertKey, TLSKeyKey, r.dir, err)
	}
	if r.loaded != nil {
		klog.InfoS("ironlb pki: reloaded TLS files", "dir", r.dir, "notAfter", cert.Leaf.NotAfter)
	}
	r.raw = raw
	r.loaded = &loadedFiles{cert: &cert, pool: pool}
	return nil
}

// WriteFiles writes the ca.crt, tls.crt and tls.key entries of s into dir,
// the way a Secret volume presents them. Each file is replaced atomically
// (temporary file and rename); tls.key is only readable by its owner.
func WriteFiles(dir string, s *corev1.Secret) error {
	if s == nil {
		return errors.New("ironlb pki: write files: nil secret")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("ironlb pki: write files: %w", err)
	}
	files := []struct {
		name string
		mode os.FileMode
	}{
		// The three files are replaced one by one, so a concurrent reader
		// may briefly see a mismatched set; the reloader in
		// ServerTLSConfig keeps its previous files until the set loads.
		{TLSKeyKey, 0o600},
		{TLSCertKey, 0o644},
		{CACertKey, 0o644},
	}
	for _, f := range files {
		data, ok := s.Data[f.name]
		if !ok {
			return fmt.Errorf("ironlb pki: write files: secret %s/%s has no key %q", s.Namespace, s.Name, f.name)
		}
		if err := writeFileAtomic(filepath.Join(dir, f.name), data, f.mode); err != nil {
			return fmt.Errorf("ironlb pki: write files: %w", err)
		}
	}
	return nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) (err error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		_ = tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
