package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	"k8s.io/component-base/metrics/legacyregistry"
)

const testNS = "ironlb-system"

var secretsGVR = corev1.SchemeGroupVersion.WithResource("secrets")

func newClient(objs ...runtime.Object) *fake.Clientset { return fake.NewClientset(objs...) }

// clock is a settable clock safe for concurrent use.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock {
	c := &clock{}
	c.Set(t)
	return c
}
func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

// fixed returns a clock stuck at t.
func fixed(t time.Time) func() time.Time { return func() time.Time { return t } }

func mustBootstrap(t *testing.T, cs *fake.Clientset, opts ...Option) *Bundle {
	t.Helper()
	b, err := Bootstrap(context.Background(), cs, testNS, opts...)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	return b
}

func getSecret(t *testing.T, cs *fake.Clientset, name string) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(testNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret %s: %v", name, err)
	}
	return s
}

// bundleConfigMap returns ca.crt of the published bundle ConfigMap, or
// "<absent>".
func bundleConfigMap(t *testing.T, cs *fake.Clientset) string {
	t.Helper()
	cm, err := cs.CoreV1().ConfigMaps(testNS).Get(context.Background(), BundleConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "<absent>"
	}
	if err != nil {
		t.Fatalf("get configmap: %v", err)
	}
	return cm.Data[CACertKey]
}

func caSecretNamed(name string, ca *CA) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: testNS},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{CACertKey: ca.CertPEM(), CAKeyKey: ca.KeyPEM()},
	}
}

func caSecret(ca *CA) *corev1.Secret { return caSecretNamed(CASecretName, ca) }

func corruptCASecret() *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: testNS},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{CACertKey: []byte("not pem"), CAKeyKey: []byte("nope")},
	}
}

// replaceSecret deletes and recreates a Secret, as an operator must for an
// immutable one.
func replaceSecret(t *testing.T, cs *fake.Clientset, s *corev1.Secret) {
	t.Helper()
	ctx := context.Background()
	err := cs.CoreV1().Secrets(testNS).Delete(ctx, s.Name, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Secrets(testNS).Create(ctx, s, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deleteSecret(t *testing.T, cs *fake.Clientset, name string) {
	t.Helper()
	if err := cs.CoreV1().Secrets(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// writes counts the create, update, patch and delete actions on resource
// (and name, if not empty).
func writes(cs *fake.Clientset, resource, name string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetResource().Resource != resource {
			continue
		}
		var got string
		switch a := a.(type) {
		case k8stesting.CreateAction:
			if o, ok := a.GetObject().(metav1.Object); ok {
				got = o.GetName()
			}
		case k8stesting.UpdateAction:
			if o, ok := a.GetObject().(metav1.Object); ok {
				got = o.GetName()
			}
		case k8stesting.PatchAction:
			got = a.GetName()
		case k8stesting.DeleteAction:
			got = a.GetName()
		default:
			continue
		}
		if name == "" || got == name {
			n++
		}
	}
	return n
}

// ccmCerts returns the CCM client certificates the bundle holds, current
// CA first.
func ccmCerts(b *Bundle) []*tls.Certificate { return b.state.Load().certs }

// issuers names, for each certificate, which of cas signed it ("?" for
// none).
func issuers(certs []*tls.Certificate, cas map[string]*CA) []string {
	var got []string
	for _, c := range certs {
		name := "?"
		for n, ca := range cas {
			if c.Leaf.CheckSignatureFrom(ca.Certificate()) == nil {
				name = n
			}
		}
		got = append(got, name)
	}
	return got
}

// gauge returns the value of an unlabelled gauge from the legacy registry
// the CCM serves at /metrics, or -1 if it is not there.
func gauge(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := legacyregistry.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}

type caGauges struct{ Valid, Trusted float64 }

func caMetricValues(t *testing.T) caGauges {
	t.Helper()
	return caGauges{Valid: gauge(t, "ironlb_ca_valid"), Trusted: gauge(t, "ironlb_ca_trusted")}
}

// eventRecorder records Events like record.FakeRecorder and also the name
// of the object each is about.
type eventRecorder struct {
	*record.FakeRecorder
	mu      sync.Mutex
	objects []string
}

func newEventRecorder() *eventRecorder {
	return &eventRecorder{FakeRecorder: record.NewFakeRecorder(100)}
}

func (r *eventRecorder) Event(obj runtime.Object, eventtype, reason, message string) {
	if m, ok := obj.(metav1.Object); ok {
		r.mu.Lock()
		r.objects = append(r.objects, m.GetNamespace()+"/"+m.GetName())
		r.mu.Unlock()
	}
	r.FakeRecorder.Event(obj, eventtype, reason, message)
}

// drain returns the Events recorded so far and the objects they are on.
func (r *eventRecorder) drain() (events, objects []string) {
	for {
		select {
		case e := <-r.Events:
			events = append(events, e)
		default:
			r.mu.Lock()
			objects, r.objects = r.objects, nil
			r.mu.Unlock()
			return events, objects
		}
	}
}

// TestBootstrapCreatesCAAndBundle proves that on an empty namespace
// Bootstrap creates the CA Secret (Opaque, immutable, labelled, holding a
// parsable CA), publishes exactly that CA in the bundle ConfigMap, issues
// the CCM's client certificate in memory only, and reports itself valid.
func TestBootstrapCreatesCAAndBundle(t *testing.T) {
	cs := newClient()
	b := mustBootstrap(t, cs, WithClock(fixed(t0)))
	s := getSecret(t, cs, CASecretName)
	ca, err := parseCA(s.Data[CACertKey], s.Data[CAKeyKey], t0)
	if err != nil {
		t.Fatalf("CA secret does not parse: %v", err)
	}
	ccm := b.Certificate()
	type summary struct {
		Type          corev1.SecretType
		Immutable     bool
		Keys          int
		ManagedBy     string
		BundleCM      string
		BundlePEM     string
		BundleCA      string
		Problem       string
		CCMVerify     string
		CCMNotAfter   time.Time
		SecretsWrites int
		Metrics       caGauges
	}
	ccmErr := "no certificate"
	if ccm != nil {
		ccmErr = ""
		if err := verifyPeer([]*x509.Certificate{ccm.Leaf}, ca.Pool(), x509.ExtKeyUsageClientAuth, CCMIdentity, t0); err != nil {
			ccmErr = err.Error()
		}
	}
	got := summary{
		Type:          s.Type,
		Immutable:     s.Immutable != nil && *s.Immutable,
		Keys:          len(s.Data),
		ManagedBy:     s.Labels["app.kubernetes.io/managed-by"],
		BundleCM:      bundleConfigMap(t, cs),
		BundlePEM:     string(b.BundlePEM()),
		Problem:       b.Problem(),
		CCMVerify:     ccmErr,
		SecretsWrites: writes(cs, "secrets", ""),
		Metrics:       caMetricValues(t),
	}
	if ccm != nil {
		got.CCMNotAfter = ccm.Leaf.NotAfter
	}
	if b.CA() != nil {
		got.BundleCA = string(b.CA().CertPEM())
	}
	want := summary{
		Type:        corev1.SecretTypeOpaque,
		Immutable:   true,
		Keys:        2,
		ManagedBy:   "ironlb",
		BundleCM:    string(ca.CertPEM()),
		BundlePEM:   string(ca.CertPEM()),
		BundleCA:    string(ca.CertPEM()),
		CCMNotAfter: t0.Add(CCMCertLifetime),
		// The CA create and the delete of the legacy Secret; the CCM
		// certificate is never stored.
		SecretsWrites: 2,
		Metrics:       caGauges{Valid: 1, Trusted: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Bootstrap result mismatch (-want +got):\n%s", diff)
	}
}

// TestBootstrapArguments proves that only argument errors fail Bootstrap.
func TestBootstrapArguments(t *testing.T) {
	tests := []struct {
		name    string
		ns      string
		nilCS   bool
		wantErr string
	}{
		{name: "nil client", ns: testNS, nilCS: true, wantErr: "nil Kubernetes client"},
		{name: "empty namespace", ns: "", wantErr: "empty namespace"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var err error
			if tc.nilCS {
				_, err = Bootstrap(context.Background(), nil, tc.ns)
			} else {
				_, err = Bootstrap(context.Background(), newClient(), tc.ns)
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Bootstrap() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

// TestBootstrapIsIdempotent proves that a restarted CCM reuses the stored
// CA and writes nothing: no Secret or ConfigMap is created or updated.
func TestBootstrapIsIdempotent(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b1 := mustBootstrap(t, cs, WithClock(clk.Now))
	caBefore := getSecret(t, cs, CASecretName)
	cmBefore := bundleConfigMap(t, cs)
	cs.ClearActions()

	clk.Add(24 * time.Hour) // a restart a day later
	b2 := mustBootstrap(t, cs, WithClock(clk.Now))
	if diff := cmp.Diff(caBefore, getSecret(t, cs, CASecretName)); diff != "" {
		t.Errorf("CA secret changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(cmBefore, bundleConfigMap(t, cs)); diff != "" {
		t.Errorf("bundle ConfigMap changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(b1.CA().CertPEM(), b2.CA().CertPEM()); diff != "" {
		t.Errorf("bundles use different CAs (-want +got):\n%s", diff)
	}
	// Only the (not found) delete of the legacy Secret.
	got := map[string]int{
		"ca":     writes(cs, "secrets", CASecretName),
		"cm":     writes(cs, "configmaps", ""),
		"legacy": writes(cs, "secrets", legacySpeakerSecretName),
	}
	if diff := cmp.Diff(map[string]int{"ca": 0, "cm": 0, "legacy": 1}, got); diff != "" {
		t.Errorf("writes of the second Bootstrap (-want +got):\n%s", diff)
	}
}

// TestBootstrapConcurrent proves that CCM replicas starting together agree
// on one CA: the losers of the create race adopt the winner's CA, and the
// published bundle is that CA.
func TestBootstrapConcurrent(t *testing.T) {
	for _, replicas := range []int{2, 8} {
		t.Run(strconv.Itoa(replicas)+" replicas", func(t *testing.T) {
			cs := newClient()
			bundles := make([]*Bundle, replicas)
			errs := make([]error, replicas)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range replicas {
				wg.Go(func() {
					<-start
					bundles[i], errs[i] = Bootstrap(context.Background(), cs, testNS, WithClock(fixed(t0)))
				})
			}
			close(start)
			wg.Wait()
			stored := string(getSecret(t, cs, CASecretName).Data[CACertKey])
			for i, b := range bundles {
				if errs[i] != nil {
					t.Fatalf("replica %d: Bootstrap: %v", i, errs[i])
				}
				if b.Problem() != "" || b.CA() == nil {
					t.Fatalf("replica %d degraded: %s", i, b.Problem())
				}
				if diff := cmp.Diff(stored, string(b.CA().CertPEM())); diff != "" {
					t.Errorf("replica %d does not use the stored CA (-want +got):\n%s", i, diff)
				}
			}
			if diff := cmp.Diff(stored, bundleConfigMap(t, cs)); diff != "" {
				t.Errorf("published bundle is not the stored CA (-want +got):\n%s", diff)
			}
		})
	}
}

// TestBootstrapUsesExistingCA proves that an existing valid CA Secret (an
// operator's, say, mutable and with its own labels) is used as is and never
// rewritten.
func TestBootstrapUsesExistingCA(t *testing.T) {
	ca := mustCA(t, t0)
	s := caSecret(ca)
	s.Labels = map[string]string{"owner": "operator"}
	cs := newClient(s)
	b := mustBootstrap(t, cs, WithClock(fixed(t0.Add(time.Hour))))
	if diff := cmp.Diff(ca.CertPEM(), b.CA().CertPEM()); diff != "" {
		t.Errorf("bundle CA is not the stored one (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(s, getSecret(t, cs, CASecretName)); diff != "" {
		t.Errorf("CA secret modified (-want +got):\n%s", diff)
	}
	if n := writes(cs, "secrets", CASecretName); n != 0 {
		t.Errorf("CA secret written %d times, want 0", n)
	}
}

// TestBootstrapInvalidCA proves that a CA Secret the CCM cannot use does
// not fail Bootstrap and is never replaced: the bundle is degraded (Problem
// says which Secret and why, ironlb_ca_valid is 0), a Warning Event
// InvalidCA lands on the Secret, no bundle is published, and the CCM
// presents no certificate: GetClientCertificate fails with the problem.
func TestBootstrapInvalidCA(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	leafCert, leafKey := mustIssue(t, ca, CCMIdentity, 0, t0)
	expired := mustCA(t, t0.Add(-CALifetime-time.Hour))

	tests := []struct {
		name    string
		data    map[string][]byte
		wantErr string
	}{
		{name: "empty", data: nil, wantErr: "ca.crt: no PEM certificate"},
		{name: "garbage cert", data: map[string][]byte{CACertKey: []byte("not pem"), CAKeyKey: ca.KeyPEM()}, wantErr: "ca.crt: no PEM certificate"},
		{name: "missing key", data: map[string][]byte{CACertKey: ca.CertPEM()}, wantErr: "ca.key: no PEM private key"},
		{name: "mismatched key", data: map[string][]byte{CACertKey: ca.CertPEM(), CAKeyKey: other.KeyPEM()}, wantErr: "ca.key: private key does not match"},
		{name: "leaf instead of CA", data: map[string][]byte{CACertKey: leafCert, CAKeyKey: leafKey}, wantErr: "is not a CA"},
		{name: "expired", data: map[string][]byte{CACertKey: expired.CertPEM(), CAKeyKey: expired.KeyPEM()}, wantErr: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := caSecret(ca)
			s.Data = tc.data
			cs := newClient(s)
			before := getSecret(t, cs, CASecretName)
			rec := newEventRecorder()

			b := mustBootstrap(t, cs, WithClock(fixed(t0)), WithRecorder(rec))
			problem := b.Problem()
			for _, want := range []string{testNS + "/" + CASecretName, "will not be replaced", tc.wantErr} {
				if !strings.Contains(problem, want) {
					t.Errorf("Problem() = %q, want it to contain %q", problem, want)
				}
			}
			events, objects := rec.drain()
			if diff := cmp.Diff([]string{"Warning " + ReasonInvalidCA + " " + problem}, events); diff != "" {
				t.Errorf("events mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{testNS + "/" + CASecretName}, objects); diff != "" {
				t.Errorf("event objects mismatch (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, getSecret(t, cs, CASecretName)); diff != "" {
				t.Errorf("CA secret modified (-want +got):\n%s", diff)
			}
			type state struct {
				CAWrites, CMWrites int
				BundleCM           string
				HasCA, HasCert     bool
				Metrics            caGauges
			}
			got := state{
				CAWrites: writes(cs, "secrets", CASecretName),
				CMWrites: writes(cs, "configmaps", ""),
				BundleCM: bundleConfigMap(t, cs),
				HasCA:    b.CA() != nil,
				HasCert:  b.Certificate() != nil,
				Metrics:  caMetricValues(t),
			}
			want := state{BundleCM: "<absent>", Metrics: caGauges{Valid: 0, Trusted: 0}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("degraded state mismatch (-want +got):\n%s", diff)
			}
			cfg := b.ClientTLSConfig("node-a", &Peer{})
			if _, err := cfg.GetClientCertificate(&tls.CertificateRequestInfo{}); err == nil || !strings.Contains(err.Error(), problem) {
				t.Errorf("GetClientCertificate() error = %v, want it to contain the problem %q", err, problem)
			}
		})
	}
}

// TestBootstrapRecoversFromInvalidCA proves that a degraded bundle recovers
// by itself (Run retries) once the operator repairs the CA Secret: the
// problem clears, certificates are issued and the bundle is published.
func TestBootstrapRecoversFromInvalidCA(t *testing.T) {
	ca := mustCA(t, t0)
	cs := newClient(corruptCASecret())
	b := mustBootstrap(t, cs, WithClock(fixed(t0)), WithResyncInterval(time.Millisecond))
	if b.Problem() == "" {
		t.Fatal("Bootstrap with a corrupt CA: no problem reported")
	}
	if d := b.nextWait(); d != time.Millisecond {
		t.Errorf("nextWait() while degraded = %v, want the retry interval capped by resync (1ms)", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	replaceSecret(t, cs, caSecret(ca))
	deadline := time.Now().Add(10 * time.Second)
	for b.Problem() != "" {
		if time.Now().After(deadline) {
			t.Fatalf("Run did not recover; Problem() = %q", b.Problem())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if diff := cmp.Diff(string(ca.CertPEM()), bundleConfigMap(t, cs)); diff != "" {
		t.Errorf("bundle after repair (-want +got):\n%s", diff)
	}
	if c := b.Certificate(); c == nil || c.Leaf.CheckSignatureFrom(ca.Certificate()) != nil {
		t.Error("no CCM certificate from the repaired CA")
	}
}

// TestSyncCorruptAfterGoodStart proves that a CA Secret that turns invalid
// while the CCM runs does not take speakers away: Sync returns the reason
// and sets Problem (metric 0, Event), but keeps the CA, the trust bundle and
// the CCM certificates, so that handshakes with speakers still work, on
// every later corrupt read too; once repaired, the problem clears without
// reissuing anything.
func TestSyncCorruptAfterGoodStart(t *testing.T) {
	ca := mustCA(t, t0)
	cs := newClient(caSecret(ca))
	clk := newClock(t0)
	rec := newEventRecorder()
	tr := newTokenReviewer(cs)
	b := mustBootstrap(t, cs, WithClock(clk.Now), WithRecorder(rec))
	sp := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
	enroll(t, b, tr, sp)
	ccm := b.Certificate()
	cm := bundleConfigMap(t, cs)

	check := func(step string) {
		t.Helper()
		peer := &Peer{}
		res := handshake(t, sp.ServerTLSConfig(), b.ClientTLSConfig("node-a", peer))
		if res.clientErr != nil || res.serverErr != nil || !peer.Enrolled() {
			t.Errorf("%s: handshake: client %v, server %v, enrolled %t", step, res.clientErr, res.serverErr, peer.Enrolled())
		}
		if b.CA() == nil || !b.CA().Certificate().Equal(ca.Certificate()) {
			t.Errorf("%s: CA not kept", step)
		}
		if b.Certificate() != ccm {
			t.Errorf("%s: CCM certificate replaced", step)
		}
		if diff := cmp.Diff(cm, bundleConfigMap(t, cs)); diff != "" {
			t.Errorf("%s: bundle ConfigMap changed (-want +got):\n%s", step, diff)
		}
	}

	replaceSecret(t, cs, corruptCASecret())
	for i := range 2 {
		clk.Add(time.Minute)
		err := b.Sync(context.Background())
		if err == nil || !strings.Contains(err.Error(), "will not be replaced") {
			t.Fatalf("Sync %d with a corrupt CA: error = %v", i, err)
		}
		if diff := cmp.Diff(err.Error(), b.Problem()); diff != "" {
			t.Errorf("Problem() after corrupt Sync %d (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(caGauges{Valid: 0, Trusted: 1}, caMetricValues(t)); diff != "" {
			t.Errorf("metrics while degraded (-want +got):\n%s", diff)
		}
		check("corrupt sync " + strconv.Itoa(i))
	}
	if events, _ := rec.drain(); len(events) != 2 || !strings.HasPrefix(events[0], "Warning "+ReasonInvalidCA+" ") {
		t.Errorf("events = %q, want one Warning %s per corrupt read", events, ReasonInvalidCA)
	}

	replaceSecret(t, cs, caSecret(ca))
	clk.Add(time.Minute)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync after repair: %v", err)
	}
	if diff := cmp.Diff("", b.Problem()); diff != "" {
		t.Errorf("Problem() after repair (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(caGauges{Valid: 1, Trusted: 1}, caMetricValues(t)); diff != "" {
		t.Errorf("metrics after repair (-want +got):\n%s", diff)
	}
	check("repaired")
}

// TestBootstrapPreviousCA proves the rotation overlap on the CCM side: with
// ironlb-ca-previous present the CCM trusts both CAs, publishes both
// (current first), and holds a client certificate from each (current
// first); a previous CA equal to the current one or unusable is not
// trusted twice or at all; deleting it ends the overlap.
func TestBootstrapPreviousCA(t *testing.T) {
	cur := mustCA(t, t0)
	prev := mustCA(t, t0.Add(-time.Hour))
	cas := map[string]*CA{"current": cur, "previous": prev}
	corruptPrev := corruptCASecret()
	corruptPrev.Name = PreviousCASecretName

	type state struct {
		Bundle   string
		CM       string
		Issuers  []string
		Metrics  caGauges
		Problem  string
		EventsOn []string
	}
	tests := []struct {
		name     string
		previous *corev1.Secret
		want     state
	}{
		{
			name:     "overlap",
			previous: caSecretNamed(PreviousCASecretName, prev),
			want: state{
				Bundle:  string(cur.CertPEM()) + string(prev.CertPEM()),
				CM:      string(cur.CertPEM()) + string(prev.CertPEM()),
				Issuers: []string{"current", "previous"},
				Metrics: caGauges{Valid: 1, Trusted: 2},
			},
		},
		{
			name:     "previous equals current",
			previous: caSecretNamed(PreviousCASecretName, cur),
			want:     state{Bundle: string(cur.CertPEM()), CM: string(cur.CertPEM()), Issuers: []string{"current"}, Metrics: caGauges{Valid: 1, Trusted: 1}},
		},
		{
			name:     "previous corrupt",
			previous: corruptPrev,
			want: state{
				Bundle: string(cur.CertPEM()), CM: string(cur.CertPEM()), Issuers: []string{"current"}, Metrics: caGauges{Valid: 1, Trusted: 1},
				EventsOn: []string{testNS + "/" + PreviousCASecretName},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newClient(caSecret(cur), tc.previous)
			rec := newEventRecorder()
			b := mustBootstrap(t, cs, WithClock(fixed(t0)), WithRecorder(rec))
			_, on := rec.drain()
			got := state{
				Bundle:   string(b.BundlePEM()),
				CM:       bundleConfigMap(t, cs),
				Issuers:  issuers(ccmCerts(b), cas),
				Metrics:  caMetricValues(t),
				Problem:  b.Problem(),
				EventsOn: on,
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("bundle state mismatch (-want +got):\n%s", diff)
			}
			if b.Certificate() != ccmCerts(b)[0] {
				t.Error("Certificate() is not the certificate from the current CA")
			}

			// Ending the overlap.
			deleteSecret(t, cs, PreviousCASecretName)
			if err := b.Sync(context.Background()); err != nil {
				t.Fatalf("Sync: %v", err)
			}
			got = state{Bundle: string(b.BundlePEM()), CM: bundleConfigMap(t, cs), Issuers: issuers(ccmCerts(b), cas), Metrics: caMetricValues(t)}
			want := state{Bundle: string(cur.CertPEM()), CM: string(cur.CertPEM()), Issuers: []string{"current"}, Metrics: caGauges{Valid: 1, Trusted: 1}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("after deleting %s (-want +got):\n%s", PreviousCASecretName, diff)
			}
		})
	}
}

// TestBootstrapDeletesLegacySecret proves that the shared speaker key of
// older versions is deleted and nothing else is.
func TestBootstrapDeletesLegacySecret(t *testing.T) {
	legacy := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: legacySpeakerSecretName, Namespace: testNS}, Type: corev1.SecretTypeTLS}
	unrelated := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "unrelated", Namespace: testNS}}
	elsewhere := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: legacySpeakerSecretName, Namespace: "other"}}
	cs := newClient(legacy, unrelated, elsewhere)
	mustBootstrap(t, cs, WithClock(fixed(t0)))
	list, err := cs.CoreV1().Secrets("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list.Items {
		got = append(got, s.Namespace+"/"+s.Name)
	}
	slices.Sort(got)
	want := []string{testNS + "/" + CASecretName, testNS + "/unrelated", "other/" + legacySpeakerSecretName}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("secrets after Bootstrap (-want +got):\n%s", diff)
	}
}

// TestSyncRenewal proves that the CCM's client certificates (from both CAs
// during an overlap) are kept until two thirds of their lifetime and
// renewed after, and that nextWait wakes Run up in time.
func TestSyncRenewal(t *testing.T) {
	cur := mustCA(t, t0)
	prev := mustCA(t, t0)
	cs := newClient(caSecret(cur), caSecretNamed(PreviousCASecretName, prev))
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now), WithLeafLifetime(3*time.Hour), WithResyncInterval(24*time.Hour))
	certs0 := ccmCerts(b)
	if len(certs0) != 2 {
		t.Fatalf("got %d CCM certificates, want 2", len(certs0))
	}
	// NotBefore is backdated by clockSkew: the lifetime is 3h05m, renewal
	// is due 2h03m20s after NotBefore.
	due := t0.Add(-clockSkew).Add((3*time.Hour + clockSkew) * 2 / 3)
	if diff := cmp.Diff(due.Sub(t0), b.nextWait()); diff != "" {
		t.Errorf("nextWait() mismatch (-want +got):\n%s", diff)
	}

	clk.Set(due.Add(-time.Second))
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if diff := cmp.Diff(certs0, ccmCerts(b)); diff != "" {
		t.Errorf("CCM certificates renewed before two thirds (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(time.Second, b.nextWait()); diff != "" {
		t.Errorf("nextWait() just before renewal (-want +got):\n%s", diff)
	}

	clk.Set(due)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	certs1 := ccmCerts(b)
	if diff := cmp.Diff([]string{"current", "previous"}, issuers(certs1, map[string]*CA{"current": cur, "previous": prev})); diff != "" {
		t.Errorf("renewed certificate issuers (-want +got):\n%s", diff)
	}
	for i := range certs1 {
		if certs1[i] == certs0[i] {
			t.Errorf("CCM certificate %d not renewed at two thirds", i)
		}
		if diff := cmp.Diff(due.Add(3*time.Hour), certs1[i].Leaf.NotAfter); diff != "" {
			t.Errorf("renewed certificate %d NotAfter (-want +got):\n%s", i, diff)
		}
	}
	if diff := cmp.Diff(due.Add(-clockSkew).Add((3*time.Hour+clockSkew)*2/3).Sub(due), b.nextWait()); diff != "" {
		t.Errorf("nextWait() after renewal (-want +got):\n%s", diff)
	}
}

// TestSyncAdoptsNewCA proves that when the CA Secret is replaced a running
// bundle adopts the new CA: new CCM certificates, and it updates the
// bundle ConfigMap to the new CA; that a replica bootstrapped from the new
// Secret agrees; and that a ConfigMap edited by hand is restored.
func TestSyncAdoptsNewCA(t *testing.T) {
	oldCA, newCA := mustCA(t, t0), mustCA(t, t0)
	cs := newClient(caSecret(oldCA))
	b := mustBootstrap(t, cs, WithClock(fixed(t0)))
	oldCert := b.Certificate()
	replaceSecret(t, cs, caSecret(newCA))
	cs.ClearActions()
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	newPEM := string(newCA.CertPEM())
	type state struct {
		CA, Bundle, CM  string
		CCMFromNew      bool
		ConfigMapWrites int
	}
	got := state{
		CA:              string(b.CA().CertPEM()),
		Bundle:          string(b.BundlePEM()),
		CM:              bundleConfigMap(t, cs),
		CCMFromNew:      b.Certificate() != oldCert && b.Certificate().Leaf.CheckSignatureFrom(newCA.Certificate()) == nil,
		ConfigMapWrites: writes(cs, "configmaps", BundleConfigMapName),
	}
	want := state{CA: newPEM, Bundle: newPEM, CM: newPEM, CCMFromNew: true, ConfigMapWrites: 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after adopting the new CA (-want +got):\n%s", diff)
	}
	if b2 := mustBootstrap(t, cs, WithClock(fixed(t0))); !b2.CA().Certificate().Equal(b.CA().Certificate()) {
		t.Error("replicas disagree on the CA")
	}

	// A stale or hand-edited bundle is put back.
	cm, err := cs.CoreV1().ConfigMaps(testNS).Get(context.Background(), BundleConfigMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data[CACertKey] = string(oldCA.CertPEM())
	if _, err := cs.CoreV1().ConfigMaps(testNS).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if diff := cmp.Diff(newPEM, bundleConfigMap(t, cs)); diff != "" {
		t.Errorf("ConfigMap not restored (-want +got):\n%s", diff)
	}
}

// TestBootstrapAPIErrors proves that API errors reading or creating the CA
// degrade the bundle with a wrapped API error (Sync returns it, Run
// retries), while failures to publish the bundle or delete the legacy
// Secret do not: issuing still works.
func TestBootstrapAPIErrors(t *testing.T) {
	forbidden := func(resource, name string) error {
		return apierrors.NewForbidden(corev1.Resource(resource), name, errors.New("rbac"))
	}
	tests := []struct {
		name        string
		verb        string
		resource    string
		object      string
		wantProblem string // "" for a bundle that works
	}{
		{name: "get CA", verb: "get", resource: "secrets", object: CASecretName, wantProblem: "get secret " + testNS + "/" + CASecretName},
		{name: "create CA", verb: "create", resource: "secrets", object: CASecretName, wantProblem: "create secret " + testNS + "/" + CASecretName},
		{name: "get previous CA", verb: "get", resource: "secrets", object: PreviousCASecretName},
		{name: "delete legacy", verb: "delete", resource: "secrets", object: legacySpeakerSecretName},
		{name: "get bundle", verb: "get", resource: "configmaps", object: BundleConfigMapName},
		{name: "create bundle", verb: "create", resource: "configmaps", object: BundleConfigMapName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newClient()
			cs.PrependReactor(tc.verb, tc.resource, func(a k8stesting.Action) (bool, runtime.Object, error) {
				name := ""
				switch a := a.(type) {
				case k8stesting.GetAction:
					name = a.GetName()
				case k8stesting.DeleteAction:
					name = a.GetName()
				case k8stesting.CreateAction:
					name = a.GetObject().(metav1.Object).GetName()
				}
				if name != tc.object {
					return false, nil, nil
				}
				return true, nil, forbidden(tc.resource, name)
			})
			b := mustBootstrap(t, cs, WithClock(fixed(t0)))
			err := b.Sync(context.Background())
			if tc.wantProblem == "" {
				if err != nil || b.Problem() != "" || b.Certificate() == nil {
					t.Fatalf("Sync() = %v, Problem() = %q, want a working bundle", err, b.Problem())
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantProblem) || !apierrors.IsForbidden(err) {
				t.Errorf("Sync() error = %v, want a wrapped Forbidden containing %q", err, tc.wantProblem)
			}
			if !strings.Contains(b.Problem(), tc.wantProblem) {
				t.Errorf("Problem() = %q, want it to contain %q", b.Problem(), tc.wantProblem)
			}
		})
	}
}

// TestRun proves that Run renews the CCM certificate when due and returns
// when its context is cancelled.
func TestRun(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now), WithLeafLifetime(3*time.Hour), WithResyncInterval(time.Millisecond))
	ccm0 := b.Certificate()
	clk.Add(2*time.Hour + time.Minute)

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for b.Certificate() == ccm0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not renew the CCM certificate")
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the context was cancelled")
	}
}

// closed reports whether ch is closed.
func closed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// TestBundleChanged proves that Changed fires exactly when the CAs the
// bundle trusts or issues from change (a new current CA, a previous CA
// added or removed), which is when connected speakers must be renewed, and
// not on a plain sync, a CCM certificate renewal, a corrupt read or its
// repair with the same CA.
func TestBundleChanged(t *testing.T) {
	first, second := mustCA(t, t0), mustCA(t, t0)
	cs := newClient(caSecret(first))
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now), WithLeafLifetime(3*time.Hour))
	steps := []struct {
		name   string
		change func(t *testing.T)
		want   bool
	}{
		{name: "nothing changed", change: func(*testing.T) {}, want: false},
		{name: "CCM certificate renewed", change: func(*testing.T) { clk.Add(3 * time.Hour) }, want: false},
		{name: "CA corrupt", change: func(t *testing.T) { replaceSecret(t, cs, corruptCASecret()) }, want: false},
		{name: "CA repaired", change: func(t *testing.T) { replaceSecret(t, cs, caSecret(first)) }, want: false},
		{name: "rotation starts", change: func(t *testing.T) {
			replaceSecret(t, cs, caSecretNamed(PreviousCASecretName, first))
			replaceSecret(t, cs, caSecret(second))
		}, want: true},
		{name: "overlap ends", change: func(t *testing.T) { deleteSecret(t, cs, PreviousCASecretName) }, want: true},
	}
	for _, st := range steps {
		ch := b.Changed()
		st.change(t)
		_ = b.Sync(context.Background()) // the corrupt step fails, by design
		if got := closed(ch); got != st.want {
			t.Errorf("%s: Changed() fired = %t, want %t", st.name, got, st.want)
		}
		if closed(b.Changed()) {
			t.Errorf("%s: the next Changed() channel is already closed", st.name)
		}
	}
}

// TestRunWatchesSecrets proves that Run adopts a replaced CA Secret at once
// through its watch, not only at the next resync (here an hour away).
func TestRunWatchesSecrets(t *testing.T) {
	oldCA, newCA := mustCA(t, t0), mustCA(t, t0)
	cs := newClient(caSecret(oldCA))
	b := mustBootstrap(t, cs, WithClock(fixed(t0)), WithResyncInterval(time.Hour))
	changed := b.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.Run(ctx)
	}()
	defer func() {
		cancel()
		<-done
	}()
	deadline := time.Now().Add(10 * time.Second)
	for !b.CA().Certificate().Equal(newCA.Certificate()) {
		if time.Now().After(deadline) {
			t.Fatal("Run did not adopt the replaced CA Secret")
		}
		// Replace (again): an event before the watch started is missed.
		replaceSecret(t, cs, caSecret(newCA))
		time.Sleep(100 * time.Millisecond)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Error("Changed() did not fire on the adopted CA")
	}
}
