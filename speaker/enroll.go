package speaker

import (
	"crypto/x509"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// Credentials is the speaker's TLS identity as the agent needs it (see
// pki.NodeCredentials): the token it offers the CCM, and where the node
// certificate the CCM issues goes.
type Credentials interface {
	// EnrollmentToken returns the projected ServiceAccount token.
	EnrollmentToken() (string, error)
	// Install takes a node certificate and the CAs to trust.
	Install(certPEM, bundlePEM []byte) error
	// TrustBundle takes the CAs the CCM trusts now, without a
	// certificate: they replace the bundle sent before.
	TrustBundle(bundlePEM []byte) error
	// VerifyCCM checks the certificates a CCM presented when its
	// connection opened against the CAs trusted now.
	VerifyCCM(certs []*x509.Certificate) error
	// TrustGeneration changes whenever the trusted CAs may have changed.
	TrustGeneration() uint64
}

// WithCredentials lets the agent enroll: the first report of every stream
// (which only an authenticated CCM opens) carries its token, and
// Certificate instructions install a node certificate.
func WithCredentials(c Credentials) Option { return func(a *Agent) { a.creds = c } }

// enrollment is what the first report of a stream offers the CCM.
func (a *Agent) enrollment() *speakerv1.Enrollment {
	if a.creds == nil {
		return nil
	}
	token, err := a.creds.EnrollmentToken()
	if err != nil {
		a.log.Error(err, "No enrollment token to offer; a CCM that does not trust this speaker's certificate will refuse it")
		return nil
	}
	return &speakerv1.Enrollment{Token: token}
}

// installCertificate applies a Certificate instruction. A certificate that
// does not fit (another key, another node, no CA) is logged and ignored:
// the speaker keeps the one it has. One without certificate_pem carries
// only the CAs the CCM trusts now.
func (a *Agent) installCertificate(c *speakerv1.Certificate) {
	if a.creds == nil {
		a.log.Info("Ignoring a node certificate: this speaker has no credentials to install it in")
		return
	}
	if len(c.GetCertificatePem()) == 0 {
		if err := a.creds.TrustBundle(c.GetCaBundlePem()); err != nil {
			instructionsTotal.WithLabelValues("certificate", "refused").Inc()
			a.log.Error(err, "Refusing the CA bundle the CCM sent")
			return
		}
		instructionsTotal.WithLabelValues("certificate", "applied").Inc()
		return
	}
	if err := a.creds.Install(c.GetCertificatePem(), c.GetCaBundlePem()); err != nil {
		instructionsTotal.WithLabelValues("certificate", "refused").Inc()
		a.log.Error(err, "Refusing the node certificate the CCM sent")
		return
	}
	instructionsTotal.WithLabelValues("certificate", "applied").Inc()
}
