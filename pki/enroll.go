package pki

import (
	"context"
	"errors"
	"fmt"
	"slices"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
)

const (
	// SpeakerAudience is the audience of the projected ServiceAccount token
	// a speaker enrolls with. The Kubernetes API accepts only tokens for
	// its own audiences, so this token is no credential there.
	SpeakerAudience = "ironlb.dev/speaker"
	// DefaultSpeakerServiceAccount is the speakers' ServiceAccount, in the
	// CCM's namespace.
	DefaultSpeakerServiceAccount = "ironlb-speaker"
	// nodeNameExtra is the TokenReview extra that names the node of the pod
	// a token is bound to (Kubernetes 1.30 and later).
	nodeNameExtra = "authentication.kubernetes.io/node-name"
	nodeUIDExtra  = "authentication.kubernetes.io/node-uid"
	podNameExtra  = "authentication.kubernetes.io/pod-name"
	podUIDExtra   = "authentication.kubernetes.io/pod-uid"
)

// EnrollmentRefusal is why an enrollment was refused; Reason is one of the
// Refusal constants, for metrics and tests.
type EnrollmentRefusal struct {
	Reason string
	Detail string
}

func (e *EnrollmentRefusal) Error() string {
	return fmt.Sprintf("enrollment refused (%s): %s", e.Reason, e.Detail)
}

// Reasons of an EnrollmentRefusal.
const (
	RefusalNoToken         = "NoToken"
	RefusalInvalidToken    = "InvalidToken"
	RefusalWrongAccount    = "WrongServiceAccount"
	RefusalWrongNode       = "WrongNode"
	RefusalNoNodeInToken   = "NoNodeInToken"
	RefusalTokenReviewFail = "TokenReviewFailed"
	// RefusalNoPodInToken: the token is bound to no pod.
	RefusalNoPodInToken = "NoPodInToken"
	// RefusalPodGone: the token's pod does not exist (any more), is
	// terminating or finished, or is another pod than the one the
	// certificate being renewed was issued for.
	RefusalPodGone = "PodGone"
	// RefusalNodeGone: the Node does not exist (any more).
	RefusalNodeGone = "NodeGone"
	// RefusalNotEnrolled: a renewal for a speaker without a valid node
	// certificate (it must enroll).
	RefusalNotEnrolled = "NotEnrolled"
)

// Transient reports whether a refusal may pass on its own (the API server
// could not be asked): the caller retries rather than giving up on the
// speaker.
func Transient(err error) bool {
	r := RefusalOf(err)
	return r == "" || r == RefusalTokenReviewFail
}

// RefusalOf returns the reason of an EnrollmentRefusal in err's chain, or
// "".
func RefusalOf(err error) string {
	var r *EnrollmentRefusal
	if errors.As(err, &r) {
		return r.Reason
	}
	return ""
}

// Enroll issues node's speaker a node certificate for the key it used in
// the handshake peer records, once token proves the speaker runs on node:
// a TokenReview must find token valid for SpeakerAudience, belonging to the
// speakers' ServiceAccount in the CCM's namespace, and bound to a pod on
// node that exists and may run, on a Node that exists (attest). The
// certificate names the pod and the Node by UID (Attestation): deleting
// either revokes it. This is how a speaker gets an identity without holding any
// credential the Kubernetes API accepts: the token's audience is IronLB's,
// and only the CCM, which dialled the node's address and can ask the API
// server, turns it into a certificate (SPIRE's k8s_psat attestor works the
// same way).
func (b *Bundle) Enroll(ctx context.Context, node string, peer *Peer, token string) (*Credentials, error) {
	if peer.Leaf() == nil {
		return nil, errors.New("ironlb pki: enroll: no handshake recorded")
	}
	a, err := b.attest(ctx, node, token)
	if err != nil {
		enrollments.WithLabelValues(RefusalOf(err)).Inc()
		return nil, err
	}
	creds, err := b.issueNode(node, peer.publicKey(), a)
	if err != nil {
		enrollments.WithLabelValues("IssueFailed").Inc()
		return nil, err
	}
	enrollments.WithLabelValues("Enrolled").Inc()
	klog.InfoS("ironlb pki: enrolled speaker", "node", node, "podUID", a.PodUID)
	return creds, nil
}

// Renew issues a new node certificate for the key of node's enrolled peer,
// once token proves again what enrollment proved (attest), for the same
// pod the current certificate was issued for: a key copied out of the
// speaker does not renew itself without the pod's current token. After a
// refusal (not one of the API server's failures) this CCM no longer takes
// the certificate of the stream's handshake, nor the newest one issued on
// the stream, as proof of the node (Check, and the next handshake, which
// then needs an enrollment). A certificate whose attestation is pending
// (AttestationPending: it names no pod) renews for any speaker pod the
// token proves on the node, as an enrollment would.
func (b *Bundle) Renew(ctx context.Context, node string, peer *Peer, token string) (*Credentials, error) {
	if !peer.Enrolled() {
		err := &EnrollmentRefusal{RefusalNotEnrolled, fmt.Sprintf("renew for node %q: the speaker is not enrolled", node)}
		renewals.WithLabelValues(err.Reason).Inc()
		return nil, err
	}
	was, attested := AttestationOf(peer.Current())
	a, err := b.attest(ctx, node, token)
	if err == nil && attested && a.PodUID != was.PodUID {
		err = &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("the token belongs to pod UID %s, the certificate to pod UID %s", a.PodUID, was.PodUID)}
	}
	if err != nil {
		renewals.WithLabelValues(RefusalOf(err)).Inc()
		if !Transient(err) {
			// Its next handshake must enroll, with a valid token, whichever
			// certificate it presents.
			leaf, issued := peer.certificates()
			b.distrust(leaf)
			b.distrust(issued)
		}
		return nil, err
	}
	creds, err := b.issueNode(node, peer.publicKey(), a)
	if err != nil {
		renewals.WithLabelValues("IssueFailed").Inc()
		return nil, err
	}
	cert, err := parseCertPEM(creds.CertPEM)
	if err != nil {
		renewals.WithLabelValues("IssueFailed").Inc()
		return nil, fmt.Errorf("ironlb pki: renew for node %q: %w", node, err)
	}
	peer.renewed(cert)
	renewals.WithLabelValues("Renewed").Inc()
	return creds, nil
}

// reviewToken checks token with a TokenReview and returns who it is.
func (b *Bundle) reviewToken(ctx context.Context, node, token string) (authenticationv1.UserInfo, error) {
	if token == "" {
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalNoToken, "the speaker sent no token (is the projected token volume mounted? see --token-file)"}
	}
	tr, err := b.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{SpeakerAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalTokenReviewFail, err.Error()}
	}
	st := tr.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, SpeakerAudience) {
		detail := st.Error
		if detail == "" {
			detail = "not authenticated for audience " + SpeakerAudience
		}
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalInvalidToken, detail}
	}
	if want := "system:serviceaccount:" + b.namespace + ":" + b.opts.speakerSA; st.User.Username != want {
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalWrongAccount, fmt.Sprintf("token of %q, want %q", st.User.Username, want)}
	}
	nodes := st.User.Extra[nodeNameExtra]
	if len(nodes) != 1 {
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalNoNodeInToken, fmt.Sprintf("the token is not bound to a pod on a node (extra %s: %v); the speaker must use a projected token (Kubernetes 1.30 or later)", nodeNameExtra, nodes)}
	}
	if nodes[0] != node {
		return authenticationv1.UserInfo{}, &EnrollmentRefusal{RefusalWrongNode, fmt.Sprintf("dialled node %q, but the token belongs to pod %v on node %q", node, st.User.Extra[podNameExtra], nodes[0])}
	}
	return st.User, nil
}
