// Package pkitest helps tests and benchmarks enroll speakers without a
// real API server.
package pkitest

import (
	"slices"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/ironlb/ironlb/pki"
)

// TokenReview is a reactor for a fake clientset's "create tokenreviews":
// it authenticates a token prefix+<node> with the speaker audience as the
// projected token of node's speaker pod (ironlb-speaker-<node>, of the
// default speaker ServiceAccount in kube-system), as kube-apiserver does
// for a token bound to a pod, and refuses any other token.
func TokenReview(prefix string) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview).DeepCopy()
		node, ok := strings.CutPrefix(tr.Spec.Token, prefix)
		if !ok || !slices.Contains(tr.Spec.Audiences, pki.SpeakerAudience) {
			tr.Status = authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}
			return true, tr, nil
		}
		tr.Status = authenticationv1.TokenReviewStatus{
			Authenticated: true, Audiences: []string{pki.SpeakerAudience},
			User: authenticationv1.UserInfo{
				Username: "system:serviceaccount:kube-system:" + pki.DefaultSpeakerServiceAccount,
				Extra: map[string]authenticationv1.ExtraValue{
					"authentication.kubernetes.io/node-name": {node},
					"authentication.kubernetes.io/pod-name":  {"ironlb-speaker-" + node},
				},
			},
		}
		return true, tr, nil
	}
}
