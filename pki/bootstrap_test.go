package pki

import (
	"context"
	"crypto/x509"
	"errors"
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
)

const testNS = "ironlb-system"

var secretsGVR = corev1.SchemeGroupVersion.WithResource("secrets")

// newClient returns a fake clientset whose Secrets behave like the API
// server with respect to resourceVersion: creates and updates assign a new
// version, and updates carrying a stale version fail with a Conflict.
func newClient(objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset()
	tracker := cs.Tracker()
	var (
		mu sync.Mutex
		rv int
	)
	create := func(s *corev1.Secret) error {
		rv++
		s.ResourceVersion = strconv.Itoa(rv)
		return tracker.Create(secretsGVR, s, s.Namespace)
	}
	for _, o := range objs {
		if err := create(o.(*corev1.Secret).DeepCopy()); err != nil {
			panic(err)
		}
	}
	cs.PrependReactor("create", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		s := a.(k8stesting.CreateAction).GetObject().(*corev1.Secret).DeepCopy()
		if s.Namespace == "" {
			s.Namespace = a.GetNamespace()
		}
		if err := create(s); err != nil {
			return true, nil, err
		}
		return true, s.DeepCopy(), nil
	})
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		mu.Lock()
		defer mu.Unlock()
		s := a.(k8stesting.UpdateAction).GetObject().(*corev1.Secret).DeepCopy()
		cur, err := tracker.Get(secretsGVR, a.GetNamespace(), s.Name)
		if err != nil {
			return true, nil, err
		}
		if got := cur.(*corev1.Secret).ResourceVersion; s.ResourceVersion != got {
			return true, nil, apierrors.NewConflict(secretsGVR.GroupResource(), s.Name,
				errors.New("resourceVersion "+s.ResourceVersion+" != "+got))
		}
		rv++
		s.ResourceVersion = strconv.Itoa(rv)
		if err := tracker.Update(secretsGVR, s, a.GetNamespace()); err != nil {
			return true, nil, err
		}
		return true, s.DeepCopy(), nil
	})
	return cs
}

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

func getSecret(t *testing.T, cs *fake.Clientset, name string) *corev1.Secret {
	t.Helper()
	s, err := cs.CoreV1().Secrets(testNS).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret %s: %v", name, err)
	}
	return s
}

func caSecret(ca *CA) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: CASecretName, Namespace: testNS},
		Type:       corev1.SecretTypeOpaque,
		Data:       map[string][]byte{CACertKey: ca.CertPEM(), CAKeyKey: ca.KeyPEM()},
	}
}

func speakerSecret(caPEM, certPEM, keyPEM []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: SpeakerSecretName, Namespace: testNS, Labels: map[string]string{"keep": "me"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{CACertKey: caPEM, TLSCertKey: certPEM, TLSKeyKey: keyPEM},
	}
}

func countActions(cs *fake.Clientset, verb, name string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() != verb || a.GetResource().Resource != "secrets" {
			continue
		}
		var obj runtime.Object
		switch a := a.(type) {
		case k8stesting.CreateAction:
			obj = a.GetObject()
		case k8stesting.UpdateAction:
			obj = a.GetObject()
		}
		if s, ok := obj.(*corev1.Secret); ok && s.Name == name {
			n++
		}
	}
	return n
}

// checkSecrets verifies that the Secrets in cs are consistent with each
// other and with b, and returns the CA and speaker Secrets.
func checkSecrets(t *testing.T, cs *fake.Clientset, b *Bundle, now time.Time) (caS, spS *corev1.Secret) {
	t.Helper()
	caS = getSecret(t, cs, CASecretName)
	spS = getSecret(t, cs, SpeakerSecretName)
	ca, err := parseCA(caS.Data[CACertKey], caS.Data[CAKeyKey], now)
	if err != nil {
		t.Fatalf("CA secret does not parse: %v", err)
	}
	type summary struct {
		CAType, SpeakerType corev1.SecretType
		SpeakerCA           string
		BundleCA            string
		SpeakerReason       string
		CCMVerify           string
	}
	_, reason := evaluateSpeakerSecret(spS, ca, now)
	ccmErr := ""
	if b != nil {
		if err := verifyPeer([]*x509.Certificate{b.Certificate().Leaf}, ca.Pool(), x509.ExtKeyUsageClientAuth, CCMIdentity, now); err != nil {
			ccmErr = err.Error()
		}
	}
	got := summary{
		CAType:        caS.Type,
		SpeakerType:   spS.Type,
		SpeakerCA:     string(spS.Data[CACertKey]),
		SpeakerReason: reason,
		CCMVerify:     ccmErr,
	}
	want := summary{
		CAType:      corev1.SecretTypeOpaque,
		SpeakerType: corev1.SecretTypeTLS,
		SpeakerCA:   string(caS.Data[CACertKey]),
	}
	if b != nil {
		got.BundleCA = string(b.CA().CertPEM())
		want.BundleCA = string(caS.Data[CACertKey])
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("secrets inconsistent (-want +got):\n%s", diff)
	}
	return caS, spS
}

func TestBootstrapCreatesSecrets(t *testing.T) {
	cs := newClient()
	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	caS, spS := checkSecrets(t, cs, b, t0)
	leaf := mustParseCert(t, spS.Data[TLSCertKey])
	got := map[string]any{
		"caKeys":        len(caS.Data),
		"speakerKeys":   len(spS.Data),
		"speakerID":     IdentityOf(leaf),
		"speakerAfter":  leaf.NotAfter,
		"ccmID":         IdentityOf(b.Certificate().Leaf),
		"managedBy":     caS.Labels["app.kubernetes.io/managed-by"],
		"ccmNotStored":  countActions(cs, "create", "") + countActions(cs, "update", ""),
		"createActions": countActions(cs, "create", CASecretName) + countActions(cs, "create", SpeakerSecretName),
	}
	want := map[string]any{
		"caKeys":        2,
		"speakerKeys":   3,
		"speakerID":     SpeakerIdentity,
		"speakerAfter":  t0.Add(DefaultLeafLifetime),
		"ccmID":         CCMIdentity,
		"managedBy":     "ironlb",
		"ccmNotStored":  0,
		"createActions": 2,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Bootstrap result mismatch (-want +got):\n%s", diff)
	}
}

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

func TestBootstrapIsIdempotent(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b1, err := Bootstrap(context.Background(), cs, testNS, WithClock(clk.Now))
	if err != nil {
		t.Fatalf("first Bootstrap: %v", err)
	}
	caBefore, spBefore := checkSecrets(t, cs, b1, t0)
	cs.ClearActions()

	clk.Add(24 * time.Hour) // a restart a day later
	b2, err := Bootstrap(context.Background(), cs, testNS, WithClock(clk.Now))
	if err != nil {
		t.Fatalf("second Bootstrap: %v", err)
	}
	caAfter, spAfter := checkSecrets(t, cs, b2, clk.Now())
	if diff := cmp.Diff(caBefore, caAfter); diff != "" {
		t.Errorf("CA secret changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(spBefore, spAfter); diff != "" {
		t.Errorf("speaker secret changed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(b1.CA().CertPEM(), b2.CA().CertPEM()); diff != "" {
		t.Errorf("bundles use different CAs (-want +got):\n%s", diff)
	}
	if n := countActions(cs, "create", CASecretName) + countActions(cs, "update", SpeakerSecretName) + countActions(cs, "create", SpeakerSecretName); n != 0 {
		t.Errorf("second Bootstrap wrote %d times, want 0", n)
	}
}

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
					bundles[i], errs[i] = Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
				})
			}
			close(start)
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: Bootstrap: %v", i, err)
				}
			}
			for i, b := range bundles {
				checkSecrets(t, cs, b, t0) // every replica uses the stored CA
				if i > 0 && !b.CA().Certificate().Equal(bundles[0].CA().Certificate()) {
					t.Errorf("replica %d uses a different CA than replica 0", i)
				}
			}
			if n := countActions(cs, "create", CASecretName); n < 1 || n > replicas {
				t.Errorf("CA create attempts = %d, want 1..%d", n, replicas)
			}
		})
	}
}

func TestBootstrapInvalidCASecret(t *testing.T) {
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

			_, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
			if err == nil {
				t.Fatal("Bootstrap succeeded with an invalid CA secret")
			}
			for _, want := range []string{testNS + "/" + CASecretName, "will not be replaced", tc.wantErr} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("Bootstrap() error = %q, want it to contain %q", err, want)
				}
			}
			if diff := cmp.Diff(before, getSecret(t, cs, CASecretName)); diff != "" {
				t.Errorf("CA secret modified (-want +got):\n%s", diff)
			}
			if n := countActions(cs, "update", CASecretName) + countActions(cs, "create", CASecretName) + countActions(cs, "create", SpeakerSecretName); n != 0 {
				t.Errorf("Bootstrap wrote %d times, want 0", n)
			}
		})
	}
}

func TestBootstrapSpeakerSecret(t *testing.T) {
	ca := mustCA(t, t0)
	other := mustCA(t, t0)
	now := t0.Add(30 * 24 * time.Hour)

	freshCert, freshKey := mustIssue(t, ca, SpeakerIdentity, 0, now.Add(-time.Hour))
	shortCert, shortKey := mustIssue(t, ca, SpeakerIdentity, 3*time.Hour, now.Add(-2*time.Hour-time.Minute))
	youngCert, youngKey := mustIssue(t, ca, SpeakerIdentity, 3*time.Hour, now.Add(-time.Hour))
	expiredCert, expiredKey := mustIssue(t, ca, SpeakerIdentity, time.Hour, now.Add(-2*time.Hour))
	foreignCert, foreignKey := mustIssue(t, other, SpeakerIdentity, 0, now)
	ccmCert, ccmKey := mustIssue(t, ca, CCMIdentity, 0, now)
	wrongIDCert, wrongIDKey := mustIssue(t, ca, "spiffe://ironlb.dev/other", 0, now)

	tests := []struct {
		name        string
		secret      *corev1.Secret
		wantReissue bool
	}{
		{name: "fresh certificate kept", secret: speakerSecret(ca.CertPEM(), freshCert, freshKey)},
		{name: "short-lived certificate before two thirds kept", secret: speakerSecret(ca.CertPEM(), youngCert, youngKey)},
		{name: "missing", secret: nil, wantReissue: true},
		{name: "last third of lifetime", secret: speakerSecret(ca.CertPEM(), shortCert, shortKey), wantReissue: true},
		{name: "expired", secret: speakerSecret(ca.CertPEM(), expiredCert, expiredKey), wantReissue: true},
		{name: "signed by another CA", secret: speakerSecret(other.CertPEM(), foreignCert, foreignKey), wantReissue: true},
		{name: "foreign cert with current ca.crt", secret: speakerSecret(ca.CertPEM(), foreignCert, foreignKey), wantReissue: true},
		{name: "stale ca.crt", secret: speakerSecret(other.CertPEM(), freshCert, freshKey), wantReissue: true},
		{name: "unparsable tls.crt", secret: speakerSecret(ca.CertPEM(), []byte("junk"), freshKey), wantReissue: true},
		{name: "key mismatch", secret: speakerSecret(ca.CertPEM(), freshCert, shortKey), wantReissue: true},
		{name: "CCM certificate", secret: speakerSecret(ca.CertPEM(), ccmCert, ccmKey), wantReissue: true},
		{name: "wrong identity", secret: speakerSecret(ca.CertPEM(), wrongIDCert, wrongIDKey), wantReissue: true},
		{name: "empty data", secret: speakerSecret(nil, nil, nil), wantReissue: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			objs := []runtime.Object{caSecret(ca)}
			if tc.secret != nil {
				objs = append(objs, tc.secret)
			}
			cs := newClient(objs...)
			b, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return now }))
			if err != nil {
				t.Fatalf("Bootstrap: %v", err)
			}
			_, got := checkSecrets(t, cs, b, now)
			if tc.secret == nil {
				return
			}
			reissued := string(got.Data[TLSCertKey]) != string(tc.secret.Data[TLSCertKey])
			if reissued != tc.wantReissue {
				t.Errorf("reissued = %t, want %t", reissued, tc.wantReissue)
			}
			if tc.wantReissue {
				if diff := cmp.Diff(now.Add(DefaultLeafLifetime), mustParseCert(t, got.Data[TLSCertKey]).NotAfter); diff != "" {
					t.Errorf("reissued NotAfter mismatch (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff(tc.secret.Labels, got.Labels); diff != "" {
					t.Errorf("labels not preserved on update (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestBootstrapSpeakerSecretWrongType(t *testing.T) {
	ca := mustCA(t, t0)
	s := speakerSecret(nil, nil, nil)
	s.Type = corev1.SecretTypeOpaque
	cs := newClient(caSecret(ca), s)
	_, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
	if err == nil || !strings.Contains(err.Error(), SpeakerSecretName) || !strings.Contains(err.Error(), "kubernetes.io/tls") {
		t.Fatalf("Bootstrap() error = %v, want a type error naming %s", err, SpeakerSecretName)
	}
}

// TestBootstrapSpeakerConflict simulates another replica renewing the
// speaker Secret between our read and our update.
func TestBootstrapSpeakerConflict(t *testing.T) {
	ca := mustCA(t, t0)
	now := t0.Add(time.Hour)
	oldCert, oldKey := mustIssue(t, ca, SpeakerIdentity, time.Hour, t0) // expired at now
	theirCert, theirKey := mustIssue(t, ca, SpeakerIdentity, 0, now)
	cs := newClient(caSecret(ca), speakerSecret(ca.CertPEM(), oldCert, oldKey))

	var raced atomic.Bool
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced.Swap(true) {
			return false, nil, nil
		}
		// The other replica wins: store its certificate with a new version.
		obj, err := cs.Tracker().Get(secretsGVR, testNS, SpeakerSecretName)
		if err != nil {
			return true, nil, err
		}
		cur := obj.(*corev1.Secret).DeepCopy()
		cur.Data[TLSCertKey], cur.Data[TLSKeyKey] = theirCert, theirKey
		cur.ResourceVersion = "9999"
		if err := cs.Tracker().Update(secretsGVR, cur, testNS); err != nil {
			return true, nil, err
		}
		// Our update, based on the old version, now falls through to the
		// resourceVersion-checking reactor and conflicts.
		return false, nil, nil
	})

	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return now }))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	_, got := checkSecrets(t, cs, b, now)
	if diff := cmp.Diff(string(theirCert), string(got.Data[TLSCertKey])); diff != "" {
		t.Errorf("speaker certificate of the winning replica replaced (-want +got):\n%s", diff)
	}
	if n := countActions(cs, "update", SpeakerSecretName); n != 1 {
		t.Errorf("update attempts = %d, want 1 (re-evaluation must see the fresh certificate)", n)
	}
}

func TestBootstrapSpeakerPersistentConflict(t *testing.T) {
	ca := mustCA(t, t0)
	cs := newClient(caSecret(ca), speakerSecret(nil, nil, nil))
	cs.PrependReactor("update", "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewConflict(secretsGVR.GroupResource(), SpeakerSecretName, errors.New("always"))
	})
	_, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Fatalf("Bootstrap() error = %v, want a giving up error", err)
	}
}

func TestBootstrapAPIErrors(t *testing.T) {
	tests := []struct {
		name    string
		verb    string
		secret  string
		wantErr string
	}{
		{name: "get CA", verb: "get", secret: CASecretName, wantErr: "get secret " + testNS + "/" + CASecretName},
		{name: "create CA", verb: "create", secret: CASecretName, wantErr: "create secret " + testNS + "/" + CASecretName},
		{name: "get speaker", verb: "get", secret: SpeakerSecretName, wantErr: "get secret " + testNS + "/" + SpeakerSecretName},
		{name: "create speaker", verb: "create", secret: SpeakerSecretName, wantErr: "create secret " + testNS + "/" + SpeakerSecretName},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newClient()
			cs.PrependReactor(tc.verb, "secrets", func(a k8stesting.Action) (bool, runtime.Object, error) {
				name := ""
				switch a := a.(type) {
				case k8stesting.GetAction:
					name = a.GetName()
				case k8stesting.CreateAction:
					name = a.GetObject().(*corev1.Secret).Name
				}
				if name != tc.secret {
					return false, nil, nil
				}
				return true, nil, apierrors.NewForbidden(secretsGVR.GroupResource(), name, errors.New("rbac"))
			})
			_, err := Bootstrap(context.Background(), cs, testNS)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !apierrors.IsForbidden(err) {
				t.Fatalf("Bootstrap() error = %v, want a wrapped Forbidden containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestSyncRenewal drives the renewal logic with an injected clock.
func TestSyncRenewal(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(clk.Now), WithLeafLifetime(3*time.Hour))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	_, sp0 := checkSecrets(t, cs, b, clk.Now())
	ccm0 := b.Certificate()

	// After one hour nothing is due.
	clk.Add(time.Hour)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	_, sp1 := checkSecrets(t, cs, b, clk.Now())
	if diff := cmp.Diff(sp0.Data, sp1.Data); diff != "" {
		t.Errorf("speaker secret reissued too early (-want +got):\n%s", diff)
	}
	if b.Certificate() != ccm0 {
		t.Error("CCM certificate renewed too early")
	}
	if d := b.nextWait(); d <= 0 || d > 2*time.Hour {
		t.Errorf("nextWait() = %v, want within the renewal window", d)
	}

	// Past two thirds of the lifetime both are renewed.
	clk.Add(time.Hour + 5*time.Minute)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	_, sp2 := checkSecrets(t, cs, b, clk.Now())
	if string(sp2.Data[TLSCertKey]) == string(sp0.Data[TLSCertKey]) {
		t.Error("speaker certificate not reissued in the last third of its lifetime")
	}
	if b.Certificate() == ccm0 {
		t.Error("CCM certificate not renewed in the last third of its lifetime")
	}
	if diff := cmp.Diff(clk.Now().Add(3*time.Hour), b.Certificate().Leaf.NotAfter); diff != "" {
		t.Errorf("renewed CCM NotAfter mismatch (-want +got):\n%s", diff)
	}
}

// TestSyncAdoptsNewCA checks that deleting the Secrets rotates the CA in a
// running bundle instead of the old replica fighting the new CA.
func TestSyncAdoptsNewCA(t *testing.T) {
	cs := newClient()
	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	oldCA := b.CA()
	for _, name := range []string{CASecretName, SpeakerSecretName} {
		if err := cs.CoreV1().Secrets(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A restarted replica creates the new CA ...
	b2, err := Bootstrap(context.Background(), cs, testNS, WithClock(func() time.Time { return t0 }))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	// ... and the old replica adopts it on its next sync.
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	checkSecrets(t, cs, b, t0)
	if b.CA().Certificate().Equal(oldCA.Certificate()) {
		t.Error("bundle still uses the old CA")
	}
	if !b.CA().Certificate().Equal(b2.CA().Certificate()) {
		t.Error("replicas disagree on the CA")
	}
}

func TestRun(t *testing.T) {
	cs := newClient()
	clk := newClock(t0)
	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(clk.Now), WithLeafLifetime(3*time.Hour), WithResyncInterval(time.Millisecond))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
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
	checkSecrets(t, cs, b, clk.Now())
}
