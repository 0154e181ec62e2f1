package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"
)

// fuzzNow is the time the fuzz targets evaluate certificates at.
var fuzzNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// FuzzParseCA: whatever the CA Secret holds, parsing it never panics, and
// a CA it accepts is one: a CA certificate valid now whose key matches,
// able to issue a node certificate that verifies against it.
func FuzzParseCA(f *testing.F) {
	ca, err := NewCA(fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	leaf, leafKey, err := ca.Issue(nodeA, time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM(), ca.KeyPEM())
	f.Add(leaf, leafKey)
	f.Add(ca.CertPEM(), leafKey)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		got, err := parseCA(certPEM, keyPEM, fuzzNow)
		if err != nil {
			return
		}
		c := got.Certificate()
		if !c.IsCA || fuzzNow.After(c.NotAfter) || fuzzNow.Before(c.NotBefore) {
			t.Fatalf("accepted a CA that is not one now: %+v", c)
		}
		cert, key, err := got.Issue(nodeA, time.Hour, fuzzNow)
		if err != nil {
			return // a CA that cannot issue (its key type, say) fails there, with an error
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatalf("the accepted CA issued an unusable certificate: %v", err)
		}
		if err := verifyPeer([]*x509.Certificate{pair.Leaf}, got.Pool(), x509.ExtKeyUsageServerAuth, nodeA, fuzzNow); err != nil {
			t.Fatalf("a certificate the accepted CA issued does not verify: %v", err)
		}
	})
}

// FuzzInstall: whatever a CCM (or something posing as one) sends a speaker
// as its node certificate and bundle, Install never panics, and a
// certificate it accepts certifies the speaker's own key, names its node,
// is valid for serving and chains to a CA of the bundle sent with it; and
// the bundle never makes the speaker trust a CA it does not mount.
func FuzzInstall(f *testing.F) {
	ca, err := NewCA(fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	other, err := NewCA(fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	caFile := filepath.Join(f.TempDir(), CACertKey)
	if err := WriteBundle(caFile, ca.CertPEM()); err != nil {
		f.Fatal(err)
	}
	sp, err := newNodeCredentials("node-a", caFile, "", func() time.Time { return fuzzNow })
	if err != nil {
		f.Fatal(err)
	}
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	issue := func(ca *CA, identity string, pub any) []byte {
		c, err := ca.IssueFor(identity, pub, NodeCertLifetime, fuzzNow)
		if err != nil {
			f.Fatal(err)
		}
		return c
	}
	good := issue(ca, nodeA, sp.key.Public())
	otherCCMPEM, _, err := other.Issue(CCMIdentity, time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	otherCCM, err := parseCertPEM(otherCCMPEM)
	if err != nil {
		f.Fatal(err)
	}
	both := append(ca.CertPEM(), other.CertPEM()...)
	f.Add(good, ca.CertPEM())
	f.Add(good, both)
	f.Add(good, other.CertPEM())
	f.Add(issue(other, nodeA, sp.key.Public()), both)
	f.Add(issue(ca, NodeIdentity("node-b"), sp.key.Public()), ca.CertPEM())
	f.Add(issue(ca, CCMIdentity, sp.key.Public()), ca.CertPEM())
	f.Add(issue(ca, nodeA, otherKey.Public()), ca.CertPEM())
	f.Add(append(good, ca.CertPEM()...), []byte{})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, certPEM, bundlePEM []byte) {
		if err := sp.Install(certPEM, bundlePEM); err != nil {
			return
		}
		leaf, err := parseCertPEM(certPEM)
		if err != nil {
			t.Fatalf("accepted a certificate that does not parse: %v", err)
		}
		if !sp.key.PublicKey.Equal(leaf.PublicKey) {
			t.Fatal("accepted a certificate for another key")
		}
		if got := NodeOf(IdentityOf(leaf)); got != "node-a" {
			t.Fatalf("accepted a certificate naming node %q", got)
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(bundlePEM)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: fuzzNow, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
			t.Fatalf("accepted a certificate that does not chain to its bundle: %v", err)
		}
		if enrolled, _ := sp.Enrolled(); !enrolled || !presented(sp).Equal(leaf) {
			t.Fatal("an accepted certificate is not presented")
		}
		// Whatever bundle came with it, only the mounted CA counts for
		// the CCM.
		if verifyPeer([]*x509.Certificate{otherCCM}, sp.pool, x509.ExtKeyUsageClientAuth, CCMIdentity, fuzzNow) == nil {
			t.Fatal("a bundle sent to the speaker made it trust a CA it does not mount")
		}
	})
}

// FuzzParseAttestation: whatever URI SAN a certificate carries, parsing
// it as an attestation never panics, and an attestation it accepts names
// two UUIDs and prints back to the same text.
func FuzzParseAttestation(f *testing.F) {
	f.Add(Attestation{PodUID: "3ec3203b-dead-473c-b2cd-c5ca6d9278af", NodeUID: "dae57eca-f888-44b3-bbcd-dfc9cc0ec8f7"}.URI().String())
	f.Add(attestationPrefix + ":node:")
	f.Add("urn:ironlb:pod:x:node:y:node:z")
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAttestation(s)
		if err != nil {
			return
		}
		if !uidPattern.MatchString(string(a.PodUID)) || !uidPattern.MatchString(string(a.NodeUID)) {
			t.Fatalf("accepted %q as %+v", s, a)
		}
		if got := a.URI().String(); got != s {
			t.Fatalf("%q parsed to %+v, which prints as %q", s, a, got)
		}
	})
}
