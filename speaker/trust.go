package speaker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// errUntrusted ends a stream whose CCM certificate no longer verifies
// against the CAs the speaker trusts.
var errUntrusted = errors.New("the CCM certificate of this connection is no longer trusted")

// peerChain returns the certificates the client of ctx's connection
// presented in its TLS handshake, leaf first; nil without TLS.
func peerChain(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

// verifyStream checks the CCM certificate a stream was opened with against
// the CAs the speaker trusts now; a speaker without credentials (tests)
// checks nothing.
func (a *Agent) verifyStream(chain []*x509.Certificate) error {
	if a.creds == nil {
		return nil
	}
	if len(chain) == 0 {
		return fmt.Errorf("%w: the connection presented no certificate", errUntrusted)
	}
	if err := a.creds.VerifyCCM(chain); err != nil {
		return fmt.Errorf("%w: %w", errUntrusted, err)
	}
	return nil
}

// recheckTrust ends the open streams whose CCM certificate no longer
// verifies, once the trusted CAs changed (a bundle the CCM sent, a
// re-read mounted bundle): the TLS handshake checked them only against
// the CAs trusted when the connection opened, and whoever still holds
// the key of a removed CA must not keep its stream. Streams opened with a
// certificate of a CA still trusted stay.
func (a *Agent) recheckTrust() {
	if a.creds == nil {
		return
	}
	gen := a.creds.TrustGeneration() // may read the mounted bundle: not under a.mu
	a.mu.Lock()
	if gen == a.trustGen {
		a.mu.Unlock()
		return
	}
	a.trustGen = gen
	open := make(map[uint64]*streamState, len(a.streams))
	for id, s := range a.streams {
		open[id] = s
	}
	a.mu.Unlock()
	for id, s := range open {
		if err := a.verifyStream(s.chain); err != nil {
			a.log.Info("Closing a CCM stream: its certificate is no longer trusted", "stream", id, "subject", subjectOf(s.chain), "err", err.Error())
			s.cancel(err)
		}
	}
}

// subjectOf names the leaf of chain, for logs.
func subjectOf(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return ""
	}
	return chain[0].Subject.String()
}
