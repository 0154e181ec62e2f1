package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"
)

const (
	// CCMIdentity is the URI SAN carried by the cloud-controller-manager's
	// client certificate.
	CCMIdentity = "spiffe://ironlb.dev/ccm"
	// nodeIdentityPrefix starts the URI SAN of a speaker's certificate:
	// NodeIdentity(node).
	nodeIdentityPrefix = "spiffe://ironlb.dev/node/"

	// CALifetime is the validity period of a CA created by NewCA.
	CALifetime = 10 * 365 * 24 * time.Hour
	// DefaultLeafLifetime is the validity period of leaf certificates
	// issued when no explicit lifetime is requested.
	DefaultLeafLifetime = 365 * 24 * time.Hour
	// NodeCertLifetime is the validity of a speaker's node certificate.
	// The CCM renews it on the speaker's stream after two thirds of it.
	NodeCertLifetime = 24 * time.Hour
	// CCMCertLifetime is the validity of the CCM's client certificates
	// (kept in memory only). The running CCM renews them after two thirds
	// of it.
	CCMCertLifetime = 24 * time.Hour

	// clockSkew is how far NotBefore is backdated so that peers whose clocks
	// lag slightly behind still accept a freshly issued certificate.
	clockSkew = 5 * time.Minute

	pemTypeCertificate = "CERTIFICATE"
	pemTypePKCS8Key    = "PRIVATE KEY"
	pemTypeECKey       = "EC PRIVATE KEY"
	pemTypeRSAKey      = "RSA PRIVATE KEY"
)

// CA is a certificate authority able to issue ironlb leaf certificates.
// It is immutable and safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	keyPEM  []byte
}

// NewCA creates a self-signed ECDSA P-256 CA valid for CALifetime from now.
func NewCA(now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(key.Public())
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "ironlb-ca", Organization: []string{"ironlb"}, SerialNumber: serial.Text(16)}, // unique: clients pick their certificate by issuer name
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(CALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse created CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal CA key: %w", err)
	}
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8Key, Bytes: keyDER}),
	}, nil
}

// ParseCA parses a PEM encoded CA certificate and its private key, as stored
// under the ca.crt and ca.key keys of the ironlb-ca Secret. The key may be
// PKCS#8, SEC 1 (EC) or PKCS#1 (RSA) encoded so that an operator-provided CA
// can be used. ParseCA rejects certificates that are not CAs, keys that do
// not match the certificate and CAs that are expired at the current time.
func ParseCA(certPEM, keyPEM []byte) (*CA, error) {
	return parseCA(certPEM, keyPEM, time.Now())
}

func parseCA(certPEM, keyPEM []byte, now time.Time) (*CA, error) {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CACertKey, err)
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, fmt.Errorf("%s: certificate %q is not a CA (basic constraints CA:TRUE missing)", CACertKey, cert.Subject)
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("%s: certificate %q lacks the certSign key usage", CACertKey, cert.Subject)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%s: CA certificate %q expired at %s", CACertKey, cert.Subject, cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if now.Before(cert.NotBefore) {
		return nil, fmt.Errorf("%s: CA certificate %q is not valid before %s", CACertKey, cert.Subject, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CAKeyKey, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%s: private key does not match the certificate in %s", CAKeyKey, CACertKey)
	}
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: bytes.Clone(certPEM),
		keyPEM:  bytes.Clone(keyPEM),
	}, nil
}

// CertPEM returns the PEM encoded CA certificate.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// KeyPEM returns the PEM encoded CA private key.
func (ca *CA) KeyPEM() []byte { return bytes.Clone(ca.keyPEM) }

// Certificate returns the parsed CA certificate. Callers must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new certificate pool containing only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Issue creates an ECDSA P-256 key and a leaf certificate for identity,
// which must be a spiffe:// URI such as CCMIdentity or NodeIdentity(node).
// The certificate carries identity as its only SAN (no DNS names or IP
// addresses: peers are authenticated by identity, not by hostname).
// CCMIdentity certificates are client-only; all others may be used as
// server and client. A lifetime <= 0 selects DefaultLeafLifetime; NotAfter
// never exceeds the CA's NotAfter.
func (ca *CA) Issue(identity string, lifetime time.Duration, now time.Time) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: generate key: %w", identity, err)
	}
	certPEM, err = ca.IssueFor(identity, key.Public(), lifetime, now)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, fmt.Errorf("issue certificate for %s: marshal key: %w", identity, err)
	}
	return certPEM, pem.EncodeToMemory(&pem.Block{Type: pemTypePKCS8Key, Bytes: keyDER}), nil
}

// IssueFor is Issue for a key the caller holds (a speaker's, which never
// leaves its node): it certifies pub and returns the PEM certificate.
func (ca *CA) IssueFor(identity string, pub crypto.PublicKey, lifetime time.Duration, now time.Time) ([]byte, error) {
	return ca.issueFor(identity, pub, lifetime, now, nil)
}

// issueFor is IssueFor; extra are URI SANs after identity (a node
// certificate's Attestation).
func (ca *CA) issueFor(identity string, pub crypto.PublicKey, lifetime time.Duration, now time.Time, extra []*url.URL) ([]byte, error) {
	u, err := url.Parse(identity)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" {
		return nil, fmt.Errorf("issue certificate: identity %q is not a spiffe:// URI", identity)
	}
	if now.After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("issue certificate for %s: CA expired at %s", identity, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	notBefore := now.Add(-clockSkew)
	if notBefore.Before(ca.cert.NotBefore) {
		notBefore = ca.cert.NotBefore
	}
	usages := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	if identity == CCMIdentity {
		usages = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: %w", identity, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: identity, Organization: []string{"ironlb"}},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           usages,
		BasicConstraintsValid: true,
		URIs:                  append([]*url.URL{u}, extra...),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("issue certificate for %s: sign: %w", identity, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemTypeCertificate, Bytes: der}), nil
}

// NodeIdentity is the URI SAN of the certificate of node's speaker.
func NodeIdentity(node string) string { return nodeIdentityPrefix + node }

// NodeOf returns the node an identity names, or "" if it names none.
func NodeOf(identity string) string {
	n, ok := strings.CutPrefix(identity, nodeIdentityPrefix)
	if !ok {
		return ""
	}
	return n
}

// IdentityOf returns the first spiffe:// URI SAN of cert, or "" if cert is
// nil or carries none.
func IdentityOf(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	for _, u := range cert.URIs {
		if u != nil && u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

// parseCertPEM returns the first CERTIFICATE block of data.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM certificate")
		}
		if block.Type != pemTypeCertificate {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return cert, nil
	}
}

// parseKeyPEM returns the first private key block of data.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			return nil, errors.New("no PEM private key")
		}
		var (
			key any
			err error
		)
		switch block.Type {
		case pemTypePKCS8Key:
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case pemTypeECKey:
			key, err = x509.ParseECPrivateKey(block.Bytes)
		case pemTypeRSAKey:
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		default:
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", key)
		}
		return signer, nil
	}
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}
