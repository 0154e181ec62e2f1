package pki

import (
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// verifyPeer verifies that certs (leaf first, as presented by the peer)
// chain to roots at time now, that the leaf is valid for usage and that it
// carries the identity want. No hostname verification is performed: peers
// are authenticated by their spiffe:// identity.
func verifyPeer(certs []*x509.Certificate, roots *x509.CertPool, usage x509.ExtKeyUsage, want string, now time.Time) error {
	if len(certs) == 0 {
		return errors.New("ironlb pki: peer presented no certificate")
	}
	if roots == nil {
		return errors.New("ironlb pki: no trusted CA configured")
	}
	leaf := certs[0]
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}); err != nil {
		return fmt.Errorf("ironlb pki: verify peer certificate %q: %w", leaf.Subject, err)
	}
	if got := IdentityOf(leaf); got != want {
		return fmt.Errorf("ironlb pki: peer identity is %q, want %q", got, want)
	}
	return nil
}
