package pki

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
)

// The Secrets and the ConfigMap the bundle reads and writes in its
// namespace.

// ensureCA returns the CA stored in the CA Secret, creating the Secret if
// it does not exist. It never overwrites an existing Secret.
func (b *Bundle) ensureCA(ctx context.Context, now time.Time) (*CA, error) {
	secrets := b.client.CoreV1().Secrets(b.namespace)
	s, err := secrets.Get(ctx, CASecretName, metav1.GetOptions{})
	if err == nil {
		return b.caFromSecret(s, now)
	}
	if !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("get secret %s/%s: %w", b.namespace, CASecretName, err)
	}

	ca, err := NewCA(now)
	if err != nil {
		return nil, err
	}
	s = &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: b.namespace, Labels: managedLabels},
		Type:       corev1.SecretTypeOpaque,
		Immutable:  ptr.To(true),
		Data:       map[string][]byte{CACertKey: ca.CertPEM(), CAKeyKey: ca.KeyPEM()},
	}
	_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
	switch {
	case err == nil:
		klog.InfoS("ironlb pki: created CA", "secret", klog.KRef(b.namespace, CASecretName), "notAfter", ca.cert.NotAfter)
		return ca, nil
	case apierrors.IsAlreadyExists(err):
		// Another replica won the race; use its CA.
		s, err = secrets.Get(ctx, CASecretName, metav1.GetOptions{})
		if err != nil {
			return nil, fmt.Errorf("get secret %s/%s after losing create race: %w", b.namespace, CASecretName, err)
		}
		return b.caFromSecret(s, now)
	default:
		return nil, fmt.Errorf("create secret %s/%s: %w", b.namespace, CASecretName, err)
	}
}

func (b *Bundle) caFromSecret(s *corev1.Secret, now time.Time) (*CA, error) {
	ca, err := parseCA(s.Data[CACertKey], s.Data[CAKeyKey], now)
	if err != nil {
		err = fmt.Errorf("CA secret %s/%s is invalid and will not be replaced (repair it, or delete it to generate a new CA): %w", b.namespace, s.Name, err)
		if b.opts.recorder != nil {
			b.opts.recorder.Event(s, corev1.EventTypeWarning, ReasonInvalidCA, err.Error())
		}
		return nil, err
	}
	if left := ca.cert.NotAfter.Sub(now); left < DefaultLeafLifetime {
		klog.InfoS("ironlb pki: WARNING: CA expires soon; rotate it", "secret", klog.KRef(b.namespace, s.Name), "notAfter", ca.cert.NotAfter)
	}
	return ca, nil
}

// previousCA reads the CA being rotated out, if there is one. One that
// cannot be used is reported and not trusted.
func (b *Bundle) previousCA(ctx context.Context, now time.Time) *CA {
	s, err := b.client.CoreV1().Secrets(b.namespace).Get(ctx, PreviousCASecretName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		klog.ErrorS(err, "ironlb pki: reading the previous CA; not trusting it", "secret", klog.KRef(b.namespace, PreviousCASecretName))
		return nil
	}
	ca, err := b.caFromSecret(s, now)
	if err != nil {
		klog.ErrorS(err, "ironlb pki: not trusting the previous CA")
		return nil
	}
	return ca
}

// publishBundle writes the trusted CAs into the speakers' ConfigMap.
func (b *Bundle) publishBundle(ctx context.Context, pemData []byte) error {
	cms := b.client.CoreV1().ConfigMaps(b.namespace)
	cm, err := cms.Get(ctx, BundleConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = cms.Create(ctx, &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: BundleConfigMapName, Namespace: b.namespace, Labels: managedLabels},
			Data:       map[string]string{CACertKey: string(pemData)},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil // another replica; the next sync checks its content
		}
		return err
	}
	if err != nil {
		return err
	}
	if cm.Data[CACertKey] == string(pemData) {
		return nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[CACertKey] = string(pemData)
	_, err = cms.Update(ctx, cm, metav1.UpdateOptions{})
	if err == nil {
		klog.InfoS("ironlb pki: published the CA bundle", "configMap", klog.KRef(b.namespace, BundleConfigMapName))
	}
	return err
}

// deleteLegacySecret removes the key all speakers used to share.
func (b *Bundle) deleteLegacySecret(ctx context.Context) {
	err := b.client.CoreV1().Secrets(b.namespace).Delete(ctx, legacySpeakerSecretName, metav1.DeleteOptions{})
	if err == nil {
		klog.InfoS("ironlb pki: deleted the shared speaker key of older versions", "secret", klog.KRef(b.namespace, legacySpeakerSecretName))
	}
}

// watchSecrets pokes Run when a CA Secret is created, replaced or deleted,
// so that a rotation takes effect at once. It watches each CA Secret by
// name (a field selector on metadata.name, which RBAC authorizes against
// resourceNames), so the CCM never receives another Secret here; without
// the permission Run still re-reads the Secrets every resync interval.
func (b *Bundle) watchSecrets(ctx context.Context, poke chan<- struct{}) {
	for _, name := range []string{CASecretName, PreviousCASecretName} {
		go b.watchSecret(ctx, name, poke)
	}
}

// watchSecret pokes Run on every change of the Secret name until ctx ends.
func (b *Bundle) watchSecret(ctx context.Context, name string, poke chan<- struct{}) {
	opts := metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", name).String()}
	for ctx.Err() == nil {
		w, err := b.client.CoreV1().Secrets(b.namespace).Watch(ctx, opts)
		if err != nil {
			klog.V(2).InfoS("ironlb pki: cannot watch a CA Secret; re-reading it every resync interval", "secret", klog.KRef(b.namespace, name), "err", err.Error())
			select {
			case <-ctx.Done():
				return
			case <-time.After(retryInterval):
			}
			continue
		}
		for ev := range w.ResultChan() {
			s, ok := ev.Object.(*corev1.Secret)
			if !ok || s.Name != name || ev.Type == watch.Bookmark {
				continue
			}
			select {
			case poke <- struct{}{}:
			default:
			}
		}
		w.Stop()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
