package pki

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/record"
	"k8s.io/klog/v2"
)

const (
	// CASecretName is the immutable Opaque Secret, in the CCM's namespace,
	// holding the CA certificate (CACertKey) and private key (CAKeyKey).
	CASecretName = "ironlb-ca"
	// PreviousCASecretName is the optional Secret holding the CA being
	// rotated out, in the same form. The CCM trusts it besides the current
	// one and keeps a client certificate from it for speakers that do not
	// trust the current CA yet. Delete it to end the overlap.
	PreviousCASecretName = "ironlb-ca-previous"
	// BundleConfigMapName is the ConfigMap, in the CCM's namespace, whose
	// CACertKey holds every CA the CCM trusts (current first). Speakers
	// mount it to verify the CCM.
	BundleConfigMapName = "ironlb-ca-bundle"
	// legacySpeakerSecretName held the key that every speaker shared
	// before speakers got their own; Sync deletes it.
	legacySpeakerSecretName = "ironlb-speaker-tls"

	// CACertKey is the Secret key and file name of the PEM CA certificate.
	CACertKey = "ca.crt"
	// CAKeyKey is the Secret key of the PEM CA private key.
	CAKeyKey = "ca.key"

	// DefaultResyncInterval is how often Bundle.Run re-checks the Secrets
	// when no renewal is due earlier.
	DefaultResyncInterval = time.Hour

	// retryInterval is how soon Run retries after a failed sync.
	retryInterval = 30 * time.Second

	// ReasonInvalidCA is the reason of the Warning Event on a CA Secret the
	// CCM cannot use.
	ReasonInvalidCA = "InvalidCA"
)

var managedLabels = map[string]string{"app.kubernetes.io/managed-by": "ironlb"}

// OwnSecretNames returns the names of the Secrets the CCM keeps for itself
// in its namespace: the CA, the CA being rotated out and the key speakers
// of older versions shared. None of them may ever leave the CCM (as a BGP
// password, for one).
func OwnSecretNames() []string {
	return []string{CASecretName, PreviousCASecretName, legacySpeakerSecretName}
}

// Option configures Bootstrap.
type Option func(*options)

type options struct {
	now          func() time.Time
	leafLifetime time.Duration
	nodeLifetime time.Duration
	resync       time.Duration
	recorder     record.EventRecorder
	speakerSA    string
	live         *Liveness
}

// WithClock sets the clock used for issuing and validating certificates.
// It is intended for tests.
func WithClock(now func() time.Time) Option {
	return func(o *options) { o.now = now }
}

// WithLeafLifetime sets the lifetime of the CCM's client certificates.
// Values <= 0 select CCMCertLifetime.
func WithLeafLifetime(d time.Duration) Option {
	return func(o *options) { o.leafLifetime = d }
}

// WithNodeLifetime sets the lifetime of speakers' node certificates.
// Values <= 0 select NodeCertLifetime.
func WithNodeLifetime(d time.Duration) Option {
	return func(o *options) { o.nodeLifetime = d }
}

// WithResyncInterval sets how often Bundle.Run re-checks the Secrets when
// no renewal is due earlier. Values <= 0 select DefaultResyncInterval.
func WithResyncInterval(d time.Duration) Option {
	return func(o *options) { o.resync = d }
}

// WithRecorder makes the bundle report a CA Secret it cannot use with a
// Warning Event on that Secret.
func WithRecorder(r record.EventRecorder) Option {
	return func(o *options) { o.recorder = r }
}

// WithSpeakerServiceAccount names the speakers' ServiceAccount (in the
// CCM's namespace) whose tokens may enroll. Default
// DefaultSpeakerServiceAccount.
func WithSpeakerServiceAccount(name string) Option {
	return func(o *options) { o.speakerSA = name }
}

// WithLiveness makes the bundle use watches of the speaker pods and Nodes
// started before (StartLiveness, for the same namespace and
// ServiceAccount), by a replica before it leads, instead of starting its
// own: a new leader then has them listed before its first handshake.
func WithLiveness(l *Liveness) Option {
	return func(o *options) { o.live = l }
}

// Bundle holds the CCM side of the mutual TLS setup: the CAs it trusts and
// issues from, and its in-memory client certificates. It is safe for
// concurrent use; what ClientTLSConfig presents rotates as Run renews it.
type Bundle struct {
	client    kubernetes.Interface
	namespace string
	opts      options

	syncMu sync.Mutex // serializes Sync
	state  atomic.Pointer[bundleState]

	changedMu sync.Mutex
	changed   chan struct{} // closed and replaced when the trusted CAs change

	live *Liveness // the speaker pods and Nodes certificates were issued for

	distrustMu sync.Mutex
	distrusted map[string]time.Time // certificates whose renewal was refused (DER), until they expire
}

// Changed returns a channel closed when the CAs the bundle trusts or issues
// from change next: then enrolled speakers' certificates are due for
// renewal (RenewalDue).
func (b *Bundle) Changed() <-chan struct{} {
	b.changedMu.Lock()
	defer b.changedMu.Unlock()
	return b.changed
}

func (b *Bundle) notifyChanged() {
	b.changedMu.Lock()
	defer b.changedMu.Unlock()
	close(b.changed)
	b.changed = make(chan struct{})
}

type bundleState struct {
	current    *CA // issues node and CCM certificates; nil until a usable CA was read
	previous   *CA // trusted during a rotation; may be nil
	pool       *x509.CertPool
	bundlePEM  []byte
	certs      []*tls.Certificate // CCM client certificates: from current, then from previous
	ccmRenewAt time.Time
	problem    string // why the CA cannot be used now; "" when it can
}

// Bootstrap reads (or creates) the CA in namespace, publishes the trust
// bundle for the speakers and issues the CCM's client certificates in
// memory. It watches the speaker pods and the Nodes until ctx ends, to
// revoke the certificates of those deleted (Check, Revoked).
//
// The CA Secret is created, immutable, if missing; creation is race-safe
// (when another CCM replica wins, its CA is used) and an existing CA Secret
// is never overwritten. A CA Secret that cannot be used does not stop the
// CCM: the bundle is degraded (Problem says why, a Warning Event on the
// Secret and the metric ironlb_ca_valid tell the operator), no speaker can
// be reached until it is repaired, and Run retries every 30 s and whenever
// a CA Secret changes (it watches them). Only errors of the arguments are
// returned.
func Bootstrap(ctx context.Context, client kubernetes.Interface, namespace string, opts ...Option) (*Bundle, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.now == nil {
		o.now = time.Now
	}
	if o.leafLifetime <= 0 {
		o.leafLifetime = CCMCertLifetime
	}
	if o.nodeLifetime <= 0 {
		o.nodeLifetime = NodeCertLifetime
	}
	if o.resync <= 0 {
		o.resync = DefaultResyncInterval
	}
	if o.speakerSA == "" {
		o.speakerSA = DefaultSpeakerServiceAccount
	}
	if client == nil {
		return nil, errors.New("ironlb pki: bootstrap: nil Kubernetes client")
	}
	if namespace == "" {
		return nil, errors.New("ironlb pki: bootstrap: empty namespace")
	}
	b := &Bundle{client: client, namespace: namespace, opts: o, changed: make(chan struct{})}
	b.state.Store(&bundleState{problem: "not synced yet"})
	caMetrics.Set(b.collectMetrics)
	b.live = o.live
	if b.live == nil {
		b.live = StartLiveness(ctx, client, namespace, o.speakerSA)
	}
	if err := b.Sync(ctx); err != nil {
		klog.ErrorS(err, "ironlb pki: the CCM cannot reach speakers until the CA is usable; will retry", "secret", klog.KRef(namespace, CASecretName))
	}
	return b, nil
}

// CA returns the CA the bundle issues from: the last usable one read (a
// corrupt Secret later does not take it away); nil until one was read.
func (b *Bundle) CA() *CA { return b.state.Load().current }

// Problem says why the CA Secret cannot be used now; "" when it can. The
// bundle keeps issuing from the last usable CA, if it read one.
func (b *Bundle) Problem() string { return b.state.Load().problem }

// Certificate returns the CCM's client certificate from the current CA;
// nil until a usable CA was read.
func (b *Bundle) Certificate() *tls.Certificate {
	if c := b.state.Load().certs; len(c) > 0 {
		return c[0]
	}
	return nil
}

// BundlePEM returns the PEM certificates of every trusted CA, current
// first.
func (b *Bundle) BundlePEM() []byte { return bytes.Clone(b.state.Load().bundlePEM) }

// Run keeps the bundle fresh until ctx is done: it renews the CCM client
// certificates after two thirds of their lifetime, re-reads the CA Secrets
// (adopting a rotated CA) and republishes the trust bundle. It wakes up at
// least every resync interval, and every 30 s while degraded.
func (b *Bundle) Run(ctx context.Context) {
	poke := make(chan struct{}, 1)
	go b.watchSecrets(ctx, poke)
	wait := b.nextWait()
	for {
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-poke:
			t.Stop()
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
	if st.problem != "" {
		return min(retryInterval, b.opts.resync)
	}
	wait := min(b.opts.resync, st.ccmRenewAt.Sub(b.opts.now()))
	return max(wait, time.Second)
}

// Sync performs one pass of what Run does periodically. When the CA Secret
// cannot be used it keeps what worked before (existing streams and the
// certificates already issued stay valid) and returns the reason.
func (b *Bundle) Sync(ctx context.Context) error {
	b.syncMu.Lock()
	defer b.syncMu.Unlock()
	now := b.opts.now()
	old := b.state.Load()

	current, err := b.ensureCA(ctx, now)
	if err != nil {
		next := *old
		next.problem = err.Error()
		if old.current != nil && !now.Before(old.ccmRenewAt) {
			// The CA in memory still issues: the CCM's own certificates
			// must not expire while the Secret cannot be read.
			if certs, renewAt, rerr := b.issueCCMCerts(old.current, old.previous, now); rerr == nil {
				next.certs, next.ccmRenewAt = certs, renewAt
			} else {
				klog.ErrorS(rerr, "ironlb pki: renewing the CCM's client certificates")
			}
		}
		b.state.Store(&next)
		return err
	}
	previous := b.previousCA(ctx, now)
	if previous != nil && previous.cert.Equal(current.cert) {
		previous = nil
	}
	next := &bundleState{current: current, previous: previous}
	next.pool = x509.NewCertPool()
	next.pool.AddCert(current.cert)
	next.bundlePEM = current.CertPEM()
	if previous != nil {
		next.pool.AddCert(previous.cert)
		next.bundlePEM = append(next.bundlePEM, previous.CertPEM()...)
	}
	if err := b.publishBundle(ctx, next.bundlePEM); err != nil {
		// Issuing works; restarted speakers just may not see a new CA yet
		// (connected ones get it with their next certificate).
		klog.ErrorS(err, "ironlb pki: publishing the CA bundle", "configMap", klog.KRef(b.namespace, BundleConfigMapName))
	}
	b.deleteLegacySecret(ctx)

	sameCAs := old.current != nil && old.current.cert.Equal(current.cert) && sameCA(old.previous, previous)
	if sameCAs && now.Before(old.ccmRenewAt) {
		next.certs, next.ccmRenewAt = old.certs, old.ccmRenewAt
	} else {
		if old.current != nil && !old.current.cert.Equal(current.cert) {
			klog.InfoS("ironlb pki: CA changed, adopting the new CA", "secret", klog.KRef(b.namespace, CASecretName), "subject", current.cert.Subject.String(), "previousTrusted", previous != nil)
		}
		next.certs, next.ccmRenewAt, err = b.issueCCMCerts(current, previous, now)
		if err != nil {
			return err
		}
	}
	b.state.Store(next)
	if !sameCAs && old.current != nil {
		b.notifyChanged()
	}
	return nil
}

// issueCCMCerts issues the CCM's client certificates, from current, then
// previous, and says when they are due for renewal.
func (b *Bundle) issueCCMCerts(current, previous *CA, now time.Time) ([]*tls.Certificate, time.Time, error) {
	var certs []*tls.Certificate
	for _, ca := range []*CA{current, previous} {
		if ca == nil {
			continue
		}
		cert, err := ca.issueKeyPair(CCMIdentity, b.opts.leafLifetime, now)
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("issue CCM client certificate: %w", err)
		}
		certs = append(certs, cert)
	}
	due := renewAt(certs[0].Leaf)
	for _, c := range certs[1:] {
		due = minTime(due, renewAt(c.Leaf))
	}
	klog.InfoS("ironlb pki: issued the CCM's client certificates", "count", len(certs), "notAfter", certs[0].Leaf.NotAfter, "renewAt", due)
	return certs, due, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func sameCA(a, b *CA) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.cert.Equal(b.cert)
}

// issueKeyPair issues identity a fresh key and certificate as a
// tls.Certificate.
func (ca *CA) issueKeyPair(identity string, lifetime time.Duration, now time.Time) (*tls.Certificate, error) {
	certPEM, keyPEM, err := ca.Issue(identity, lifetime, now)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("load certificate for %s: %w", identity, err)
	}
	return &cert, nil
}

// renewAt returns the time after which cert is due for renewal: when two
// thirds of its lifetime have passed.
func renewAt(cert *x509.Certificate) time.Time {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotBefore.Add(lifetime * 2 / 3)
}
