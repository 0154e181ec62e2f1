package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
)

const (
	// CASecretName is the Opaque Secret, in the CCM's namespace, holding the
	// CA certificate (CACertKey) and private key (CAKeyKey).
	CASecretName = "ironlb-ca"
	// SpeakerSecretName is the kubernetes.io/tls Secret, in the CCM's
	// namespace, holding the speakers' certificate (TLSCertKey), key
	// (TLSKeyKey) and the CA certificate (CACertKey). The speaker DaemonSet
	// mounts it as a volume.
	SpeakerSecretName = "ironlb-speaker-tls"

	// CACertKey is the Secret key and file name of the PEM CA certificate.
	CACertKey = "ca.crt"
	// CAKeyKey is the Secret key of the PEM CA private key.
	CAKeyKey = "ca.key"
	// TLSCertKey is the Secret key and file name of the PEM leaf certificate.
	TLSCertKey = corev1.TLSCertKey
	// TLSKeyKey is the Secret key and file name of the PEM leaf private key.
	TLSKeyKey = corev1.TLSPrivateKeyKey

	// DefaultResyncInterval is how often Bundle.Run re-checks the Secrets
	// when no renewal is due earlier.
	DefaultResyncInterval = time.Hour

	// maxWriteAttempts bounds the optimistic-concurrency retries when
	// writing the speaker Secret.
	maxWriteAttempts = 5
	// retryInterval is how soon Run retries after a failed sync.
	retryInterval = time.Minute
)

var managedLabels = map[string]string{"app.kubernetes.io/managed-by": "ironlb"}

// Option configures Bootstrap.
type Option func(*options)

type options struct {
	now          func() time.Time
	leafLifetime time.Duration
	resync       time.Duration
}

// WithClock sets the clock used for issuing and validating certificates.
// It is intended for tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithLeafLifetime sets the lifetime of issued leaf certificates (speaker
// and CCM). Values <= 0 select DefaultLeafLifetime.
func WithLeafLifetime(d time.Duration) Option {
	return func(o *options) { o.leafLifetime = d }
}

// WithResyncInterval sets how often Bundle.Run re-checks the Secrets when
// no renewal is due earlier. Values <= 0 select DefaultResyncInterval.
func WithResyncInterval(d time.Duration) Option {
	return func(o *options) { o.resync = d }
}

// Bundle holds the CCM side of the mutual TLS setup: the trusted CA and the
// CCM's in-memory client certificate. It is safe for concurrent use; the
// certificate returned by ClientTLSConfig rotates as Run renews it.
type Bundle struct {
	client    kubernetes.Interface
	namespace string
	opts      options

	syncMu sync.Mutex // serializes Sync
	state  atomic.Pointer[bundleState]
}

type bundleState struct {
	ca             *CA
	pool           *x509.CertPool
	cert           *tls.Certificate // CCM client certificate, Leaf populated
	ccmRenewAt     time.Time
	speakerRenewAt time.Time
}

// Bootstrap ensures the CA Secret and the speaker Secret exist in namespace
// and issues the CCM's client certificate in memory.
//
// The CA Secret is created if missing; creation is race-safe (when another
// CCM replica wins, its CA is used) and an existing CA Secret is never
// overwritten: if it cannot be parsed Bootstrap returns an error naming the
// Secret and the offending key. The speaker Secret is (re)issued when it is
// missing, unparsable, not signed by the CA or within the last third of its
// lifetime; updates use optimistic concurrency.
func Bootstrap(ctx context.Context, client kubernetes.Interface, namespace string, opts ...Option) (*Bundle, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.leafLifetime <= 0 {
		o.leafLifetime = DefaultLeafLifetime
	}
	if o.resync <= 0 {
		o.resync = DefaultResyncInterval
	}
	if client == nil {
		return nil, errors.New("ironlb pki: bootstrap: nil Kubernetes client")
	}
	if namespace == "" {
		return nil, errors.New("ironlb pki: bootstrap: empty namespace")
	}
	b := &Bundle{client: client, namespace: namespace, opts: o}
	if err := b.Sync(ctx); err != nil {
		return nil, fmt.Errorf("ironlb pki: bootstrap: %w", err)
	}
	return b, nil
}

// CA returns the CA currently trusted by the bundle.
func (b *Bundle) CA() *CA { return b.state.Load().ca }

// Certificate returns the CCM's current client certificate.
func (b *Bundle) Certificate() *tls.Certificate { return b.state.Load().cert }

// ClientTLSConfig returns the TLS configuration for the CCM's gRPC client.
// It requires TLS 1.3, presents the current CCM certificate (rotated by
// Run) and accepts only servers whose certificate chains to the CA, is
// valid for server authentication and carries SpeakerIdentity. Hostnames
// are not verified, since speakers are addressed by node IP.
func (b *Bundle) ClientTLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// The standard verification checks the hostname, which speaker
		// certificates deliberately do not carry. VerifyConnection performs
		// the full chain and identity verification instead.
		InsecureSkipVerify: true, //nolint:gosec // verified in VerifyConnection
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return b.state.Load().cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			return verifyPeer(cs.PeerCertificates, b.state.Load().pool, x509.ExtKeyUsageServerAuth, SpeakerIdentity, b.opts.now())
		},
	}
}

// Run keeps the bundle fresh until ctx is done: it renews the CCM client
// certificate after two thirds of its lifetime, re-checks (and if needed
// reissues) the speaker Secret, and adopts a new CA if the CA Secret was
// replaced. It wakes up at least every resync interval.
func (b *Bundle) Run(ctx context.Context) {
	wait := b.nextWait()
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		if err := b.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			klog.ErrorS(err, "ironlb pki: certificate sync failed, will retry", "namespace", b.namespace)
			wait = min(retryInterval, b.opts.resync)
			continue
		}
		wait = b.nextWait()
	}
}

// nextWait returns how long Run sleeps before the next Sync.
func (b *Bundle) nextWait() time.Duration {
	st := b.state.Load()
	now := b.opts.now()
	wait := b.opts.resync
	for _, at := range []time.Time{st.ccmRenewAt, st.speakerRenewAt} {
		if d := at.Sub(now); d < wait {
			wait = d
		}
	}
	return max(wait, time.Second)
}

// Sync performs one pass of what Run does periodically: it ensures the CA
// and speaker Secrets and renews the CCM certificate if due.
func (b *Bundle) Sync(ctx context.Context) error {
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	now := b.opts.now()

	ca, err := b.ensureCA(ctx, now)
	if err != nil {
		return err
	}
	speakerRenewAt, err := b.ensureSpeakerSecret(ctx, ca, now)
	if err != nil {
		return err
	}

	old := b.state.Load()
	next := &bundleState{ca: ca, speakerRenewAt: speakerRenewAt}
	caChanged := old == nil || !old.ca.cert.Equal(ca.cert)
	if !caChanged {
		next.pool, next.cert, next.ccmRenewAt = old.pool, old.cert, old.ccmRenewAt
	} else {
		if old != nil {
			klog.InfoS("ironlb pki: CA changed, adopting the new CA", "secret", klog.KRef(b.namespace, CASecretName), "subject", ca.cert.Subject.String())
		}
		next.pool = ca.Pool()
	}
	if caChanged || !now.Before(next.ccmRenewAt) {
		certPEM, keyPEM, err := ca.Issue(CCMIdentity, b.opts.leafLifetime, now)
		if err != nil {
			return fmt.Errorf("issue CCM client certificate: %w", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return fmt.Errorf("load CCM client certificate: %w", err)
		}
		next.cert = &cert
		next.ccmRenewAt = renewAt(cert.Leaf)
		klog.V(2).InfoS("ironlb pki: issued CCM client certificate", "notAfter", cert.Leaf.NotAfter)
	}
	b.state.Store(next)
	return nil
}

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
		return nil, fmt.Errorf("CA secret %s/%s is invalid and will not be replaced (repair it, or delete it to generate a new CA): %w", b.namespace, CASecretName, err)
	}
	if left := ca.cert.NotAfter.Sub(now); left < DefaultLeafLifetime {
		klog.InfoS("ironlb pki: WARNING: CA expires soon; rotate it", "secret", klog.KRef(b.namespace, CASecretName), "notAfter", ca.cert.NotAfter)
	}
	return ca, nil
}

// ensureSpeakerSecret makes sure the speaker Secret holds a certificate
// issued by ca that is not yet due for renewal, and returns when it will be.
func (b *Bundle) ensureSpeakerSecret(ctx context.Context, ca *CA, now time.Time) (time.Time, error) {
	secrets := b.client.CoreV1().Secrets(b.namespace)
	ref := klog.KRef(b.namespace, SpeakerSecretName)
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		s, err := secrets.Get(ctx, SpeakerSecretName, metav1.GetOptions{})
		notFound := apierrors.IsNotFound(err)
		if err != nil && !notFound {
			return time.Time{}, fmt.Errorf("get secret %s/%s: %w", b.namespace, SpeakerSecretName, err)
		}

		reason := "missing"
		if !notFound {
			if s.Type != corev1.SecretTypeTLS {
				return time.Time{}, fmt.Errorf("secret %s/%s has type %q, want %q (delete it so that it is recreated)", b.namespace, SpeakerSecretName, s.Type, corev1.SecretTypeTLS)
			}
			var at time.Time
			at, reason = evaluateSpeakerSecret(s, ca, now)
			if reason == "" {
				return at, nil
			}
		}

		certPEM, keyPEM, err := ca.Issue(SpeakerIdentity, b.opts.leafLifetime, now)
		if err != nil {
			return time.Time{}, fmt.Errorf("issue speaker certificate: %w", err)
		}
		leaf, err := parseCertPEM(certPEM)
		if err != nil {
			return time.Time{}, fmt.Errorf("parse issued speaker certificate: %w", err)
		}

		if notFound {
			s = &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: SpeakerSecretName, Namespace: b.namespace, Labels: managedLabels},
				Type:       corev1.SecretTypeTLS,
				Data:       map[string][]byte{CACertKey: ca.CertPEM(), TLSCertKey: certPEM, TLSKeyKey: keyPEM},
			}
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				continue // another replica created it; re-evaluate
			}
			if err != nil {
				return time.Time{}, fmt.Errorf("create secret %s/%s: %w", b.namespace, SpeakerSecretName, err)
			}
		} else {
			s = s.DeepCopy() // keeps ResourceVersion for optimistic concurrency
			if s.Data == nil {
				s.Data = map[string][]byte{}
			}
			s.Data[CACertKey] = ca.CertPEM()
			s.Data[TLSCertKey] = certPEM
			s.Data[TLSKeyKey] = keyPEM
			_, err = secrets.Update(ctx, s, metav1.UpdateOptions{})
			if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
				continue // changed or deleted concurrently; re-evaluate
			}
			if err != nil {
				return time.Time{}, fmt.Errorf("update secret %s/%s: %w", b.namespace, SpeakerSecretName, err)
			}
		}
		klog.InfoS("ironlb pki: issued speaker certificate", "secret", ref, "reason", reason, "notAfter", leaf.NotAfter)
		return renewAt(leaf), nil
	}
	return time.Time{}, fmt.Errorf("secret %s/%s: giving up after %d conflicting writes", b.namespace, SpeakerSecretName, maxWriteAttempts)
}

// evaluateSpeakerSecret returns the renewal time of the certificate in s and
// an empty reason if it is usable, or a non-empty reason why it must be
// reissued.
func evaluateSpeakerSecret(s *corev1.Secret, ca *CA, now time.Time) (time.Time, string) {
	if caCert, err := parseCertPEM(s.Data[CACertKey]); err != nil {
		return time.Time{}, fmt.Sprintf("%s: %v", CACertKey, err)
	} else if !caCert.Equal(ca.cert) {
		return time.Time{}, CACertKey + " is not the current CA"
	}
	pair, err := tls.X509KeyPair(s.Data[TLSCertKey], s.Data[TLSKeyKey])
	if err != nil {
		return time.Time{}, fmt.Sprintf("%s/%s: %v", TLSCertKey, TLSKeyKey, err)
	}
	if err := verifyPeer([]*x509.Certificate{pair.Leaf}, ca.Pool(), x509.ExtKeyUsageServerAuth, SpeakerIdentity, now); err != nil {
		return time.Time{}, err.Error()
	}
	at := renewAt(pair.Leaf)
	if !now.Before(at) {
		return at, "less than a third of the lifetime left"
	}
	return at, ""
}

// renewAt returns the time after which cert is due for renewal: when two
// thirds of its lifetime have passed.
func renewAt(cert *x509.Certificate) time.Time {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(lifetime * 2 / 3)
}
