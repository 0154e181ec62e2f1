package pki

import (
	"crypto/tls"
	"crypto/x509"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// fuzzNow is the time the fuzz targets evaluate certificates at.
var fuzzNow = time.Date(2026, 12, 2, 12, 0, 0, 0, time.UTC)

// FuzzParseCA: whatever the CA Secret holds, parsing it never panics, and
// a CA it accepts is one: a CA certificate valid now whose key matches,
// able to issue a speaker certificate that verifies against it.
func FuzzParseCA(f *testing.F) {
	ca, err := NewCA(fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	leaf, leafKey, err := ca.Issue(SpeakerIdentity, time.Hour, fuzzNow)
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
		cert, key, err := got.Issue(SpeakerIdentity, time.Hour, fuzzNow)
		if err != nil {
			return // a CA that cannot issue (its key type, say) fails there, with an error
		}
		pair, err := tls.X509KeyPair(cert, key)
		if err != nil {
			t.Fatalf("the accepted CA issued an unusable certificate: %v", err)
		}
		if err := verifyPeer([]*x509.Certificate{pair.Leaf}, got.Pool(), x509.ExtKeyUsageServerAuth, SpeakerIdentity, fuzzNow); err != nil {
			t.Fatalf("a certificate the accepted CA issued does not verify: %v", err)
		}
	})
}

// FuzzEvaluateSpeakerSecret: whatever the speakers' TLS Secret holds, the
// CCM's check of it never panics, and a Secret it keeps (empty reason)
// holds a pair that verifies as a speaker against the current CA.
func FuzzEvaluateSpeakerSecret(f *testing.F) {
	ca, err := NewCA(fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	cert, key, err := ca.Issue(SpeakerIdentity, 24*time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	other, otherKey, err := ca.Issue(CCMIdentity, 24*time.Hour, fuzzNow)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ca.CertPEM(), cert, key)
	f.Add(ca.CertPEM(), other, otherKey)
	f.Add(ca.CertPEM(), cert, otherKey)
	f.Add([]byte{}, []byte{}, []byte{})
	f.Fuzz(func(t *testing.T, caPEM, certPEM, keyPEM []byte) {
		s := &corev1.Secret{Data: map[string][]byte{CACertKey: caPEM, TLSCertKey: certPEM, TLSKeyKey: keyPEM}}
		if _, reason := evaluateSpeakerSecret(s, ca, fuzzNow); reason != "" {
			return
		}
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatalf("kept a Secret whose pair does not load: %v", err)
		}
		if err := verifyPeer([]*x509.Certificate{pair.Leaf}, ca.Pool(), x509.ExtKeyUsageServerAuth, SpeakerIdentity, fuzzNow); err != nil {
			t.Fatalf("kept a Secret whose certificate does not verify: %v", err)
		}
	})
}
