package pki

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

// TestOldCAKeyCannotKeepTrust is the attack of issue 20, finding 3: the
// overlap of a rotation is over (the kubelet mounted the bundle with the
// new CA alone) and whoever kept the old CA's key poses as the CCM. The
// speaker learnt the old CA in-band during the rotation (the bundle the
// CCM sent with its new certificate), but a bundle the CCM sends never
// adds a CA to the mounted ones: the old CA's CCM certificate is refused
// at the handshake, so it cannot install a bundle trusting it; and even a
// bundle that named the old CA (were it installed) adds no trust. The
// current CA's CCM certificate still gets in.
func TestOldCAKeyCannotKeepTrust(t *testing.T) {
	oldCA := mustCA(t, t0.Add(-time.Hour))
	newCA := mustCA(t, t0)
	clk := newClock(t0)
	sp := newSpeaker(t, "node-a", oldCA.CertPEM(), clk.Now)

	// The rotation: the CCM renews the speaker from the new CA and sends
	// both CAs.
	certPEM, err := newCA.IssueFor(NodeIdentity("node-a"), sp.key.Public(), NodeCertLifetime, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	both := append(newCA.CertPEM(), oldCA.CertPEM()...)
	if err := sp.Install(certPEM, both); err != nil {
		t.Fatalf("Install during the rotation: %v", err)
	}
	// The overlap ends; the kubelet mounts the new bundle.
	if err := WriteBundle(sp.caFile, newCA.CertPEM()); err != nil {
		t.Fatal(err)
	}
	clk.Add(reloadInterval)

	ccm := func(ca *CA) *tls.Config {
		certPEM, keyPEM := mustIssue(t, ca, CCMIdentity, time.Hour, clk.Now())
		c := keyPair(t, certPEM, keyPEM)
		return &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // the test checks the server side
			// Presented whatever CAs the speaker names.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil },
		}
	}
	refused := func(step string) {
		t.Helper()
		res := handshake(t, sp.ServerTLSConfig(), ccm(oldCA))
		if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), "unknown authority") {
			t.Errorf("%s: the speaker accepted a CCM certificate of the old CA (server error %v)", step, res.serverErr)
		}
		if res := handshake(t, sp.ServerTLSConfig(), ccm(newCA)); res.serverErr != nil || res.clientErr != nil {
			t.Errorf("%s: the current CA's CCM is refused: server %v, client %v", step, res.serverErr, res.clientErr)
		}
	}
	refused("after the overlap")

	// Were a bundle naming the old CA installed (with a node certificate
	// the old CA issued for this speaker's key), it would still add no
	// trust.
	oldCert, err := oldCA.IssueFor(NodeIdentity("node-a"), sp.key.Public(), NodeCertLifetime, clk.Now())
	if err != nil {
		t.Fatal(err)
	}
	_ = sp.Install(oldCert, oldCA.CertPEM())
	refused("after a bundle of the old CA")
}
