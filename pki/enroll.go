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
	podNameExtra  = "authentication.kubernetes.io/pod-name"
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
)

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
// node. This is how a speaker gets an identity without holding any
// credential the Kubernetes API accepts: the token's audience is IronLB's,
// and only the CCM, which dialled the node's address and can ask the API
// server, turns it into a certificate (SPIRE's k8s_psat attestor works the
// same way).
func (b *Bundle) Enroll(ctx context.Context, node string, peer *Peer, token string) (*Credentials, error) {
	if peer.Leaf() == nil {
		return nil, errors.New("ironlb pki: enroll: no handshake recorded")
	}
	if err := b.reviewToken(ctx, node, token); err != nil {
		enrollments.WithLabelValues(RefusalOf(err)).Inc()
		return nil, err
	}
	creds, err := b.issueNode(node, peer.publicKey())
	if err != nil {
		enrollments.WithLabelValues("IssueFailed").Inc()
		return nil, err
	}
	enrollments.WithLabelValues("Enrolled").Inc()
	klog.InfoS("ironlb pki: enrolled speaker", "node", node)
	return creds, nil
}

func (b *Bundle) reviewToken(ctx context.Context, node, token string) error {
	if token == "" {
		return &EnrollmentRefusal{RefusalNoToken, "the speaker sent no token (is the projected token volume mounted? see --token-file)"}
	}
	tr, err := b.client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{
		Spec: authenticationv1.TokenReviewSpec{Token: token, Audiences: []string{SpeakerAudience}},
	}, metav1.CreateOptions{})
	if err != nil {
		return &EnrollmentRefusal{RefusalTokenReviewFail, err.Error()}
	}
	st := tr.Status
	if !st.Authenticated || !slices.Contains(st.Audiences, SpeakerAudience) {
		detail := st.Error
		if detail == "" {
			detail = "not authenticated for audience " + SpeakerAudience
		}
		return &EnrollmentRefusal{RefusalInvalidToken, detail}
	}
	if want := "system:serviceaccount:" + b.namespace + ":" + b.opts.speakerSA; st.User.Username != want {
		return &EnrollmentRefusal{RefusalWrongAccount, fmt.Sprintf("token of %q, want %q", st.User.Username, want)}
	}
	nodes := st.User.Extra[nodeNameExtra]
	if len(nodes) != 1 {
		return &EnrollmentRefusal{RefusalNoNodeInToken, fmt.Sprintf("the token is not bound to a pod on a node (extra %s: %v); the speaker must use a projected token (Kubernetes 1.30 or later)", nodeNameExtra, nodes)}
	}
	if nodes[0] != node {
		return &EnrollmentRefusal{RefusalWrongNode, fmt.Sprintf("dialled node %q, but the token belongs to pod %v on node %q", node, st.User.Extra[podNameExtra], nodes[0])}
	}
	return nil
}
