package speakers

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/pki"
)

// rotateToOverlap runs the README's rotation up to the overlap: the old CA
// becomes the previous one, the CCM makes a new CA and renews node-a's
// speaker from it, and the kubelet mounts the bundle of both CAs. It
// returns the old CA.
func rotateToOverlap(t *testing.T, ctx context.Context, e *env, creds *pki.NodeCredentials) *pki.CA {
	t.Helper()
	secrets := e.cs.CoreV1().Secrets("kube-system")
	cur, err := secrets.Get(ctx, pki.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldCA, err := pki.ParseCA(cur.Data[pki.CACertKey], cur.Data[pki.CAKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	prev := cur.DeepCopy()
	prev.Name, prev.ResourceVersion, prev.UID = pki.PreviousCASecretName, "", ""
	if _, err := secrets.Create(ctx, prev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := secrets.Delete(ctx, pki.CASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.bundle.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	newCA := e.bundle.CA()
	waitFor(t, "node-a renewed from the new CA", 5*time.Second, func() bool { return presentedBy(creds, newCA) })
	if err := pki.WriteBundle(e.caFile, e.bundle.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both CAs' CCMs accepted during the overlap", 5*time.Second, func() bool {
		return speakerAccepts(creds, ccmOf(t, oldCA)) && speakerAccepts(creds, ccmOf(t, newCA))
	})
	return oldCA
}

// endOverlap deletes ironlb-ca-previous, as the README's last step.
func endOverlap(t *testing.T, ctx context.Context, e *env) {
	t.Helper()
	if err := e.cs.CoreV1().Secrets("kube-system").Delete(ctx, pki.PreviousCASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.bundle.Sync(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestRemovedCAEndsOpenStreams is issue 20, finding 3, for connections
// already open: whoever holds the old CA's key (the reason for the
// rotation, perhaps) opens a stream to the speaker as the CCM during the
// overlap, when the speaker trusts both CAs, and keeps it open. Once the
// speaker stops trusting the old CA (the CCM ends the overlap, or the
// kubelet mounts a bundle without it), the speaker must end that stream
// within seconds: the handshake is the only other check, and an open
// stream could go on sending instructions (a made-up leader term fencing
// out the real CCM). The real CCM stays connected: a stream it opened
// before the rotation, with its old-CA certificate, is ended too, and it
// reconnects at once with its new-CA certificate, without declaring the
// speaker lost.
func TestRemovedCAEndsOpenStreams(t *testing.T) {
	for _, tc := range []struct {
		name  string
		trust func(t *testing.T, ctx context.Context, e *env)
	}{
		{name: "the CCM ends the overlap", trust: endOverlap},
		{name: "the kubelet mounts the new CA alone", trust: func(t *testing.T, ctx context.Context, e *env) {
			if err := pki.WriteBundle(e.caFile, e.bundle.CA().CertPEM()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			creds := e.credentials("node-a", "node-a")
			sp := e.startSpeakerWith("node-a", creds)
			go sp.agent.Run(ctx) // re-reads the mounted bundle
			m := e.manager(ctx, 50*time.Millisecond, 5)
			m.SetNode("node-a", nodeAddr("node-a"))
			waitFor(t, "node-a connected", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })
			oldCA := rotateToOverlap(t, ctx, e, creds)

			// The holder of the old CA's key connects as the CCM.
			conn, err := grpc.NewClient("passthrough:///"+sp.proxy.addr(), grpc.WithTransportCredentials(credentials.NewTLS(ccmOf(t, oldCA))))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			stream, err := speakerv1.NewSpeakerClient(conn).Sync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("the old CA's CCM was refused during the overlap: %v", err)
			}
			ended := make(chan error, 1)
			go func() {
				for {
					if _, err := stream.Recv(); err != nil {
						ended <- err
						return
					}
				}
			}()
			waitFor(t, "two streams open", 5*time.Second, func() bool { return sp.agent.Streams() == 2 })

			tc.trust(t, ctx, e)
			start := time.Now()
			select {
			case err := <-ended:
				if got := speakerv1.StreamErrorReason(err); got != speakerv1.ReasonUntrusted {
					t.Errorf("the old CA's stream ended with %v (reason %q), want reason %q", err, got, speakerv1.ReasonUntrusted)
				}
				t.Logf("the old CA's stream ended %s after trust changed: %v", time.Since(start).Round(time.Millisecond), err)
			case <-time.After(5 * time.Second):
				t.Fatal("the stream of a CCM certificate from the removed CA is still open 5s after the speaker stopped trusting that CA")
			}
			// The real CCM is connected, on a stream the speaker trusts.
			waitFor(t, "the real CCM connected again", 5*time.Second, func() bool {
				st, _ := m.State("node-a")
				return st.Connected && sp.agent.Streams() == 1
			})
			if st, _ := m.State("node-a"); st.Problem != "" {
				t.Errorf("the real CCM saw a problem: %s", st.Problem)
			}
			if !speakerAccepts(creds, ccmOf(t, e.bundle.CA())) {
				t.Error("the current CA's CCM is refused")
			}
		})
	}
}

// TestReconnectNarrowsTrust is issue 20, finding 3, for a speaker that was
// not connected when the overlap ended: it missed the bundle the CCM sent
// then, and without more would keep trusting the old CA until its next
// renewal. The CCM sends its bundle on every new stream, so the speaker
// stops trusting the removed CA as soon as it is reached again.
func TestReconnectNarrowsTrust(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	creds := e.credentials("node-a", "node-a")
	sp := e.startSpeakerWith("node-a", creds)
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "node-a connected", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })
	oldCA := rotateToOverlap(t, ctx, e, creds)

	// The speaker is cut off while the overlap ends.
	sp.proxy.freeze(true)
	sp.proxy.closeAll()
	waitFor(t, "node-a disconnected", 5*time.Second, func() bool { return sp.agent.Streams() == 0 })
	endOverlap(t, ctx, e)
	if !speakerAccepts(creds, ccmOf(t, oldCA)) {
		t.Fatal("the speaker already stopped trusting the old CA, which this test expects it to miss")
	}

	sp.proxy.freeze(false)
	took := waitFor(t, "the reconnected speaker stops trusting the removed CA", 10*time.Second, func() bool {
		return !speakerAccepts(creds, ccmOf(t, oldCA))
	})
	t.Logf("the removed CA was refused %s after the speaker could be reached again", took.Round(time.Millisecond))
	if !speakerAccepts(creds, ccmOf(t, e.bundle.CA())) {
		t.Error("the current CA's CCM is refused")
	}
	if st, _ := m.State("node-a"); !st.Connected {
		t.Errorf("node-a is not connected: %s", st.Problem)
	}
}
