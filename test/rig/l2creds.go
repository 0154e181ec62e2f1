package rig

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/pki"
)

// speakerCredentials prepares what node n's speaker pod would have
// mounted, in dir: the CCM's CA bundle (ca.crt, from the ConfigMap
// ironlb-ca-bundle) and a projected ServiceAccount token for the audience
// pki.SpeakerAudience bound to a Pod of the speakers' ServiceAccount on n
// (token). The Pod is only an API object: the TokenReview the CCM makes
// names its node.
func (r *L2) speakerCredentials(ctx context.Context, n *L2Node, dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	token, err := r.SpeakerToken(ctx, n.Name, n.Name)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte(token), 0o600); err != nil {
		return err
	}
	var bundle string
	err = Eventually(60*time.Second, func() error {
		if r.CCM != nil && r.CCM.Exited() {
			return fmt.Errorf("%w: %s exited:\n%s", errStop, r.CCM.Name, r.CCM.Tail(20))
		}
		cm, err := r.CP.Client.CoreV1().ConfigMaps(r.opts.SecretNamespace).Get(ctx, pki.BundleConfigMapName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		bundle = cm.Data[pki.CACertKey]
		return nil
	})
	if err != nil {
		return fmt.Errorf("waiting for ConfigMap %s/%s from the CCM: %w", r.opts.SecretNamespace, pki.BundleConfigMapName, err)
	}
	return pki.WriteBundle(filepath.Join(dir, pki.CACertKey), []byte(bundle))
}

// SpeakerToken returns a token like the speaker pod on node gets: for the
// audience pki.SpeakerAudience, bound to a Pod named for pod, on node, of
// the speakers' ServiceAccount (both created if missing).
func (r *L2) SpeakerToken(ctx context.Context, pod, node string) (string, error) {
	return SpeakerToken(ctx, r.CP.Client, r.opts.SecretNamespace, pod, node)
}

// SpeakerToken returns a token like the speaker pod on node gets: for the
// audience pki.SpeakerAudience, bound to a Pod "ironlb-speaker-<pod>" on
// node in namespace ns, of the speakers' ServiceAccount (both created if
// missing). The Pod is only an API object and never runs: the TokenReview
// the CCM makes of the token names its node.
func SpeakerToken(ctx context.Context, client kubernetes.Interface, ns, pod, node string) (string, error) {
	cs := client.CoreV1()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pki.DefaultSpeakerServiceAccount, Namespace: ns}, AutomountServiceAccountToken: ptr.To(false)}
	if _, err := cs.ServiceAccounts(ns).Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", fmt.Errorf("creating ServiceAccount %s/%s: %w", ns, sa.Name, err)
	}
	name := "ironlb-speaker-" + pod
	p, err := cs.Pods(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		p, err = cs.Pods(ns).Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "ironlb-speaker"}},
			Spec: corev1.PodSpec{
				NodeName: node, ServiceAccountName: sa.Name, AutomountServiceAccountToken: ptr.To(false),
				Containers: []corev1.Container{{Name: "speaker", Image: "ironlb-speaker"}},
			},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return "", fmt.Errorf("speaker Pod %s/%s: %w", ns, name, err)
	}
	tr, err := cs.ServiceAccounts(ns).CreateToken(ctx, sa.Name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{pki.SpeakerAudience},
			ExpirationSeconds: ptr.To[int64](24 * 3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("requesting a token for Pod %s/%s: %w", ns, name, err)
	}
	return tr.Status.Token, nil
}
