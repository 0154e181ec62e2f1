package pki

import (
	"context"
	"crypto/x509"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestCCMCertificateLifetime proves that the CCM's client certificates
// live CCMCertLifetime, and that they are renewed when due even while the
// CA Secret cannot be read (from the CA in memory).
func TestCCMCertificateLifetime(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	first := b.Certificate().Leaf
	if diff := cmp.Diff(t0.Add(CCMCertLifetime), first.NotAfter); diff != "" {
		t.Errorf("CCM certificate NotAfter (-want +got):\n%s", diff)
	}
	replaceSecret(t, cs, corruptCASecret())
	clk.Add(CCMCertLifetime * 2 / 3)
	if err := b.Sync(context.Background()); err == nil {
		t.Fatal("Sync of a corrupt CA Secret succeeded")
	}
	renewed := b.Certificate().Leaf
	if renewed.Equal(first) {
		t.Fatal("the CCM certificate was not renewed while the CA Secret was corrupt")
	}
	if diff := cmp.Diff(clk.Now().Add(CCMCertLifetime), renewed.NotAfter); diff != "" {
		t.Errorf("renewed CCM certificate NotAfter (-want +got):\n%s", diff)
	}
	if err := verifyPeer([]*x509.Certificate{renewed}, b.CA().Pool(), x509.ExtKeyUsageClientAuth, CCMIdentity, clk.Now()); err != nil {
		t.Errorf("renewed CCM certificate: %v", err)
	}
}
