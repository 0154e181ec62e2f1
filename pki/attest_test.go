package pki

import (
	"context"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// enrolledPeer enrolls a speaker on node-a and returns its credentials
// and what the CCM learns of it in a new handshake.
func enrolledPeer(t *testing.T, cs *fake.Clientset, b *Bundle, tr *tokenReviewer, clk *clock) (*NodeCredentials, *Peer) {
	t.Helper()
	sp := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
	enroll(t, b, tr, sp)
	peer := dial(t, b, "node-a", sp)
	if !peer.Enrolled() {
		t.Fatal("not enrolled after enrollment")
	}
	return sp, peer
}

// TestRenewRequiresAttestation proves that Renew proves again what
// enrollment proved, with the token the speaker sends now: a TokenReview,
// then the pod (the same one the certificate was issued for, still there,
// on the node) and the Node. Any refusal but the API server's failure
// makes the CCM stop taking the current certificate as proof (the next
// handshake must enroll).
func TestRenewRequiresAttestation(t *testing.T) {
	otherPod := func(spec authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
		st := speakerStatus("node-a")
		st.User.Extra[podNameExtra] = []string{"ironlb-speaker-node-a-2"}
		st.User.Extra[podUIDExtra] = []string{string(testUID("ironlb-speaker-node-a-2"))}
		return st, nil
	}
	tests := []struct {
		name       string
		token      string
		review     func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)
		change     func(t *testing.T, cs *fake.Clientset)
		wantReason string // "" for renewed
		distrusted bool
	}{
		{name: "current token", token: "token:node-a"},
		{name: "no token", token: "", wantReason: RefusalNoToken, distrusted: true},
		{name: "invalid token", token: "garbage", wantReason: RefusalInvalidToken, distrusted: true},
		{name: "token of another node", token: "token:node-b", wantReason: RefusalWrongNode, distrusted: true},
		{name: "token of another pod on the node", token: "tok", review: otherPod, wantReason: RefusalPodGone, distrusted: true},
		{name: "pod deleted", token: "token:node-a", wantReason: RefusalPodGone, distrusted: true, change: func(t *testing.T, cs *fake.Clientset) {
			if err := cs.CoreV1().Pods(testNS).Delete(context.Background(), "ironlb-speaker-node-a", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "pod terminating", token: "token:node-a", wantReason: RefusalPodGone, distrusted: true, change: func(t *testing.T, cs *fake.Clientset) {
			p, err := cs.CoreV1().Pods(testNS).Get(context.Background(), "ironlb-speaker-node-a", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			p.DeletionTimestamp = &metav1.Time{Time: t0}
			if _, err := cs.CoreV1().Pods(testNS).Update(context.Background(), p, metav1.UpdateOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "Node deleted", token: "token:node-a", wantReason: RefusalNodeGone, distrusted: true, change: func(t *testing.T, cs *fake.Clientset) {
			if err := cs.CoreV1().Nodes().Delete(context.Background(), "node-a", metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
		}},
		{name: "TokenReview fails", token: "token:node-a", wantReason: RefusalTokenReviewFail, review: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
			return authenticationv1.TokenReviewStatus{}, errors.New("connection refused")
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newClient()
			tr := newTokenReviewer(cs)
			clk := newClock(t0)
			b := mustBootstrap(t, cs, WithClock(clk.Now))
			sp, peer := enrolledPeer(t, cs, b, tr, clk)
			was, _ := AttestationOf(peer.Leaf())
			if tc.review != nil {
				tr.set(tc.review)
			}
			if tc.change != nil {
				tc.change(t, cs)
			}

			creds, err := b.Renew(context.Background(), "node-a", peer, tc.token)

			if diff := cmp.Diff(tc.wantReason, RefusalOf(err)); diff != "" {
				t.Fatalf("refusal (-want +got):\n%s (error %v)", diff, err)
			}
			if got := b.isDistrusted(peer.Leaf()); got != tc.distrusted {
				t.Errorf("certificate distrusted after the renewal = %t, want %t", got, tc.distrusted)
			}
			if tc.wantReason != "" {
				return
			}
			leaf := mustParseCert(t, creds.CertPEM)
			if got, ok := AttestationOf(leaf); !ok || got != was {
				t.Errorf("renewed certificate attests %+v (%t), want %+v", got, ok, was)
			}
			if err := sp.Install(creds.CertPEM, creds.BundlePEM); err != nil {
				t.Errorf("Install: %v", err)
			}
		})
	}
}

// TestCheckRevokes proves that deleting the speaker's pod fires Revoked
// and fails Check for the connected speaker, and that the next handshake
// takes the speaker as not enrolled (it must enroll with a valid token);
// that a certificate without an attestation (issued by an older CCM) keeps
// its stream only to be attested at once (AttestationPending: Renew with a
// current token, as enrollment takes, or nothing); and that a certificate
// distrusted after a refused renewal does not authenticate.
func TestCheckRevokes(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	sp, peer := enrolledPeer(t, cs, b, tr, clk)
	if err := b.Check("node-a", peer); err != nil {
		t.Fatalf("Check of a live speaker: %v", err)
	}
	revoked := b.Revoked()
	if err := cs.CoreV1().Pods(testNS).Delete(context.Background(), "ironlb-speaker-node-a", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-revoked:
	case <-time.After(10 * time.Second):
		t.Fatal("Revoked did not fire when the speaker pod was deleted")
	}
	var r *Revocation
	if err := b.Check("node-a", peer); !errors.As(err, &r) || r.Reason != RevokedPodGone {
		t.Errorf("Check after the pod was deleted = %v, want a revocation %s", err, RevokedPodGone)
	}
	if dial(t, b, "node-a", sp).Enrolled() {
		t.Error("a speaker whose pod is gone is taken as enrolled")
	}

	t.Run("no attestation", func(t *testing.T) {
		old := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
		certPEM, err := b.CA().IssueFor(NodeIdentity("node-a"), old.key.Public(), NodeCertLifetime, clk.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := old.Install(certPEM, b.BundlePEM()); err != nil {
			t.Fatal(err)
		}
		peer := dial(t, b, "node-a", old)
		if !peer.Enrolled() || !peer.AttestationPending() {
			t.Fatalf("a certificate without attestation: enrolled %t, attestation pending %t; want both", peer.Enrolled(), peer.AttestationPending())
		}
		if !b.RenewalDue(peer).Equal(clk.Now()) {
			t.Errorf("RenewalDue = %s, want now: the attestation is pending", b.RenewalDue(peer))
		}
		tr.created = nil // the pod exists again
		creds, err := b.Renew(context.Background(), "node-a", peer, "token:node-a")
		if err != nil {
			t.Fatalf("Renew with the pod's token: %v", err)
		}
		if _, ok := AttestationOf(mustParseCert(t, creds.CertPEM)); !ok || peer.AttestationPending() {
			t.Errorf("renewed certificate attested %t, pending %t; want attested, not pending", ok, peer.AttestationPending())
		}
		// The pod was made again just now: once the watch saw it, the
		// attested certificate proves the node.
		deadline := time.Now().Add(5 * time.Second)
		for err := b.Check("node-a", peer); err != nil; err = b.Check("node-a", peer) {
			if time.Now().After(deadline) {
				t.Fatalf("Check after the attestation: %v", err)
			}
			time.Sleep(5 * time.Millisecond)
		}

		refused := dial(t, b, "node-a", old)
		if _, err := b.Renew(context.Background(), "node-a", refused, "garbage"); RefusalOf(err) != RefusalInvalidToken {
			t.Fatalf("Renew with garbage = %v, want %s", err, RefusalInvalidToken)
		}
		if dial(t, b, "node-a", old).Enrolled() {
			t.Error("a certificate without attestation whose renewal was refused is taken as proof of the node")
		}
	})
	t.Run("distrusted", func(t *testing.T) {
		tr.created = nil // the pod exists again
		sp, peer := enrolledPeer(t, cs, b, tr, clk)
		b.distrust(peer.Leaf())
		if dial(t, b, "node-a", sp).Enrolled() {
			t.Error("a certificate whose renewal was refused is taken as proof of the node")
		}
	})
}

// TestRefusalDistrustsNewestCertificate is issue 20, finding 4 (review,
// point 3): a stream opened with certificate A renews to B (the speaker
// installs B but keeps the stream); a later renewal on the same stream is
// refused. Then neither A nor B proves the node: B, the one the speaker
// presents now, must not outlive the refusal.
func TestRefusalDistrustsNewestCertificate(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	sp, peer := enrolledPeer(t, cs, b, tr, clk)
	first := peer.Leaf()
	creds, err := b.Renew(context.Background(), "node-a", peer, "token:node-a")
	if err != nil {
		t.Fatalf("first renewal: %v", err)
	}
	if err := sp.Install(creds.CertPEM, creds.BundlePEM); err != nil {
		t.Fatal(err)
	}
	newest := mustParseCert(t, creds.CertPEM)
	if !peer.Current().Equal(newest) {
		t.Fatal("the stream does not record the certificate it issued")
	}

	if _, err := b.Renew(context.Background(), "node-a", peer, "garbage"); RefusalOf(err) != RefusalInvalidToken {
		t.Fatalf("second renewal = %v, want refusal %s", err, RefusalInvalidToken)
	}
	for _, c := range []struct {
		name string
		cert *x509.Certificate
	}{{"the handshake's certificate", first}, {"the newest certificate issued on the stream", newest}} {
		if !b.isDistrusted(c.cert) {
			t.Errorf("%s is still trusted after the refusal", c.name)
		}
	}
	if err := b.Check("node-a", peer); err == nil {
		t.Error("Check of the refused stream passes")
	}
	if dial(t, b, "node-a", sp).Enrolled() {
		t.Error("the speaker presenting the newest certificate is taken as enrolled after the refusal")
	}
}

// TestTrustedCAs proves which CAs a speaker trusts for the CCM: those in
// both its mounted bundle and the bundle the CCM sent last, or the mounted
// ones alone when the two share none or none was sent. A sent bundle
// replaces the one before.
func TestTrustedCAs(t *testing.T) {
	a, b, c := mustCA(t, t0), mustCA(t, t0), mustCA(t, t0)
	cas := map[string]*CA{"a": a, "b": b, "c": c}
	pemOf := func(names ...string) []byte {
		var out []byte
		for _, n := range names {
			out = append(out, cas[n].CertPEM()...)
		}
		return out
	}
	tests := []struct {
		name    string
		mounted []string
		sent    [][]string // in order
		want    []string
	}{
		{name: "nothing sent", mounted: []string{"a", "b"}, want: []string{"a", "b"}},
		{name: "rotation starts before the kubelet", mounted: []string{"a"}, sent: [][]string{{"b", "a"}}, want: []string{"a"}},
		{name: "overlap", mounted: []string{"b", "a"}, sent: [][]string{{"b", "a"}}, want: []string{"a", "b"}},
		{name: "overlap ends before the kubelet", mounted: []string{"b", "a"}, sent: [][]string{{"b", "a"}, {"b"}}, want: []string{"b"}},
		{name: "a sent CA never added", mounted: []string{"b"}, sent: [][]string{{"a", "b"}}, want: []string{"b"}},
		{name: "sent bundle shares none", mounted: []string{"b"}, sent: [][]string{{"a"}}, want: []string{"b"}},
		{name: "replaced, not added to", mounted: []string{"a", "b", "c"}, sent: [][]string{{"a"}, {"b"}}, want: []string{"b"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sp := newSpeaker(t, "node-a", pemOf(tc.mounted...), fixed(t0))
			for _, s := range tc.sent {
				if err := sp.TrustBundle(pemOf(s...)); err != nil {
					t.Fatal(err)
				}
			}
			var got []string
			for _, n := range []string{"a", "b", "c"} {
				certPEM, _ := mustIssue(t, cas[n], CCMIdentity, time.Hour, t0)
				if verifyPeer([]*x509.Certificate{mustParseCert(t, certPEM)}, sp.pool, x509.ExtKeyUsageClientAuth, CCMIdentity, t0) == nil {
					got = append(got, n)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("trusted CAs (-want +got):\n%s", diff)
			}
		})
	}
	t.Run("refused bundles", func(t *testing.T) {
		sp := newSpeaker(t, "node-a", pemOf("a"), fixed(t0))
		leafPEM, _ := mustIssue(t, a, nodeA, time.Hour, t0)
		for name, bundle := range map[string][]byte{"empty": nil, "garbage": []byte("garbage"), "a leaf": leafPEM} {
			if err := sp.TrustBundle(bundle); err == nil {
				t.Errorf("%s: TrustBundle accepted it", name)
			}
		}
	})
}

// TestAttestationURI proves the attestation's URI round-trips and that
// parseAttestation takes nothing else.
func TestAttestationURI(t *testing.T) {
	a := Attestation{PodUID: testUID("pod"), NodeUID: testUID("node")}
	got, err := parseAttestation(a.URI().String())
	if err != nil || got != a {
		t.Fatalf("parseAttestation(%s) = %+v, %v; want %+v", a.URI(), got, err, a)
	}
	for _, bad := range []string{
		"", "urn:ironlb:pod:", attestationPrefix + string(a.PodUID),
		attestationPrefix + string(a.PodUID) + ":node:" + string(a.NodeUID) + ":x",
		attestationPrefix + "x:node:" + string(a.NodeUID),
		attestationPrefix + string(a.PodUID) + ":node:" + string(a.NodeUID) + "\n",
	} {
		if _, err := parseAttestation(bad); err == nil {
			t.Errorf("parseAttestation(%q) succeeded", bad)
		}
	}
}
