package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"
)

// reloadInterval is the minimum time between two reads of the mounted CA
// bundle.
const reloadInterval = time.Second

// NodeCredentials is a speaker's TLS identity. Its key is made at start and
// never leaves the process. Until the CCM certifies it (Install), the
// speaker presents a self-signed certificate and offers its projected
// ServiceAccount token (EnrollmentToken) for the CCM to check; afterwards
// it presents its node certificate, which names its node. It verifies the
// CCM against the CAs that are both in the bundle mounted from the
// ironlb-ca-bundle ConfigMap (re-read every second) and in the bundle the
// CCM sent last (Install, TrustBundle); against the mounted bundle alone
// while the two share no CA or none was sent. So a bundle the CCM sends can
// end trust in a CA at once (the end of a rotation's overlap), but never
// add one: only a CA mounted now is ever trusted. It is safe for
// concurrent use.
type NodeCredentials struct {
	node      string
	caFile    string
	tokenFile string
	now       func() time.Time
	key       *ecdsa.PrivateKey
	self      *tls.Certificate

	mu        sync.Mutex
	lastCheck time.Time
	fileRaw   []byte
	fileErr   string
	mounted   []*x509.Certificate // the CAs of the mounted bundle
	inband    []*x509.Certificate // the CAs the CCM sent last; nil before any
	pool      *x509.CertPool      // trusted for CCM certificates
	known     *x509.CertPool      // mounted and sent: may have issued the node certificate
	trusted   int                 // CAs in pool
	gen       uint64              // counts the rebuilds of pool
	cert      *tls.Certificate    // the node certificate; nil before Install
}

// NewNodeCredentials makes node's key and self-signed certificate. caFile
// is the mounted CA bundle (ca.crt of the ironlb-ca-bundle ConfigMap);
// tokenFile the projected token for SpeakerAudience. Both are read again
// when needed, so the kubelet's updates take effect without a restart.
func NewNodeCredentials(node, caFile, tokenFile string) (*NodeCredentials, error) {
	return newNodeCredentials(node, caFile, tokenFile, time.Now)
}

func newNodeCredentials(node, caFile, tokenFile string, now func() time.Time) (*NodeCredentials, error) {
	if node == "" {
		return nil, errors.New("ironlb pki: node credentials: empty node name")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ironlb pki: node credentials: generate key: %w", err)
	}
	self, err := selfSigned(node, key, now())
	if err != nil {
		return nil, err
	}
	c := &NodeCredentials{node: node, caFile: caFile, tokenFile: tokenFile, now: now, key: key, self: self}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.reloadLocked(); err != nil {
		return nil, err
	}
	return c, nil
}

// selfSigned makes the certificate a speaker presents before enrollment.
func selfSigned(node string, key *ecdsa.PrivateKey, now time.Time) (*tls.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(enrollIdentityPrefix + node)
	if err != nil {
		return nil, fmt.Errorf("ironlb pki: node name %q: %w", node, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "ironlb-speaker " + node + " (not enrolled)"},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(CALifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("ironlb pki: self-signed certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}

// ServerTLSConfig returns the TLS configuration of the speaker's gRPC
// server. It requires TLS 1.3 and a client certificate that chains to a
// trusted CA, is valid for client authentication and carries CCMIdentity;
// it names the trusted CAs in its request so that a CCM in the middle of a
// CA rotation presents a certificate this speaker accepts. It presents the
// node certificate while that is valid and chains to a CA mounted or sent
// by the CCM (whether that CA still counts is the CCM's call), else the
// self-signed one.
func (c *NodeCredentials) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			pool, cert := c.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				NextProtos:   []string{"h2"},
				ClientAuth:   tls.RequireAnyClientCert,
				ClientCAs:    pool,
				Certificates: []tls.Certificate{*cert},
				VerifyConnection: func(cs tls.ConnectionState) error {
					return verifyPeer(cs.PeerCertificates, pool, x509.ExtKeyUsageClientAuth, CCMIdentity, c.now())
				},
			}, nil
		},
	}
}

// Enrolled reports whether the speaker holds a usable node certificate,
// and until when.
func (c *NodeCredentials) Enrolled() (bool, time.Time) {
	_, cert := c.current()
	if cert == c.self {
		return false, time.Time{}
	}
	return true, cert.Leaf.NotAfter
}

// EnrollmentToken reads the projected token. The speaker sends it in the
// first report of every stream, which only an authenticated CCM opens; the
// CCM uses it when it does not trust the speaker's certificate.
func (c *NodeCredentials) EnrollmentToken() (string, error) {
	if c.tokenFile == "" {
		return "", errors.New("no --token-file")
	}
	b, err := os.ReadFile(c.tokenFile)
	if err != nil {
		return "", fmt.Errorf("reading the enrollment token: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// Install takes the node certificate the CCM issued, and the CAs it
// trusts. The certificate must certify this speaker's key, name this node
// and chain to a CA of bundlePEM; it is presented from the next handshake.
// bundlePEM replaces the bundle sent before (see TrustBundle).
func (c *NodeCredentials) Install(certPEM, bundlePEM []byte) error {
	leaf, err := parseCertPEM(certPEM)
	if err != nil {
		return fmt.Errorf("ironlb pki: node certificate: %w", err)
	}
	if !c.key.PublicKey.Equal(leaf.PublicKey) {
		return errors.New("ironlb pki: node certificate is for another key")
	}
	cas, err := parseBundle(bundlePEM)
	if err != nil {
		return fmt.Errorf("ironlb pki: node certificate: %w", err)
	}
	roots := x509.NewCertPool()
	for _, ca := range cas {
		roots.AddCert(ca)
	}
	if err := verifyPeer([]*x509.Certificate{leaf}, roots, x509.ExtKeyUsageServerAuth, NodeIdentity(c.node), c.now()); err != nil {
		return err
	}
	cert := &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: c.key, Leaf: leaf}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert = cert
	c.inband = cas
	c.rebuildPoolLocked()
	klog.InfoS("ironlb pki: installed node certificate", "node", c.node, "notAfter", leaf.NotAfter)
	return nil
}

// TrustBundle takes the CAs the CCM trusts now (sent when they change):
// they replace those sent before. The speaker trusts only the CAs both in
// them and in its mounted bundle (or the mounted ones alone while they
// share none), so this can end trust in a CA but never start it.
func (c *NodeCredentials) TrustBundle(bundlePEM []byte) error {
	cas, err := parseBundle(bundlePEM)
	if err != nil {
		return fmt.Errorf("ironlb pki: CA bundle: %w", err)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inband = cas
	c.rebuildPoolLocked()
	klog.InfoS("ironlb pki: took the CCM's CA bundle", "node", c.node, "cas", len(cas), "trusted", c.trustedLocked())
	return nil
}

// maxBundleCAs bounds the CAs of a bundle: a rotation needs two.
const maxBundleCAs = 16

// parseBundle returns the CA certificates of a PEM bundle; it refuses a
// bundle without any, with too many, or with a certificate that is not a
// CA.
func parseBundle(bundlePEM []byte) ([]*x509.Certificate, error) {
	var cas []*x509.Certificate
	rest := bundlePEM
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != pemTypeCertificate {
			continue
		}
		if len(cas) == maxBundleCAs {
			return nil, fmt.Errorf("more than %d CAs", maxBundleCAs)
		}
		ca, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse CA certificate: %w", err)
		}
		if !ca.BasicConstraintsValid || !ca.IsCA {
			return nil, fmt.Errorf("certificate %q is not a CA", ca.Subject)
		}
		cas = append(cas, ca)
	}
	if len(cas) == 0 {
		return nil, errors.New("no PEM certificate of a CA in the bundle")
	}
	return cas, nil
}

// current returns the trusted CAs and the certificate to present.
func (c *NodeCredentials) current() (*x509.CertPool, *tls.Certificate) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	if now.Sub(c.lastCheck) >= reloadInterval {
		if err := c.reloadLocked(); err != nil {
			if msg := err.Error(); msg != c.fileErr {
				c.fileErr = msg
				klog.ErrorS(err, "ironlb pki: keeping the previous CA bundle", "file", c.caFile)
			}
		} else {
			c.fileErr = ""
		}
	}
	cert := c.self
	// Valid now, from a CA mounted or sent: the CCM decides whether it
	// still trusts that CA (and enrolls the speaker again if not).
	if c.cert != nil && chainsTo([]*x509.Certificate{c.cert.Leaf}, c.known, now) {
		cert = c.cert
	}
	return c.pool, cert
}

// reloadLocked re-reads the mounted bundle.
func (c *NodeCredentials) reloadLocked() error {
	c.lastCheck = c.now()
	raw, err := os.ReadFile(c.caFile)
	if err != nil {
		return fmt.Errorf("ironlb pki: read CA bundle: %w", err)
	}
	if c.pool != nil && bytes.Equal(raw, c.fileRaw) {
		return nil
	}
	cas, err := parseBundle(raw)
	if err != nil {
		return fmt.Errorf("ironlb pki: %s: %w", c.caFile, err)
	}
	c.fileRaw = raw
	c.mounted = cas
	c.rebuildPoolLocked()
	if c.known != nil {
		klog.InfoS("ironlb pki: reloaded CA bundle", "file", c.caFile, "trusted", c.trustedLocked())
	}
	return nil
}

// rebuildPoolLocked computes the trusted CAs: those mounted that the CCM
// sent too, or all mounted while none of them was sent.
func (c *NodeCredentials) rebuildPoolLocked() {
	pool, known := x509.NewCertPool(), x509.NewCertPool()
	var both []*x509.Certificate
	for _, m := range c.mounted {
		known.AddCert(m)
		if slices.ContainsFunc(c.inband, m.Equal) {
			both = append(both, m)
		}
	}
	for _, s := range c.inband {
		known.AddCert(s)
	}
	if len(both) == 0 {
		both = c.mounted
	}
	for _, ca := range both {
		pool.AddCert(ca)
	}
	c.pool, c.known, c.trusted = pool, known, len(both)
	c.gen++
}

// VerifyCCM checks certs, the chain a CCM presented when its connection
// opened, against the CAs trusted now (the mounted bundle is re-read when
// due): a connection opened under a CA no longer trusted fails it, and so
// does one whose certificate has expired since.
func (c *NodeCredentials) VerifyCCM(certs []*x509.Certificate) error {
	pool, _ := c.current()
	return verifyPeer(certs, pool, x509.ExtKeyUsageClientAuth, CCMIdentity, c.now())
}

// TrustGeneration changes whenever the trusted CAs may have changed: a
// bundle the CCM sent, a node certificate installed, a changed mounted
// bundle (which it re-reads when due). Open connections must then be
// checked again (VerifyCCM).
func (c *NodeCredentials) TrustGeneration() uint64 {
	_, _ = c.current()
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.gen
}

// trustedLocked is how many CAs the speaker trusts, for logs.
func (c *NodeCredentials) trustedLocked() int { return c.trusted }

// WriteBundle writes pemData to path the way a ConfigMap volume presents
// it (temporary file and rename). For tests and the demo.
func WriteBundle(path string, pemData []byte) error {
	return writeFileAtomic(path, pemData, 0o644)
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
