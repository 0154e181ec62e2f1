package speakers

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/pki"
	"github.com/ironlb/ironlb/test/controlplane"
)

// realNS is IronLB's namespace on the real API server.
const realNS = "ironlb-system"

// realEnv is env on a real kube-apiserver: real TokenReviews of projected
// tokens bound to real Pods (which never run: the API server only needs
// them to exist, on their node).
type realEnv struct {
	*env
	cp *controlplane.ControlPlane
}

func newRealEnv(t *testing.T) *realEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("starts a kube-apiserver")
	}
	cp := controlplane.ForTest(t)
	ctx := context.Background()
	if _, err := cp.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: realNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: pki.DefaultSpeakerServiceAccount, Namespace: realNS}, AutomountServiceAccountToken: ptr.To(false)}
	if _, err := cp.Client.CoreV1().ServiceAccounts(realNS).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	return &realEnv{env: &env{t: t, speakers: map[string]*testSpeaker{}}, cp: cp}
}

// bootstrap makes the CCM's bundle on the real API server (its watches
// end with the test) and mounts its CA bundle for the speakers.
func (r *realEnv) bootstrap(opts ...pki.Option) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r.t.Cleanup(cancel)
	b, err := pki.Bootstrap(ctx, r.cp.Client, realNS, opts...)
	if err != nil {
		r.t.Fatal(err)
	}
	r.bundle = b
	r.caFile = filepath.Join(r.t.TempDir(), "ca.crt")
	if err := pki.WriteBundle(r.caFile, b.BundlePEM()); err != nil {
		r.t.Fatal(err)
	}
}

// speakerPod makes node (a Node object) and its speaker Pod, and returns
// the speaker's credentials with a projected token bound to that Pod, and
// the token's file.
func (r *realEnv) speakerPod(node string) (*pki.NodeCredentials, string) {
	r.t.Helper()
	ctx := context.Background()
	cs := r.cp.Client.CoreV1()
	if _, err := cs.Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}}, metav1.CreateOptions{}); err != nil {
		r.t.Fatal(err)
	}
	pod, err := cs.Pods(realNS).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "ironlb-speaker-" + node, Namespace: realNS},
		Spec: corev1.PodSpec{
			NodeName: node, ServiceAccountName: pki.DefaultSpeakerServiceAccount, AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "speaker", Image: "ironlb-speaker"}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	tr, err := cs.ServiceAccounts(realNS).CreateToken(ctx, pki.DefaultSpeakerServiceAccount, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			Audiences:         []string{pki.SpeakerAudience},
			ExpirationSeconds: ptr.To[int64](3600),
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	tokenFile := filepath.Join(r.t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tr.Status.Token), 0o600); err != nil {
		r.t.Fatal(err)
	}
	creds, err := pki.NewNodeCredentials(node, r.caFile, tokenFile)
	if err != nil {
		r.t.Fatal(err)
	}
	return creds, tokenFile
}

// handshake runs the CCM's TLS handshake with the speaker of creds as
// node and returns what the CCM learnt.
func (r *realEnv) handshake(node string, creds *pki.NodeCredentials) *pki.Peer {
	r.t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	peer := &pki.Peer{}
	done := make(chan error, 1)
	go func() { done <- tls.Server(a, creds.ServerTLSConfig()).Handshake() }()
	if err := tls.Client(b, r.bundle.ClientTLSConfig(node, peer)).Handshake(); err != nil {
		r.t.Fatalf("handshake with %s: %v", node, err)
	}
	if err := <-done; err != nil {
		r.t.Fatalf("handshake with %s (speaker): %v", node, err)
	}
	return peer
}

// presented is the certificate the speaker presents now.
func presented(creds *pki.NodeCredentials) *x509.Certificate {
	cfg, err := creds.ServerTLSConfig().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil || len(cfg.Certificates) == 0 {
		return nil
	}
	return cfg.Certificates[0].Leaf
}

// TestRenewalNeedsCurrentToken is issue 20, finding 4 (renewal): a
// speaker's key and node certificate without the pod's current token (a
// key copied off the node; here the token file holds garbage) must not
// get a new certificate. The speaker was enrolled properly; its
// certificate is due for renewal at once (a 2-minute lifetime): the CCM
// asks for the current token, the TokenReview refuses it, the stream is
// closed and the speaker is not given a certificate again.
func TestRenewalNeedsCurrentToken(t *testing.T) {
	r := newRealEnv(t)
	r.bootstrap(pki.WithNodeLifetime(2 * time.Minute))
	creds, tokenFile := r.speakerPod("node-a")
	token, err := os.ReadFile(tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	peer := r.handshake("node-a", creds)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	enrolled, err := r.bundle.Enroll(ctx, "node-a", peer, string(token))
	if err != nil {
		t.Fatalf("enrollment with the pod's token: %v", err)
	}
	if err := creds.Install(enrolled.CertPEM, enrolled.BundlePEM); err != nil {
		t.Fatal(err)
	}
	// The CCM's watch has seen the pod (it was just made).
	waitFor(t, "the enrolled speaker authenticated", 10*time.Second, func() bool { return r.handshake("node-a", creds).Enrolled() })
	enrolledCert := presented(creds)
	// The key and the certificate are all the holder has.
	if err := os.WriteFile(tokenFile, []byte("not-a-token"), 0o600); err != nil {
		t.Fatal(err)
	}

	r.startSpeakerWith("node-a", creds)
	m := r.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "the renewal decided", 20*time.Second, func() bool {
		st, _ := m.State("node-a")
		return !presented(creds).Equal(enrolledCert) || strings.Contains(st.Problem, pki.RefusalInvalidToken)
	})
	if got := presented(creds); !got.Equal(enrolledCert) {
		t.Fatalf("the speaker's certificate was renewed (serial %x, was %x) without a valid token", got.SerialNumber, enrolledCert.SerialNumber)
	}
	st, _ := m.State("node-a")
	if st.Connected {
		t.Errorf("the speaker that failed to renew is connected")
	}
	t.Logf("problem: %s", st.Problem)
}

// TestDeletionRevokes is issue 20, finding 4 (revocation): deleting a
// node's speaker pod, or the Node, closes the CCM's open stream to that
// speaker within seconds, and the speaker does not get back in with its
// certificate (it must enroll, and its token no longer proves anything).
// A deleted Node's speaker is told to withdraw first (the session drains).
func TestDeletionRevokes(t *testing.T) {
	r := newRealEnv(t)
	r.bootstrap()
	tests := []struct {
		name   string
		node   string
		delete func(ctx context.Context, node string) error
		// wantProblem is in the session's problem once the speaker
		// failed to get back in.
		wantProblem string
	}{
		// The API server's TokenReview may still accept the token of a
		// pod just deleted; the CCM's own read of the pod refuses it.
		{name: "speaker pod deleted", node: "node-a", wantProblem: pki.RefusalPodGone, delete: func(ctx context.Context, node string) error {
			return r.cp.Client.CoreV1().Pods(realNS).Delete(ctx, "ironlb-speaker-"+node, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)})
		}},
		{name: "Node deleted", node: "node-b", wantProblem: pki.RefusalNodeGone, delete: func(ctx context.Context, node string) error {
			return r.cp.Client.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			creds, _ := r.speakerPod(tc.node)
			r.startSpeakerWith(tc.node, creds)
			m := r.manager(ctx, 50*time.Millisecond, 5)
			m.SetNode(tc.node, nodeAddr(tc.node))
			waitFor(t, tc.node+" connected", 20*time.Second, func() bool { st, _ := m.State(tc.node); return st.Connected })
			if ok, _ := creds.Enrolled(); !ok {
				t.Fatal("connected but not enrolled")
			}

			if err := tc.delete(ctx, tc.node); err != nil {
				t.Fatal(err)
			}
			took := waitFor(t, "the stream of the revoked speaker closed", 10*time.Second, func() bool {
				st, _ := m.State(tc.node)
				return !st.Connected
			})
			t.Logf("stream closed %s after the deletion", took.Round(time.Millisecond))
			if tc.wantProblem == pki.RefusalNodeGone {
				// The Node's session was drained and removed (its speaker
				// withdraws first, as for any deleted Node): a session for
				// that node name again, as for a Node made anew, must not
				// get in with the old certificate either.
				if _, ok := m.State(tc.node); ok {
					t.Fatal("the deleted Node still has a session")
				}
				m.SetNode(tc.node, nodeAddr(tc.node))
			}
			waitFor(t, "the speaker refused when it tries again", 10*time.Second, func() bool {
				st, _ := m.State(tc.node)
				return strings.Contains(st.Problem, "enrollment refused ("+tc.wantProblem+")")
			})
			st, _ := m.State(tc.node)
			if st.Connected {
				t.Error("the revoked speaker is connected again")
			}
			t.Logf("problem: %s", st.Problem)
		})
	}
}
