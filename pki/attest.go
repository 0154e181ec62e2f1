package pki

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Attestation is what the CCM checked when it certified a speaker's key:
// the speaker's pod and its node, by UID. A node certificate carries it
// (a second URI SAN, attestationPrefix), so that any CCM replica can tell
// whether the pod and the Node it was issued for still exist: deleting
// either revokes the certificate.
type Attestation struct {
	PodUID  types.UID
	NodeUID types.UID
}

// attestationPrefix starts the URI SAN of an Attestation:
// urn:ironlb:pod:<pod UID>:node:<node UID>.
const attestationPrefix = "urn:ironlb:pod:"

// uidPattern is the grammar of a Kubernetes UID in an attestation: an RFC
// 4122 UUID as the API server makes them.
var uidPattern = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)

// URI returns the attestation as the URI SAN a node certificate carries.
func (a Attestation) URI() *url.URL {
	return &url.URL{Scheme: "urn", Opaque: "ironlb:pod:" + string(a.PodUID) + ":node:" + string(a.NodeUID)}
}

// parseAttestation parses the URI SAN of an attestation, strictly.
func parseAttestation(s string) (Attestation, error) {
	rest, ok := strings.CutPrefix(s, attestationPrefix)
	if !ok {
		return Attestation{}, fmt.Errorf("attestation %q does not start with %s", s, attestationPrefix)
	}
	pod, node, ok := strings.Cut(rest, ":node:")
	if !ok || !uidPattern.MatchString(pod) || !uidPattern.MatchString(node) {
		return Attestation{}, fmt.Errorf("attestation %q is not %s<pod UID>:node:<node UID>", s, attestationPrefix)
	}
	return Attestation{PodUID: types.UID(pod), NodeUID: types.UID(node)}, nil
}

// AttestationOf returns the attestation of a node certificate; false when
// it carries none (issued before attestations, or not a node certificate)
// or more than one.
func AttestationOf(cert *x509.Certificate) (Attestation, bool) {
	var (
		found Attestation
		n     int
	)
	for _, u := range cert.URIs {
		if u == nil || u.Scheme != "urn" || !strings.HasPrefix(u.String(), attestationPrefix) {
			continue
		}
		a, err := parseAttestation(u.String())
		if err != nil {
			return Attestation{}, false
		}
		found = a
		n++
	}
	return found, n == 1
}

// attest proves that token belongs to a speaker pod that runs on node
// now: a TokenReview (reviewToken), then the pod it is bound to, read from
// the API server, must exist with the token's pod UID, be scheduled on
// node, run as the speakers' ServiceAccount, not be terminating or
// finished; and the Node must exist (with the token's node UID when the
// API server names one). Enrollment and renewal both attest.
func (b *Bundle) attest(ctx context.Context, node, token string) (Attestation, error) {
	user, err := b.reviewToken(ctx, node, token)
	if err != nil {
		return Attestation{}, err
	}
	pods := user.Extra[podNameExtra]
	if len(pods) != 1 {
		return Attestation{}, &EnrollmentRefusal{RefusalNoPodInToken, fmt.Sprintf("the token is not bound to a pod (extra %s: %v)", podNameExtra, pods)}
	}
	pod, err := b.client.CoreV1().Pods(b.namespace).Get(ctx, pods[0], metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Attestation{}, &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("pod %s/%s of the token does not exist", b.namespace, pods[0])}
	}
	if err != nil {
		return Attestation{}, &EnrollmentRefusal{RefusalTokenReviewFail, fmt.Sprintf("reading pod %s/%s: %v", b.namespace, pods[0], err)}
	}
	if uids := user.Extra[podUIDExtra]; len(uids) > 0 && (len(uids) != 1 || types.UID(uids[0]) != pod.UID) {
		return Attestation{}, &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("the token is bound to pod UID %v, pod %s/%s is %s", uids, b.namespace, pod.Name, pod.UID)}
	}
	if err := b.checkPod(pod, node); err != nil {
		return Attestation{}, err
	}
	n, err := b.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Attestation{}, &EnrollmentRefusal{RefusalNodeGone, fmt.Sprintf("node %q does not exist", node)}
	}
	if err != nil {
		return Attestation{}, &EnrollmentRefusal{RefusalTokenReviewFail, fmt.Sprintf("reading node %q: %v", node, err)}
	}
	if uids := user.Extra[nodeUIDExtra]; len(uids) > 0 && (len(uids) != 1 || types.UID(uids[0]) != n.UID) {
		return Attestation{}, &EnrollmentRefusal{RefusalNodeGone, fmt.Sprintf("the token names node UID %v, node %q is %s", uids, node, n.UID)}
	}
	a := Attestation{PodUID: pod.UID, NodeUID: n.UID}
	if !uidPattern.MatchString(string(a.PodUID)) || !uidPattern.MatchString(string(a.NodeUID)) {
		return Attestation{}, &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("pod UID %q or node UID %q is not a UUID", a.PodUID, a.NodeUID)}
	}
	return a, nil
}

// checkPod checks that pod is a speaker pod on node that may still run.
func (b *Bundle) checkPod(pod *corev1.Pod, node string) error {
	ref := b.namespace + "/" + pod.Name
	switch {
	case pod.Spec.NodeName != node:
		return &EnrollmentRefusal{RefusalWrongNode, fmt.Sprintf("pod %s runs on node %q, not %q", ref, pod.Spec.NodeName, node)}
	case pod.Spec.ServiceAccountName != b.opts.speakerSA:
		return &EnrollmentRefusal{RefusalWrongAccount, fmt.Sprintf("pod %s runs as ServiceAccount %q, want %q", ref, pod.Spec.ServiceAccountName, b.opts.speakerSA)}
	case pod.DeletionTimestamp != nil:
		return &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("pod %s is terminating", ref)}
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return &EnrollmentRefusal{RefusalPodGone, fmt.Sprintf("pod %s has finished (%s)", ref, pod.Status.Phase)}
	}
	return nil
}
