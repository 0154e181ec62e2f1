package pki

import (
	"bytes"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"time"
)

// enrollIdentityPrefix starts the URI SAN of the self-signed certificate a
// speaker presents until it has a node certificate (for logs only).
const enrollIdentityPrefix = "spiffe://ironlb.dev/enroll/"

// ErrWrongNode is returned (wrapped) by the handshake with a speaker whose
// certificate, issued by a trusted CA, names another node than the one
// dialled.
var ErrWrongNode = errors.New("speaker certificate names another node")

// Peer is what the TLS handshake of one connection learned of the speaker:
// enrolled, with a node certificate for the node dialled, or not yet
// enrolled, with only its public key. It is safe for concurrent use.
type Peer struct {
	mu       sync.Mutex
	enrolled bool
	pending  bool // enrolled, but the certificate must be attested on the stream first
	leaf     *x509.Certificate
	issued   *x509.Certificate // the newest certificate Renew issued on this stream
	pub      crypto.PublicKey
}

// AttestationPending reports whether the speaker presented a valid node
// certificate for the node dialled that the CCM cannot check yet: it
// names no pod (an older CCM issued it: an upgrade), or the CCM has not
// listed the speaker pods and Nodes yet. The stream is kept, and must
// renew the certificate at once with the token of the speaker's first
// report (the proof enrollment takes), before anything the speaker says
// is taken in. It is false once a renewal on this stream succeeded.
func (p *Peer) AttestationPending() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pending
}

// Current is the certificate that proves the speaker's node on this
// stream: the newest one issued on it (Renew), else the handshake's.
func (p *Peer) Current() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.issued != nil {
		return p.issued
	}
	return p.leaf
}

// certificates are the handshake's certificate and the newest one issued
// on this stream (nil if none).
func (p *Peer) certificates() (leaf, issued *x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaf, p.issued
}

// renewed records the certificate Renew issued on this stream.
func (p *Peer) renewed(cert *x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.issued, p.pending = cert, false
}

// Enrolled reports whether the speaker presented a valid node certificate
// for the node dialled; false before the handshake.
func (p *Peer) Enrolled() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.enrolled
}

// Leaf returns the speaker's certificate (self-signed when not enrolled).
func (p *Peer) Leaf() *x509.Certificate {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.leaf
}

func (p *Peer) set(enrolled bool, leaf *x509.Certificate) {
	p.setPending(enrolled, false, leaf)
}

func (p *Peer) setPending(enrolled, pending bool, leaf *x509.Certificate) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.enrolled, p.pending, p.leaf, p.pub = enrolled, pending, leaf, leaf.PublicKey
}

func (p *Peer) publicKey() crypto.PublicKey {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pub
}

// ClientTLSConfig returns the TLS configuration for one connection of the
// CCM to node's speaker; peer learns the outcome of its handshake. It
// requires TLS 1.3 and presents the CCM certificate from a CA the speaker
// trusts (current first). It accepts a server whose certificate chains to
// a trusted CA, is valid for server authentication and names node
// (NodeIdentity); a certificate from a trusted CA that names another node
// fails the handshake (ErrWrongNode). A speaker without a node certificate
// presents a self-signed one: the handshake succeeds, peer says it is not
// enrolled, and the connection may only carry an enrollment (Enroll).
func (b *Bundle) ClientTLSConfig(node string, peer *Peer) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification checks a hostname, which speaker
		// certificates deliberately do not carry; VerifyConnection checks
		// the chain and the node instead.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(cri *tls.CertificateRequestInfo) (*tls.Certificate, error) {
			certs := b.state.Load().certs
			if len(certs) == 0 {
				return nil, fmt.Errorf("ironlb pki: no CCM certificate: %s", b.Problem())
			}
			for _, c := range certs {
				if cri.SupportsCertificate(c) == nil {
					return c, nil
				}
			}
			return certs[0], nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return b.verifySpeaker(node, cs.PeerCertificates, peer)
		},
	}
}

// verifySpeaker checks the certificates node's speaker presented.
func (b *Bundle) verifySpeaker(node string, certs []*x509.Certificate, peer *Peer) error {
	if len(certs) == 0 {
		return errors.New("ironlb pki: speaker presented no certificate")
	}
	st := b.state.Load()
	if st.pool == nil {
		return fmt.Errorf("ironlb pki: no trusted CA: %s", st.problem)
	}
	leaf := certs[0]
	want := NodeIdentity(node)
	err := verifyPeer(certs, st.pool, x509.ExtKeyUsageServerAuth, want, b.opts.now())
	if err == nil {
		if err := b.checkLive(node, leaf); err != nil {
			if r, ok := err.(*Revocation); ok && (r.Reason == RevokedNotAttested || r.Reason == RevokedUnknown) {
				// Issued by an older CCM, or the pods and Nodes are not
				// listed yet: keep the stream (an upgrade or a new
				// leader must not reconnect every speaker), which renews
				// the certificate at once with the token of the first
				// report (AttestationPending).
				peer.setPending(true, true, leaf)
				return nil
			}
			// Its pod or Node is gone, or its renewal was refused: the
			// speaker must prove its node again with a current token,
			// as at enrollment.
			revoked(node, err)
			peer.set(false, leaf)
			return nil
		}
		peer.set(true, leaf)
		return nil
	}
	if chainsTo(certs, st.pool, b.opts.now()) {
		if got := NodeOf(IdentityOf(leaf)); got != "" && got != node {
			return fmt.Errorf("ironlb pki: dialled node %q: %w %q", node, ErrWrongNode, got)
		}
		return err
	}
	// Self-signed (a speaker not enrolled yet), or from a CA no longer
	// trusted: the handshake proved only that the speaker holds the key,
	// and the stream may carry nothing but an enrollment.
	peer.set(false, leaf)
	return nil
}

// chainsTo reports whether certs chain to roots, whatever their use.
func chainsTo(certs []*x509.Certificate, roots *x509.CertPool, now time.Time) bool {
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err == nil
}

// Credentials is a node certificate for a speaker, with the CAs to trust.
type Credentials struct {
	CertPEM, BundlePEM []byte
}

// RenewalDue returns when the node certificate of an enrolled peer should
// be replaced: after two thirds of its lifetime, or now if the current CA
// did not issue it (a rotation) or its attestation is pending.
func (b *Bundle) RenewalDue(peer *Peer) time.Time {
	if peer.AttestationPending() {
		return b.opts.now()
	}
	leaf := peer.Current()
	st := b.state.Load()
	if leaf == nil || st.current == nil {
		return time.Time{}
	}
	if leaf.CheckSignatureFrom(st.current.cert) != nil {
		return b.opts.now()
	}
	return renewAt(leaf)
}

func (b *Bundle) issueNode(node string, pub crypto.PublicKey, a Attestation) (*Credentials, error) {
	st := b.state.Load()
	if st.current == nil {
		return nil, fmt.Errorf("ironlb pki: no CA to issue from: %s", st.problem)
	}
	certPEM, err := st.current.issueFor(NodeIdentity(node), pub, b.opts.nodeLifetime, b.opts.now(), []*url.URL{a.URI()})
	if err != nil {
		return nil, err
	}
	return &Credentials{CertPEM: certPEM, BundlePEM: bytes.Clone(st.bundlePEM)}, nil
}
