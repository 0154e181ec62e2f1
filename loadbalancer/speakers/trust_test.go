package speakers

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/pki"
)

// ccmOf is what a CCM holding ca's key presents, whatever CAs the speaker
// names.
func ccmOf(t *testing.T, ca *pki.CA) *tls.Config {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(pki.CCMIdentity, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, //nolint:gosec // the test checks the speaker's side
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil },
	}
}

// speakerAccepts runs a TLS handshake of client with the speaker's server
// configuration and reports whether the speaker accepted it.
func speakerAccepts(creds *pki.NodeCredentials, client *tls.Config) bool {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	srv := tls.Server(a, creds.ServerTLSConfig())
	done := make(chan error, 1)
	go func() { done <- srv.Handshake() }()
	_ = tls.Client(b, client).Handshake()
	_ = b.Close()
	return <-done == nil
}

// presentedBy reports whether the speaker presents a certificate ca
// issued.
func presentedBy(creds *pki.NodeCredentials, ca *pki.CA) bool {
	cfg, err := creds.ServerTLSConfig().GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil || len(cfg.Certificates) == 0 || cfg.Certificates[0].Leaf == nil {
		return false
	}
	return cfg.Certificates[0].Leaf.CheckSignatureFrom(ca.Certificate()) == nil
}

// TestRemovedCAEndsTrust is issue 20, finding 3: the README's rotation,
// then the operator ends the overlap by deleting ironlb-ca-previous. The
// kubelet has mounted the bundle of both CAs on the node (as the README
// asks before the overlap ends) and will take a while to mount the new
// one; meanwhile a CCM certificate of the old CA (its key may be the
// reason for the rotation) must stop being accepted by the connected
// speaker within seconds: the CCM sends every connected speaker the
// smaller bundle, which the speaker takes instead of the one before. The
// stream stays up and the current CA's CCM still gets in.
func TestRemovedCAEndsTrust(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	secrets := e.cs.CoreV1().Secrets("kube-system")
	cur, err := secrets.Get(ctx, pki.CASecretName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldCA, err := pki.ParseCA(cur.Data[pki.CACertKey], cur.Data[pki.CAKeyKey])
	if err != nil {
		t.Fatal(err)
	}
	creds := e.credentials("node-a", "node-a")
	e.startSpeakerWith("node-a", creds)
	m := e.manager(ctx, 50*time.Millisecond, 5)
	m.SetNode("node-a", nodeAddr("node-a"))
	waitFor(t, "node-a connected", 5*time.Second, func() bool { st, _ := m.State("node-a"); return st.Connected })

	// Rotate: the old CA becomes the previous one; the CCM makes a new
	// CA and renews the speaker from it.
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
	// The kubelet mounts the bundle of both CAs.
	if err := pki.WriteBundle(e.caFile, e.bundle.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "both CAs' CCMs accepted during the overlap (the speaker read its mounted bundle)", 5*time.Second, func() bool {
		return speakerAccepts(creds, ccmOf(t, oldCA)) && speakerAccepts(creds, ccmOf(t, newCA))
	})

	// End the overlap; the mounted bundle still has both CAs.
	if err := secrets.Delete(ctx, pki.PreviousCASecretName, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := e.bundle.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "the connected speaker stops trusting the removed CA", 5*time.Second, func() bool {
		return !speakerAccepts(creds, ccmOf(t, oldCA))
	})
	t.Logf("the removed CA was refused %s after the overlap ended", took.Round(time.Millisecond))
	if !speakerAccepts(creds, ccmOf(t, newCA)) {
		t.Error("the current CA's CCM is refused")
	}
	if st, _ := m.State("node-a"); !st.Connected {
		t.Errorf("the stream broke when the overlap ended: %s", st.Problem)
	}
}
