package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

var t0 = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// nodeA is the identity of node-a's speaker, the node most tests dial.
var nodeA = NodeIdentity("node-a")

func mustCA(t *testing.T, now time.Time) *CA {
	t.Helper()
	ca, err := NewCA(now)
	if err != nil {
		t.Fatalf("NewCA: %v", err)
	}
	return ca
}

func mustIssue(t *testing.T, ca *CA, identity string, lifetime time.Duration, now time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := ca.Issue(identity, lifetime, now)
	if err != nil {
		t.Fatalf("Issue(%q): %v", identity, err)
	}
	return c, k
}

func mustParseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	c, err := parseCertPEM(certPEM)
	if err != nil {
		t.Fatalf("parse certificate: %v", err)
	}
	return c
}

// TestNewCA proves that NewCA makes a self-signed P-256 CA, valid from
// clockSkew before now for CALifetime, that round-trips through ParseCA.
func TestNewCA(t *testing.T) {
	ca := mustCA(t, t0)
	c := ca.Certificate()
	type props struct {
		IsCA, SelfSigned bool
		Curve            string
		NotBefore        time.Time
		NotAfter         time.Time
		CertSign         bool
	}
	pub, _ := c.PublicKey.(*ecdsa.PublicKey)
	got := props{
		IsCA:       c.IsCA && c.BasicConstraintsValid,
		SelfSigned: c.CheckSignatureFrom(c) == nil,
		NotBefore:  c.NotBefore,
		NotAfter:   c.NotAfter,
		CertSign:   c.KeyUsage&x509.KeyUsageCertSign != 0,
	}
	if pub != nil {
		got.Curve = pub.Curve.Params().Name
	}
	want := props{IsCA: true, SelfSigned: true, Curve: "P-256", NotBefore: t0.Add(-clockSkew), NotAfter: t0.Add(CALifetime), CertSign: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CA properties mismatch (-want +got):\n%s", diff)
	}

	parsed, err := parseCA(ca.CertPEM(), ca.KeyPEM(), t0)
	if err != nil {
		t.Fatalf("parseCA(round trip): %v", err)
	}
	if diff := cmp.Diff(ca.CertPEM(), parsed.CertPEM()); diff != "" {
		t.Errorf("round trip cert mismatch (-want +got):\n%s", diff)
	}
	if _, err := ParseCA(ca.CertPEM(), ca.KeyPEM()); err == nil {
		t.Errorf("ParseCA at wall clock time accepted a CA valid from %s", c.NotBefore)
	}
}

// TestNewCASubjectsDiffer proves that two CAs made by NewCA have different
// subject names: during a rotation the CCM picks the client certificate
// whose issuer the speaker names in its certificate request, and TLS names
// CAs by subject only, so equal names would make it present the current
// CA's certificate to a speaker that trusts only the previous CA.
func TestNewCASubjectsDiffer(t *testing.T) {
	a, b := mustCA(t, t0), mustCA(t, t0)
	if string(a.Certificate().RawSubject) == string(b.Certificate().RawSubject) {
		t.Errorf("two CAs share the subject %q", a.Certificate().Subject)
	}
	if diff := cmp.Diff("ironlb-ca", a.Certificate().Subject.CommonName); diff != "" {
		t.Errorf("CA common name (-want +got):\n%s", diff)
	}
}

// TestParseCAErrors proves that ParseCA refuses each kind of unusable CA
// Secret content with an error naming the offending key.
func TestParseCAErrors(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	expired := mustCA(t, t0.Add(-CALifetime-time.Hour))
	leafCert, leafKey := mustIssue(t, ca, nodeA, 0, t0)

	tests := []struct {
		name      string
		cert, key []byte
		wantErr   string
	}{
		{name: "empty cert", cert: nil, key: ca.KeyPEM(), wantErr: "ca.crt: no PEM certificate"},
		{name: "garbage cert", cert: []byte("garbage"), key: ca.KeyPEM(), wantErr: "ca.crt: no PEM certificate"},
		{name: "bad DER", cert: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}}), key: ca.KeyPEM(), wantErr: "ca.crt: parse certificate"},
		{name: "missing key", cert: ca.CertPEM(), key: nil, wantErr: "ca.key: no PEM private key"},
		{name: "bad key DER", cert: ca.CertPEM(), key: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), wantErr: "ca.key: parse PRIVATE KEY"},
		{name: "key mismatch", cert: ca.CertPEM(), key: other.KeyPEM(), wantErr: "ca.key: private key does not match"},
		{name: "not a CA", cert: leafCert, key: leafKey, wantErr: "is not a CA"},
		{name: "expired", cert: expired.CertPEM(), key: expired.KeyPEM(), wantErr: "expired at"},
		{name: "not yet valid", cert: mustCA(t, t0.Add(time.Hour)).CertPEM(), key: nil, wantErr: "not valid before"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCA(tc.cert, tc.key, t0)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseCA() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestParseCABringYourOwn checks that operator-provided CAs with SEC 1 EC
// and PKCS#1 RSA keys are accepted and can issue usable certificates.
func TestParseCABringYourOwn(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		key  any
		pem  *pem.Block
	}{
		{name: "SEC 1 EC key", key: ecKey, pem: &pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER}},
		{name: "PKCS#1 RSA key", key: rsaKey, pem: &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tmpl := &x509.Certificate{
				SerialNumber:          big.NewInt(42),
				Subject:               pkix.Name{CommonName: "corp root"},
				NotBefore:             t0.Add(-time.Hour),
				NotAfter:              t0.Add(24 * time.Hour),
				IsCA:                  true,
				BasicConstraintsValid: true,
				KeyUsage:              x509.KeyUsageCertSign,
			}
			var der []byte
			switch k := tc.key.(type) {
			case *ecdsa.PrivateKey:
				der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
			case *rsa.PrivateKey:
				der, err = x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
			}
			if err != nil {
				t.Fatal(err)
			}
			ca, err := parseCA(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(tc.pem), t0)
			if err != nil {
				t.Fatalf("parseCA: %v", err)
			}
			certPEM, _ := mustIssue(t, ca, nodeA, 0, t0)
			leaf := mustParseCert(t, certPEM)
			if err := verifyPeer([]*x509.Certificate{leaf}, ca.Pool(), x509.ExtKeyUsageServerAuth, nodeA, t0); err != nil {
				t.Errorf("issued certificate does not verify: %v", err)
			}
			if diff := cmp.Diff(t0.Add(24*time.Hour), leaf.NotAfter); diff != "" {
				t.Errorf("leaf NotAfter not clamped to CA (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIssue proves that issued leaves carry exactly their spiffe identity,
// the right usages (CCM client-only, node server and client), a lifetime
// clamped to the CA's, and are signed by the CA.
func TestIssue(t *testing.T) {
	ca := mustCA(t, t0)
	tests := []struct {
		name      string
		identity  string
		lifetime  time.Duration
		wantEKU   []x509.ExtKeyUsage
		wantAfter time.Time
	}{
		{name: "ccm default lifetime", identity: CCMIdentity, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, wantAfter: t0.Add(DefaultLeafLifetime)},
		{name: "speaker one hour", identity: nodeA, lifetime: time.Hour, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, wantAfter: t0.Add(time.Hour)},
		{name: "clamped to CA", identity: nodeA, lifetime: 20 * CALifetime, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, wantAfter: t0.Add(CALifetime)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, keyPEM := mustIssue(t, ca, tc.identity, tc.lifetime, t0)
			c := mustParseCert(t, certPEM)
			type props struct {
				Identity        string
				EKU             []x509.ExtKeyUsage
				DNS             []string
				IPs             int
				IsCA            bool
				NotBefore       time.Time
				NotAfter        time.Time
				KeyPEMType      string
				SignedByCA      bool
				AuthorityKeyIDs bool
			}
			block, _ := pem.Decode(keyPEM)
			got := props{
				Identity:        IdentityOf(c),
				EKU:             c.ExtKeyUsage,
				DNS:             c.DNSNames,
				IPs:             len(c.IPAddresses),
				IsCA:            c.IsCA,
				NotBefore:       c.NotBefore,
				NotAfter:        c.NotAfter,
				KeyPEMType:      block.Type,
				SignedByCA:      c.CheckSignatureFrom(ca.Certificate()) == nil,
				AuthorityKeyIDs: string(c.AuthorityKeyId) == string(ca.Certificate().SubjectKeyId),
			}
			want := props{
				Identity:        tc.identity,
				EKU:             tc.wantEKU,
				NotBefore:       t0.Add(-clockSkew),
				NotAfter:        tc.wantAfter,
				KeyPEMType:      "PRIVATE KEY",
				SignedByCA:      true,
				AuthorityKeyIDs: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("leaf properties mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIssueErrors proves that Issue refuses non-spiffe identities and an
// expired CA.
func TestIssueErrors(t *testing.T) {
	ca := mustCA(t, t0)
	tests := []struct {
		name     string
		identity string
		now      time.Time
		wantErr  string
	}{
		{name: "not a URI", identity: "ccm", now: t0, wantErr: "not a spiffe:// URI"},
		{name: "wrong scheme", identity: "https://ironlb.dev/ccm", now: t0, wantErr: "not a spiffe:// URI"},
		{name: "CA expired", identity: CCMIdentity, now: t0.Add(CALifetime + time.Hour), wantErr: "CA expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ca.Issue(tc.identity, time.Hour, tc.now)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Issue() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestIdentityOf proves that IdentityOf returns the first spiffe URI SAN.
func TestIdentityOf(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{name: "nil", cert: nil, want: ""},
		{name: "no URIs", cert: &x509.Certificate{DNSNames: []string{"a"}}, want: ""},
		{name: "non-spiffe only", cert: &x509.Certificate{URIs: []*url.URL{mustURL("https://ironlb.dev/ccm")}}, want: ""},
		{name: "spiffe after other", cert: &x509.Certificate{URIs: []*url.URL{mustURL("https://x"), mustURL(nodeA)}}, want: nodeA},
		{name: "ccm", cert: &x509.Certificate{URIs: []*url.URL{mustURL(CCMIdentity)}}, want: CCMIdentity},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, IdentityOf(tc.cert)); diff != "" {
				t.Errorf("IdentityOf() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// TestIssueFor proves that IssueFor certifies the key the caller holds (the
// speaker's, which never leaves its node) rather than a fresh one, with the
// same identity, usage and lifetime rules as Issue: a node certificate
// serves and authenticates clients, a CCM certificate is client-only.
func TestIssueFor(t *testing.T) {
	ca := mustCA(t, t0)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		identity string
		lifetime time.Duration
		wantEKU  []x509.ExtKeyUsage
		wantLife time.Duration
	}{
		{name: "node certificate", identity: nodeA, lifetime: NodeCertLifetime, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, wantLife: NodeCertLifetime},
		{name: "ccm is client only", identity: CCMIdentity, lifetime: time.Hour, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, wantLife: time.Hour},
		{name: "default lifetime", identity: nodeA, wantEKU: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, wantLife: DefaultLeafLifetime},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			certPEM, err := ca.IssueFor(tc.identity, key.Public(), tc.lifetime, t0)
			if err != nil {
				t.Fatalf("IssueFor: %v", err)
			}
			c := mustParseCert(t, certPEM)
			type props struct {
				Identity   string
				CertifiesK bool
				EKU        []x509.ExtKeyUsage
				IsCA       bool
				NotAfter   time.Time
				SignedByCA bool
			}
			got := props{
				Identity:   IdentityOf(c),
				CertifiesK: key.PublicKey.Equal(c.PublicKey),
				EKU:        c.ExtKeyUsage,
				IsCA:       c.IsCA,
				NotAfter:   c.NotAfter,
				SignedByCA: c.CheckSignatureFrom(ca.Certificate()) == nil,
			}
			want := props{Identity: tc.identity, CertifiesK: true, EKU: tc.wantEKU, NotAfter: t0.Add(tc.wantLife), SignedByCA: true}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("certificate properties mismatch (-want +got):\n%s", diff)
			}
		})
	}

	// The usages are enforced by verification, not just recorded.
	ccmPEM, err := ca.IssueFor(CCMIdentity, key.Public(), time.Hour, t0)
	if err != nil {
		t.Fatal(err)
	}
	err = verifyPeer([]*x509.Certificate{mustParseCert(t, ccmPEM)}, ca.Pool(), x509.ExtKeyUsageServerAuth, CCMIdentity, t0)
	if err == nil || !strings.Contains(err.Error(), "incompatible key usage") {
		t.Errorf("CCM certificate verified for server authentication: err = %v", err)
	}

	if _, err := ca.IssueFor("node-a", key.Public(), time.Hour, t0); err == nil || !strings.Contains(err.Error(), "not a spiffe:// URI") {
		t.Errorf("IssueFor(non-URI) error = %v, want it to contain %q", err, "not a spiffe:// URI")
	}
}

// TestNodeIdentity proves that NodeOf inverts NodeIdentity and finds no node
// in the CCM's identity, a not-enrolled speaker's or foreign URIs, so that
// a certificate can only name the node its identity was made for.
func TestNodeIdentity(t *testing.T) {
	for _, node := range []string{"node-a", "worker-1.example.com", "n"} {
		t.Run("round trip "+node, func(t *testing.T) {
			id := NodeIdentity(node)
			if diff := cmp.Diff("spiffe://ironlb.dev/node/"+node, id); diff != "" {
				t.Errorf("NodeIdentity(%q) mismatch (-want +got):\n%s", node, diff)
			}
			if diff := cmp.Diff(node, NodeOf(id)); diff != "" {
				t.Errorf("NodeOf(NodeIdentity(%q)) mismatch (-want +got):\n%s", node, diff)
			}
		})
	}
	tests := []struct {
		name, identity, want string
	}{
		{name: "ccm", identity: CCMIdentity, want: ""},
		{name: "not enrolled", identity: enrollIdentityPrefix + "node-a", want: ""},
		{name: "other scheme", identity: "https://ironlb.dev/node/node-a", want: ""},
		{name: "other trust domain", identity: "spiffe://example.com/node/node-a", want: ""},
		{name: "empty", identity: "", want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, NodeOf(tc.identity)); diff != "" {
				t.Errorf("NodeOf(%q) mismatch (-want +got):\n%s", tc.identity, diff)
			}
		})
	}
}
