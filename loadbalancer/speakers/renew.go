package speakers

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
)

// errReattest ends the stream of a speaker without the "reattest"
// capability whose node certificate is due: the session reconnects at
// once without declaring the speaker lost, and the first report of the
// new stream brings the current token the renewal needs.
var errReattest = errors.New("reconnecting for the speaker's current token to renew its node certificate")

// errExpired ends the stream of a speaker whose node certificate expired
// (it never answered the CCM's Attest, or its renewals failed): the
// session reconnects at once without declaring the speaker lost, and the
// new stream enrolls it with the token of its first report; only if that
// fails is it lost.
var errExpired = errors.New("the speaker's node certificate expired; reconnecting for it to enroll again")

// freshToken is how long the token of a stream's first report is taken as
// current for a renewal (projected tokens live an hour or more).
const freshToken = 5 * time.Minute

// renewRetry is how soon a renewal that failed for want of the API server
// is tried again, and how soon an Attest the speaker did not answer is
// sent again (a variable for tests).
var renewRetry = time.Minute

// renewal keeps one authenticated stream's node certificate current and
// its CA bundle in step with the CCM's, and ends the stream once the
// speaker's identity no longer holds: its pod or Node is gone (revoked),
// its renewal was refused, or its certificate expired. It is used by the
// stream's sender goroutine only; the receiver hands it tokens.
type renewal struct {
	s          *session
	peer       *pki.Peer
	caps       []string
	firstToken string
	opened     time.Time

	due     *time.Timer // the certificate is due for renewal
	expiry  *time.Timer // the certificate expires
	rotated <-chan struct{}
	revoked <-chan struct{}
	tokens  chan string // answers to Attest, from the receiver
	results chan renewed
	busy    bool // a renewal (or an Attest) is under way
	asked   bool // an Attest is unanswered: the next token is its answer
}

type renewed struct {
	creds *pki.Credentials
	err   error
}

func (s *session) newRenewal(peer *pki.Peer, first *speakerv1.Report) *renewal {
	id := s.m.opts.Identity
	r := &renewal{
		s: s, peer: peer, caps: speakerv1.CapabilitiesOf(first), firstToken: first.GetEnrollment().GetToken(), opened: time.Now(),
		due:     time.NewTimer(time.Until(id.RenewalDue(peer))),
		expiry:  time.NewTimer(time.Until(peer.Current().NotAfter)),
		rotated: id.Changed(),
		revoked: id.Revoked(),
		tokens:  make(chan string, 1),
		results: make(chan renewed, 1),
	}
	return r
}

func (r *renewal) stop() {
	r.due.Stop()
	r.expiry.Stop()
}

func (r *renewal) has(c string) bool { return slices.Contains(r.caps, c) }

// offerToken passes the token of an Attest's answer (from the receiver).
func (r *renewal) offerToken(token string) {
	select {
	case r.tokens <- token:
	default:
	}
}

// onRotated handles a change of the CAs: the speaker gets the new bundle
// at once (a removed CA ends being trusted), and its certificate is due
// at once if the current CA did not issue it.
func (r *renewal) onRotated() *speakerv1.Instruction {
	id := r.s.m.opts.Identity
	r.rotated = id.Changed()
	if !r.busy {
		r.due.Reset(time.Until(id.RenewalDue(r.peer)))
	}
	return r.bundle()
}

// bundle is the instruction that sends the speaker the CAs the CCM trusts
// now (a removed CA ends being trusted), nil for a speaker that cannot
// take it. A new stream starts with it, after the snapshot: a speaker
// that was not connected when the CAs changed, or restarted since, must
// not keep trusting a CA removed meanwhile until its next renewal.
func (r *renewal) bundle() *speakerv1.Instruction {
	if !r.has(speakerv1.CapabilityTrustBundle) {
		return nil
	}
	r.s.log.V(2).Info("Sending the speaker the CAs the CCM trusts now")
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Certificate{Certificate: &speakerv1.Certificate{CaBundlePem: r.s.m.opts.Identity.BundlePEM()}}}
}

// onRevoked checks the speaker's identity again after a pod or a Node was
// deleted; an error ends the stream. When the Node is gone, its speaker is
// first told to withdraw every VIP (RemoveNode drains the session, then
// closes it, as for any deleted Node): otherwise a speaker cut off at once
// would go on answering for VIPs that move to other nodes (invariant 4).
// A withdrawal carries nothing secret, and the drain is bounded by
// drainTimeout.
func (r *renewal) onRevoked() error {
	r.revoked = r.s.m.opts.Identity.Revoked()
	err := r.s.m.opts.Identity.Check(r.s.node, r.peer)
	if err == nil {
		return nil
	}
	if rv, ok := err.(*pki.Revocation); ok && rv.Reason == pki.RevokedNodeGone {
		r.s.m.RemoveNode(r.s.node)
		return nil
	}
	return fmt.Errorf("closing the stream: %w", err)
}

// onDue starts a renewal: it asks a speaker that can for its current
// token, renews with the first report's token while that is fresh, and
// otherwise reconnects for a fresh one (errReattest).
func (r *renewal) onDue(ctx context.Context) (*speakerv1.Instruction, error) {
	switch {
	case r.busy:
		// The speaker did not answer the Attest (or the renewal hangs):
		// ask again soon, while the certificate is valid, once the
		// renewal in flight, if any, came back.
		if r.asked {
			r.due.Reset(renewRetry)
			return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Attest{Attest: &speakerv1.Attest{}}}, nil
		}
		r.due.Reset(renewRetry)
		return nil, nil
	case r.has(speakerv1.CapabilityReattest):
		r.busy, r.asked = true, true
		r.due.Reset(renewRetry) // in case the speaker does not answer
		return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Attest{Attest: &speakerv1.Attest{}}}, nil
	case time.Since(r.opened) < freshToken:
		r.start(ctx, r.firstToken)
		return nil, nil
	default:
		return nil, errReattest
	}
}

// onToken renews with the token the speaker sent in answer to an Attest;
// a token it was not asked for starts nothing (a speaker cannot make the
// CCM call the API server at its own rate).
func (r *renewal) onToken(ctx context.Context, token string) {
	if !r.asked {
		r.s.log.V(2).Info("Ignoring an enrollment token the speaker was not asked for")
		return
	}
	r.asked = false
	r.start(ctx, token)
}

// start renews in the background: the TokenReview and the reads of the
// pod and the Node must not hold up heartbeats.
func (r *renewal) start(ctx context.Context, token string) {
	r.busy = true
	r.due.Reset(renewalRetry)
	go func() {
		creds, err := r.s.m.opts.Identity.Renew(ctx, r.s.node, r.peer, token)
		r.results <- renewed{creds, err}
	}()
}

// onResult sends the renewed certificate, retries a renewal the API
// server could not decide, and ends the stream of a speaker that failed
// to prove its node again.
func (r *renewal) onResult(res renewed) (*speakerv1.Instruction, error) {
	r.busy = false
	if res.err != nil {
		if pki.Transient(res.err) {
			r.s.log.Error(res.err, "Cannot renew the speaker's node certificate now; retrying", "in", renewRetry)
			r.due.Reset(renewRetry)
			return nil, nil
		}
		r.s.log.Info("Refusing to renew the speaker's node certificate; closing its stream", "reason", pki.RefusalOf(res.err), "err", res.err.Error())
		return nil, fmt.Errorf("renewal of the node certificate refused: %w", res.err)
	}
	r.s.log.V(2).Info("Renewing the speaker's node certificate")
	r.due.Reset(renewalRetry) // until the speaker reconnects with the new one, in case it refused it
	if blk, _ := pem.Decode(res.creds.CertPEM); blk != nil {
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			r.expiry.Reset(time.Until(c.NotAfter)) // the speaker proved its node again
		}
	}
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Certificate{Certificate: &speakerv1.Certificate{CertificatePem: res.creds.CertPEM, CaBundlePem: res.creds.BundlePEM}}}, nil
}

// onExpired ends the stream once the certificate that proves the
// speaker's node on it expired: the session reconnects at once, without
// declaring the speaker lost, and the speaker must enroll (errExpired).
func (r *renewal) onExpired() error {
	r.s.log.Info("The speaker's node certificate expired; reconnecting for it to enroll again", "notAfter", r.peer.Current().NotAfter.UTC().Format(time.RFC3339))
	return fmt.Errorf("node certificate expired at %s: %w", r.peer.Current().NotAfter.UTC().Format(time.RFC3339), errExpired)
}
