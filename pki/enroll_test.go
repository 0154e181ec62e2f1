package pki

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/component-base/metrics/testutil"
)

// speakerUser is the username of tokens of the speakers' ServiceAccount.
const speakerUser = "system:serviceaccount:" + testNS + ":" + DefaultSpeakerServiceAccount

// tokenReviewer answers the TokenReviews of a fake clientset like the API
// server would for projected speaker tokens "token:<node>", unless review
// is set, and records the requests.
type tokenReviewer struct {
	mu       sync.Mutex
	requests []authenticationv1.TokenReviewSpec
	created  map[string]bool // pods ensureObjects created
	review   func(spec authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)
}

func newTokenReviewer(cs *fake.Clientset) *tokenReviewer {
	tr := &tokenReviewer{}
	cs.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		req := a.(k8stesting.CreateAction).GetObject().(*authenticationv1.TokenReview)
		tr.mu.Lock()
		tr.requests = append(tr.requests, req.Spec)
		review := tr.review
		tr.mu.Unlock()
		if review == nil {
			review = reviewSpeakerToken
		}
		st, err := review(req.Spec)
		if err != nil {
			return true, nil, err
		}
		tr.ensureObjects(cs, st)
		out := req.DeepCopy()
		out.Status = st
		return true, out, nil
	})
	return tr
}

// ensureObjects creates, the first time a token names them, the pod and
// the Node an authenticated token is bound to, as they exist in a cluster
// whose speaker pod got that token. Deleted later, they stay deleted.
func (tr *tokenReviewer) ensureObjects(cs *fake.Clientset, st authenticationv1.TokenReviewStatus) {
	pods, nodes := st.User.Extra[podNameExtra], st.User.Extra[nodeNameExtra]
	if !st.Authenticated || len(pods) != 1 || len(nodes) != 1 {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.created == nil {
		tr.created = map[string]bool{}
	}
	if tr.created[pods[0]] {
		return
	}
	tr.created[pods[0]] = true
	sa := st.User.Username[strings.LastIndex(st.User.Username, ":")+1:]
	_ = cs.Tracker().Add(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: pods[0], Namespace: testNS, UID: types.UID(firstOr(st.User.Extra[podUIDExtra], string(testUID(pods[0]))))},
		Spec:       corev1.PodSpec{NodeName: nodes[0], ServiceAccountName: sa},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	})
	_ = cs.Tracker().Add(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodes[0], UID: types.UID(firstOr(st.User.Extra[nodeUIDExtra], string(testUID(nodes[0]))))}})
}

func firstOr(v authenticationv1.ExtraValue, def string) string {
	if len(v) > 0 {
		return v[0]
	}
	return def
}

// testUID is a UID for name, the same every time.
func testUID(name string) types.UID {
	h := sha256.Sum256([]byte(name))
	x := hex.EncodeToString(h[:16])
	return types.UID(x[:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32])
}

func (tr *tokenReviewer) set(review func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.review, tr.requests = review, nil
}

func (tr *tokenReviewer) requested() []authenticationv1.TokenReviewSpec {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.requests
}

// speakerStatus is the TokenReview status of a valid projected token of
// a speaker pod on node.
func speakerStatus(node string) authenticationv1.TokenReviewStatus {
	return authenticationv1.TokenReviewStatus{
		Authenticated: true,
		Audiences:     []string{SpeakerAudience},
		User: authenticationv1.UserInfo{
			Username: speakerUser,
			Extra: map[string]authenticationv1.ExtraValue{
				nodeNameExtra: {node},
				nodeUIDExtra:  {string(testUID(node))},
				podNameExtra:  {"ironlb-speaker-" + node},
				podUIDExtra:   {string(testUID("ironlb-speaker-" + node))},
			},
		},
	}
}

func reviewSpeakerToken(spec authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
	node, ok := strings.CutPrefix(spec.Token, "token:")
	if !ok {
		return authenticationv1.TokenReviewStatus{Error: "invalid bearer token"}, nil
	}
	return speakerStatus(node), nil
}

// dial handshakes the CCM with sp as node and returns what the CCM learned.
func dial(t *testing.T, b *Bundle, node string, sp *NodeCredentials) *Peer {
	t.Helper()
	peer := &Peer{}
	res := handshake(t, sp.ServerTLSConfig(), b.ClientTLSConfig(node, peer))
	if res.clientErr != nil || res.serverErr != nil {
		t.Fatalf("handshake with %s: client: %v, server: %v", node, res.clientErr, res.serverErr)
	}
	return peer
}

// enroll runs the enrollment of sp as the CCM's speaker stream does: dial,
// Enroll with the speaker's token, Install.
func enroll(t *testing.T, b *Bundle, tr *tokenReviewer, sp *NodeCredentials) {
	t.Helper()
	peer := dial(t, b, sp.node, sp)
	tok, err := sp.EnrollmentToken()
	if err != nil {
		t.Fatal(err)
	}
	creds, err := b.Enroll(context.Background(), sp.node, peer, tok)
	if err != nil {
		t.Fatalf("Enroll(%s): %v", sp.node, err)
	}
	if err := sp.Install(creds.CertPEM, creds.BundlePEM); err != nil {
		t.Fatalf("Install(%s): %v", sp.node, err)
	}
	// The pod the token named was just made (ensureObjects): wait until
	// the CCM's watch saw it, as it has long before a real pod's speaker
	// enrolls.
	leaf := mustParseCert(t, creds.CertPEM)
	deadline := time.Now().Add(5 * time.Second)
	for err := b.checkLive(sp.node, leaf); err != nil; err = b.checkLive(sp.node, leaf) {
		if time.Now().After(deadline) {
			t.Fatalf("the enrolled speaker's pod is not live: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestEnroll proves that Enroll certifies the key the speaker used in the
// handshake, for the node dialled, only when a TokenReview proves the token
// is a speaker's projected token (audience SpeakerAudience, the speakers'
// ServiceAccount in the CCM's namespace) bound to a pod on that node, and
// otherwise refuses with the matching reason, counted in
// ironlb_speaker_enrollments_total.
func TestEnroll(t *testing.T) {
	ok := func(st authenticationv1.TokenReviewStatus) func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
		return func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) { return st, nil }
	}
	with := func(f func(*authenticationv1.TokenReviewStatus)) authenticationv1.TokenReviewStatus {
		st := speakerStatus("node-a")
		f(&st)
		return st
	}
	tests := []struct {
		name       string
		token      string
		sa         string // WithSpeakerServiceAccount, if set
		review     func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error)
		wantReason string // "" for success
		wantDetail string
	}{
		{name: "valid token", token: "tok", review: ok(speakerStatus("node-a"))},
		{name: "custom service account", token: "tok", sa: "lb-speaker",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.User.Username = "system:serviceaccount:" + testNS + ":lb-speaker"
			}))},
		{name: "no token", token: "", wantReason: RefusalNoToken, wantDetail: "--token-file"},
		{name: "unauthenticated", token: "tok", review: ok(authenticationv1.TokenReviewStatus{Error: "token expired"}), wantReason: RefusalInvalidToken, wantDetail: "token expired"},
		{name: "wrong audience", token: "tok",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.Audiences = []string{"https://kubernetes.default.svc"}
			})), wantReason: RefusalInvalidToken, wantDetail: "not authenticated for audience " + SpeakerAudience},
		{name: "other service account", token: "tok",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.User.Username = "system:serviceaccount:" + testNS + ":default"
			})), wantReason: RefusalWrongAccount, wantDetail: speakerUser},
		{name: "speaker account in another namespace", token: "tok",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.User.Username = "system:serviceaccount:other:" + DefaultSpeakerServiceAccount
			})), wantReason: RefusalWrongAccount, wantDetail: speakerUser},
		{name: "not the custom service account", token: "tok", sa: "lb-speaker", review: ok(speakerStatus("node-a")),
			wantReason: RefusalWrongAccount, wantDetail: "lb-speaker"},
		{name: "token not bound to a node", token: "tok",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.User.Extra = nil
			})), wantReason: RefusalNoNodeInToken, wantDetail: nodeNameExtra},
		{name: "two nodes", token: "tok",
			review: ok(with(func(st *authenticationv1.TokenReviewStatus) {
				st.User.Extra[nodeNameExtra] = []string{"node-a", "node-b"}
			})), wantReason: RefusalNoNodeInToken, wantDetail: nodeNameExtra},
		{name: "token of another node", token: "tok", review: ok(speakerStatus("node-b")), wantReason: RefusalWrongNode, wantDetail: `token belongs to pod [ironlb-speaker-node-b] on node "node-b"`},
		{name: "token review fails", token: "tok",
			review: func(authenticationv1.TokenReviewSpec) (authenticationv1.TokenReviewStatus, error) {
				return authenticationv1.TokenReviewStatus{}, errors.New("connection refused")
			}, wantReason: RefusalTokenReviewFail, wantDetail: "connection refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs := newClient()
			tr := newTokenReviewer(cs)
			tr.set(tc.review)
			clk := newClock(t0)
			opts := []Option{WithClock(clk.Now)}
			if tc.sa != "" {
				opts = append(opts, WithSpeakerServiceAccount(tc.sa))
			}
			b := mustBootstrap(t, cs, opts...)
			sp := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
			peer := dial(t, b, "node-a", sp)
			result := tc.wantReason
			if result == "" {
				result = "Enrolled"
			}
			counter := enrollments.WithLabelValues(result)
			before, err := testutil.GetCounterMetricValue(counter)
			if err != nil {
				t.Fatal(err)
			}

			creds, err := b.Enroll(context.Background(), "node-a", peer, tc.token)

			after, _ := testutil.GetCounterMetricValue(counter)
			if diff := cmp.Diff(1.0, after-before); diff != "" {
				t.Errorf("ironlb_speaker_enrollments_total{result=%q} increment (-want +got):\n%s", result, diff)
			}
			var wantRequests []authenticationv1.TokenReviewSpec
			if tc.token != "" {
				wantRequests = []authenticationv1.TokenReviewSpec{{Token: tc.token, Audiences: []string{SpeakerAudience}}}
			}
			if diff := cmp.Diff(wantRequests, tr.requested()); diff != "" {
				t.Errorf("TokenReview requests (-want +got):\n%s", diff)
			}
			if tc.wantReason != "" {
				if diff := cmp.Diff(tc.wantReason, RefusalOf(err)); diff != "" {
					t.Errorf("refusal reason (-want +got):\n%s (error %v)", diff, err)
				}
				if err == nil || !strings.Contains(err.Error(), tc.wantDetail) {
					t.Errorf("Enroll() error = %v, want it to contain %q", err, tc.wantDetail)
				}
				if creds != nil {
					t.Errorf("Enroll() refused but returned credentials")
				}
				return
			}
			if err != nil {
				t.Fatalf("Enroll: %v", err)
			}
			leaf := mustParseCert(t, creds.CertPEM)
			type props struct {
				CertifiesSpeakerKey bool
				Identity            string
				Verifies            string
				NotAfter            time.Time
				Bundle              string
			}
			verr := ""
			if err := verifyPeer([]*x509.Certificate{leaf}, b.CA().Pool(), x509.ExtKeyUsageServerAuth, nodeA, clk.Now()); err != nil {
				verr = err.Error()
			}
			got := props{
				CertifiesSpeakerKey: sp.key.PublicKey.Equal(leaf.PublicKey),
				Identity:            IdentityOf(leaf),
				Verifies:            verr,
				NotAfter:            leaf.NotAfter,
				Bundle:              string(creds.BundlePEM),
			}
			want := props{CertifiesSpeakerKey: true, Identity: nodeA, NotAfter: t0.Add(NodeCertLifetime), Bundle: string(b.BundlePEM())}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("issued credentials mismatch (-want +got):\n%s", diff)
			}
			if err := sp.Install(creds.CertPEM, creds.BundlePEM); err != nil {
				t.Errorf("the speaker refuses its own enrollment: %v", err)
			}
		})
	}
}

// TestEnrollErrors proves that Enroll needs a recorded handshake and a
// usable CA, and that Renew is only for an enrolled peer.
func TestEnrollErrors(t *testing.T) {
	t.Run("no handshake", func(t *testing.T) {
		cs := newClient()
		tr := newTokenReviewer(cs)
		b := mustBootstrap(t, cs, WithClock(fixed(t0)))
		_, err := b.Enroll(context.Background(), "node-a", &Peer{}, "token:node-a")
		if err == nil || !strings.Contains(err.Error(), "no handshake recorded") {
			t.Errorf("Enroll() error = %v, want no handshake recorded", err)
		}
		if n := len(tr.requested()); n != 0 {
			t.Errorf("%d TokenReviews without a handshake, want 0", n)
		}
	})
	t.Run("degraded bundle", func(t *testing.T) {
		cs := newClient(corruptCASecret())
		newTokenReviewer(cs)
		b := mustBootstrap(t, cs, WithClock(fixed(t0)))
		sp := newSpeaker(t, "node-a", mustCA(t, t0).CertPEM(), fixed(t0))
		peer := &Peer{}
		peer.set(false, sp.self.Leaf)
		counter := enrollments.WithLabelValues("IssueFailed")
		before, _ := testutil.GetCounterMetricValue(counter)
		_, err := b.Enroll(context.Background(), "node-a", peer, "token:node-a")
		if err == nil || !strings.Contains(err.Error(), "no CA to issue from") || RefusalOf(err) != "" {
			t.Errorf("Enroll() error = %v, want no CA to issue from (not a refusal)", err)
		}
		if after, _ := testutil.GetCounterMetricValue(counter); after-before != 1 {
			t.Errorf("IssueFailed count increased by %v, want 1", after-before)
		}
	})
	t.Run("renew not enrolled", func(t *testing.T) {
		cs := newClient()
		b := mustBootstrap(t, cs, WithClock(fixed(t0)))
		sp := newSpeaker(t, "node-a", b.BundlePEM(), fixed(t0))
		peer := dial(t, b, "node-a", sp)
		if _, err := b.Renew(context.Background(), "node-a", peer, "token:node-a"); err == nil || !strings.Contains(err.Error(), "not enrolled") {
			t.Errorf("Renew() error = %v, want not enrolled", err)
		}
	})
}

// TestRefusalOf proves that RefusalOf finds the reason through wrapping
// and is empty for other errors.
func TestRefusalOf(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want string
	}{
		{name: "nil", err: nil, want: ""},
		{name: "other", err: errors.New("x"), want: ""},
		{name: "refusal", err: &EnrollmentRefusal{Reason: RefusalWrongNode}, want: RefusalWrongNode},
		{name: "wrapped", err: errors.Join(errors.New("stream"), &EnrollmentRefusal{Reason: RefusalNoToken}), want: RefusalNoToken},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, RefusalOf(tc.err)); diff != "" {
				t.Errorf("RefusalOf() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}
