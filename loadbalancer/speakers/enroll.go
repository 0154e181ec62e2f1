package speakers

import (
	"context"
	"errors"
	"fmt"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
)

// errEnrolled ends a stream on which the speaker got its node certificate:
// the session reconnects at once, and the new handshake authenticates the
// speaker as its node.
var errEnrolled = errors.New("speaker enrolled; reconnecting with its node certificate")

// renewalRetry is how soon a renewal is sent again while the stream the
// certificate went out on lasts (the new certificate is used from the next
// handshake; a stream may last days).
const renewalRetry = 12 * time.Hour

// enroll handles a stream whose speaker did not present a node certificate
// for this node. Nothing it reports is recorded: its token, checked by the
// CCM, must show that it runs on the node dialled; then it is sent a node
// certificate for the key of its handshake, and the session reconnects.
func (s *session) enroll(ctx context.Context, stream speakerv1.Speaker_SyncClient, first *speakerv1.Report, peer *pki.Peer, addr string, wd *watchdog) error {
	creds, err := s.m.opts.Identity.Enroll(ctx, s.node, peer, first.GetEnrollment().GetToken())
	wd.seen() // the TokenReview's time is not the speaker's silence
	if err != nil {
		s.log.Info("Refusing the speaker: it has no node certificate and its enrollment failed", "address", addr, "reason", pki.RefusalOf(err), "err", err.Error())
		return fmt.Errorf("speaker at %s is not authenticated as node %s: %w", addr, s.node, err)
	}
	in := &speakerv1.Instruction{Kind: &speakerv1.Instruction_Certificate{Certificate: &speakerv1.Certificate{CertificatePem: creds.CertPEM, CaBundlePem: creds.BundlePEM}}}
	if err := stream.Send(in); err != nil {
		return cause(ctx, fmt.Errorf("sending the node certificate to %s: %w", addr, err))
	}
	// The speaker answers once it installed the certificate.
	if _, err := stream.Recv(); err != nil {
		return cause(ctx, fmt.Errorf("waiting for %s to take its node certificate: %w", addr, err))
	}
	s.log.Info("Speaker enrolled", "address", addr)
	return errEnrolled
}

// attestPending renews, at once and on the open stream, the node
// certificate of a speaker whose attestation is pending
// (pki.Peer.AttestationPending: it was issued by an older CCM, or this
// CCM has not listed the speaker pods yet), with the token of its first
// report: the proof an enrollment takes. The stream goes on, so an
// upgrade or a new leader reconnects no speaker. A refusal ends the
// stream (the speaker must enroll); when the API server cannot be asked,
// the stream goes on and its renewal retries (the certificate is from a
// CA the CCM trusts, for this node).
func (s *session) attestPending(ctx context.Context, stream speakerv1.Speaker_SyncClient, first *speakerv1.Report, peer *pki.Peer, addr string, wd *watchdog) error {
	creds, err := s.m.opts.Identity.Renew(ctx, s.node, peer, first.GetEnrollment().GetToken())
	wd.seen() // the TokenReview's time is not the speaker's silence
	if err != nil {
		if pki.Transient(err) {
			s.log.Error(err, "Cannot attest the speaker's node certificate now; keeping its stream and retrying", "address", addr, "in", renewRetry)
			return nil
		}
		s.log.Info("Refusing the speaker: its node certificate could not be attested", "address", addr, "reason", pki.RefusalOf(err), "err", err.Error())
		return fmt.Errorf("speaker at %s did not prove it runs on node %s: %w", addr, s.node, err)
	}
	s.log.Info("Attested the speaker's node certificate on its stream; sending it a new one", "address", addr)
	in := &speakerv1.Instruction{Kind: &speakerv1.Instruction_Certificate{Certificate: &speakerv1.Certificate{CertificatePem: creds.CertPEM, CaBundlePem: creds.BundlePEM}}}
	if err := stream.Send(in); err != nil {
		return cause(ctx, fmt.Errorf("sending the attested node certificate to %s: %w", addr, err))
	}
	return nil
}
