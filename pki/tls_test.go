package pki

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// handshakeResult is what each side of a real TLS connection observed.
type handshakeResult struct {
	serverErr error
	clientErr error
	// peer identities as seen by each side, when the handshake succeeded.
	clientSawServer string
	serverSawClient string
	serverCert      *x509.Certificate
}

// handshake runs a TLS 1.3 handshake over loopback TCP and exchanges one
// message, so that a client certificate rejected by the server (which in
// TLS 1.3 surfaces after the client's handshake completes) is observed by
// the client as well.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	var res handshakeResult
	serverDone := make(chan struct{})
	go func() {
		defer close(serverDone)
		conn, err := ln.Accept()
		if err != nil {
			res.serverErr = err
			return
		}
		defer conn.Close()
		srv := tls.Server(conn, serverCfg)
		if err := srv.HandshakeContext(ctx); err != nil {
			res.serverErr = err
			return
		}
		if pc := srv.ConnectionState().PeerCertificates; len(pc) > 0 {
			res.serverSawClient = IdentityOf(pc[0])
		}
		_, res.serverErr = srv.Write([]byte("ok"))
	}()

	d := tls.Dialer{Config: clientCfg}
	conn, err := d.DialContext(ctx, "tcp", ln.Addr().String())
	if err != nil {
		res.clientErr = err
	} else {
		tc := conn.(*tls.Conn)
		cs := tc.ConnectionState()
		if len(cs.PeerCertificates) > 0 {
			res.clientSawServer = IdentityOf(cs.PeerCertificates[0])
			res.serverCert = cs.PeerCertificates[0]
		}
		buf := make([]byte, 2)
		if _, err := io.ReadFull(tc, buf); err != nil {
			res.clientErr = err
		}
		conn.Close()
	}
	<-serverDone
	return res
}

// newSpeaker starts node's speaker credentials with bundlePEM as its
// mounted CA file and "token:<node>" as its projected token.
func newSpeaker(t *testing.T, node string, bundlePEM []byte, now func() time.Time) *NodeCredentials {
	t.Helper()
	dir := t.TempDir()
	caFile, tokenFile := filepath.Join(dir, CACertKey), filepath.Join(dir, "token")
	if err := WriteBundle(caFile, bundlePEM); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tokenFile, []byte("token:"+node+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := newNodeCredentials(node, caFile, tokenFile, now)
	if err != nil {
		t.Fatalf("newNodeCredentials(%s): %v", node, err)
	}
	return c
}

func keyPair(t *testing.T, certPEM, keyPEM []byte) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// presented returns the certificate the speaker would present now.
func presented(c *NodeCredentials) *x509.Certificate {
	_, cert := c.current()
	return cert.Leaf
}

// TestHandshakeMatrix proves, with real TLS 1.3 handshakes, who accepts
// whom. The speaker accepts only a CCM certificate from a CA it trusts. The
// CCM accepts a speaker with a node certificate for the node dialled
// (enrolled), refuses one whose trusted certificate names another node
// (ErrWrongNode) or is not a node certificate, and accepts anything else
// (self-signed, foreign or expired) as a speaker that is not enrolled and
// may only enroll.
func TestHandshakeMatrix(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	ca := b.CA()
	foreign := mustCA(t, t0)

	unenrolled := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
	speakerA := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
	enroll(t, b, tr, speakerA)
	speakerB := newSpeaker(t, "node-b", b.BundlePEM(), clk.Now)
	enroll(t, b, tr, speakerB)

	// clientWith presents cert (if any) whatever CAs the speaker names, and
	// accepts any server, to probe the speaker's checks in isolation.
	clientWith := func(cert ...tls.Certificate) *tls.Config {
		return &tls.Config{
			MinVersion: tls.VersionTLS13, InsecureSkipVerify: true,
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				if len(cert) == 0 {
					return &tls.Certificate{}, nil
				}
				return &cert[0], nil
			},
		}
	}
	// serverWith presents cert and asks for any client certificate, to
	// probe the CCM's checks in isolation.
	serverWith := func(certPEM, keyPEM []byte) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAnyClientCert, Certificates: []tls.Certificate{keyPair(t, certPEM, keyPEM)}}
	}
	kp := func(certPEM, keyPEM []byte) tls.Certificate { return keyPair(t, certPEM, keyPEM) }
	issue := func(ca *CA, identity string, lifetime time.Duration, now time.Time) *tls.Config {
		return serverWith(mustIssue(t, ca, identity, lifetime, now))
	}

	type outcome struct {
		Enrolled        bool
		ClientSawServer string
		ServerSawClient string
	}
	tests := []struct {
		name          string
		server        *tls.Config
		dial          string // the CCM dials this node, when client is nil
		client        *tls.Config
		wantClientErr string  // substring, when the CCM refuses
		wantClientIs  error   // errors.Is, when the CCM refuses
		wantServerErr string  // substring, when the speaker refuses (or sees the CCM's alert)
		want          outcome // on success
	}{
		{
			name:   "speaker not enrolled",
			server: unenrolled.ServerTLSConfig(), dial: "node-a",
			want: outcome{Enrolled: false, ClientSawServer: enrollIdentityPrefix + "node-a", ServerSawClient: CCMIdentity},
		},
		{
			name:   "enrolled speaker",
			server: speakerA.ServerTLSConfig(), dial: "node-a",
			want: outcome{Enrolled: true, ClientSawServer: nodeA, ServerSawClient: CCMIdentity},
		},
		{
			name:   "speaker of node-b dialled as node-b",
			server: speakerB.ServerTLSConfig(), dial: "node-b",
			want: outcome{Enrolled: true, ClientSawServer: NodeIdentity("node-b"), ServerSawClient: CCMIdentity},
		},
		{
			name:   "speaker of node-b dialled as node-a",
			server: speakerB.ServerTLSConfig(), dial: "node-a",
			wantClientIs: ErrWrongNode, wantClientErr: `dialled node "node-a"`, wantServerErr: "bad certificate",
		},
		{
			name:   "server with a CCM certificate of the trusted CA",
			server: issue(ca, CCMIdentity, 0, t0), dial: "node-a",
			wantClientErr: "incompatible key usage", wantServerErr: "bad certificate",
		},
		{
			name:   "server with another identity of the trusted CA",
			server: issue(ca, "spiffe://ironlb.dev/other", 0, t0), dial: "node-a",
			wantClientErr: `peer identity is "spiffe://ironlb.dev/other", want "spiffe://ironlb.dev/node/node-a"`, wantServerErr: "bad certificate",
		},
		{
			name:   "server with a node-a certificate of another CA",
			server: issue(foreign, nodeA, 0, t0), dial: "node-a",
			want: outcome{Enrolled: false, ClientSawServer: nodeA, ServerSawClient: CCMIdentity},
		},
		{
			name:   "server with an expired node-a certificate of the trusted CA",
			server: issue(ca, nodeA, time.Hour, t0.Add(-2*time.Hour)), dial: "node-a",
			want: outcome{Enrolled: false, ClientSawServer: nodeA, ServerSawClient: CCMIdentity},
		},
		{
			name:   "client without certificate",
			server: speakerA.ServerTLSConfig(), client: clientWith(),
			wantServerErr: "client didn't provide a certificate",
		},
		{
			name:   "client without certificate to a speaker not enrolled",
			server: unenrolled.ServerTLSConfig(), client: clientWith(),
			wantServerErr: "client didn't provide a certificate",
		},
		{
			name:   "client with a node certificate",
			server: speakerA.ServerTLSConfig(), client: clientWith(kp(mustIssue(t, ca, nodeA, 0, t0))),
			wantServerErr: `peer identity is "spiffe://ironlb.dev/node/node-a", want "spiffe://ironlb.dev/ccm"`,
		},
		{
			name:   "client with a CCM certificate of another CA",
			server: speakerA.ServerTLSConfig(), client: clientWith(kp(mustIssue(t, foreign, CCMIdentity, 0, t0))),
			wantServerErr: "certificate signed by unknown authority",
		},
		{
			name:   "client with an expired CCM certificate",
			server: speakerA.ServerTLSConfig(), client: clientWith(kp(mustIssue(t, ca, CCMIdentity, time.Minute, t0.Add(-time.Hour)))),
			wantServerErr: "expired",
		},
		{
			name:          "client limited to TLS 1.2",
			server:        speakerA.ServerTLSConfig(),
			client:        &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, Certificates: []tls.Certificate{*b.Certificate()}},
			wantServerErr: "unsupported versions",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			peer := &Peer{}
			client := tc.client
			if client == nil {
				client = b.ClientTLSConfig(tc.dial, peer)
			}
			res := handshake(t, tc.server, client)
			if tc.wantClientErr == "" && tc.wantClientIs == nil && tc.wantServerErr == "" {
				if res.serverErr != nil || res.clientErr != nil {
					t.Fatalf("handshake failed: server: %v, client: %v", res.serverErr, res.clientErr)
				}
				got := outcome{Enrolled: peer.Enrolled(), ClientSawServer: res.clientSawServer, ServerSawClient: res.serverSawClient}
				if diff := cmp.Diff(tc.want, got); diff != "" {
					t.Errorf("outcome mismatch (-want +got):\n%s", diff)
				}
				if peer.Leaf() == nil || !peer.Leaf().Equal(res.serverCert) {
					t.Error("Peer does not record the certificate the speaker presented")
				}
				return
			}
			if res.clientErr == nil {
				t.Error("client succeeded, want an error")
			}
			if tc.wantClientErr != "" && (res.clientErr == nil || !strings.Contains(res.clientErr.Error(), tc.wantClientErr)) {
				t.Errorf("client error = %v, want it to contain %q", res.clientErr, tc.wantClientErr)
			}
			if tc.wantClientIs != nil && !errors.Is(res.clientErr, tc.wantClientIs) {
				t.Errorf("client error = %v, want errors.Is %v", res.clientErr, tc.wantClientIs)
			}
			if tc.wantClientIs == nil && errors.Is(res.clientErr, ErrWrongNode) {
				t.Errorf("client error = %v is ErrWrongNode, want another reason", res.clientErr)
			}
			if tc.wantServerErr != "" && (res.serverErr == nil || !strings.Contains(res.serverErr.Error(), tc.wantServerErr)) {
				t.Errorf("server error = %v, want it to contain %q", res.serverErr, tc.wantServerErr)
			}
			if peer.Enrolled() {
				t.Error("refused handshake left the peer enrolled")
			}
		})
	}
}

// TestServerTLSConfig proves the speaker's server settings: TLS 1.3 only,
// h2, a client certificate required, and the trusted CAs sent in the
// request (so a rotating CCM can choose), presenting the self-signed
// certificate until Install and the node certificate after.
func TestServerTLSConfig(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	b := mustBootstrap(t, cs, WithClock(fixed(t0)))
	sp := newSpeaker(t, "node-a", b.BundlePEM(), fixed(t0))
	cfg := sp.ServerTLSConfig()
	type settings struct {
		Outer, Inner uint16
		NextProtos   []string
		ClientAuth   tls.ClientAuthType
		ClientCAs    bool
		Identity     string
		Enrolled     bool
		NotAfter     time.Time
	}
	get := func() settings {
		t.Helper()
		inner, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		enrolled, notAfter := sp.Enrolled()
		return settings{
			Outer: cfg.MinVersion, Inner: inner.MinVersion, NextProtos: inner.NextProtos, ClientAuth: inner.ClientAuth,
			ClientCAs: inner.ClientCAs.Equal(b.CA().Pool()),
			Identity:  IdentityOf(inner.Certificates[0].Leaf),
			Enrolled:  enrolled, NotAfter: notAfter,
		}
	}
	want := settings{
		Outer: tls.VersionTLS13, Inner: tls.VersionTLS13, NextProtos: []string{"h2"}, ClientAuth: tls.RequireAnyClientCert,
		ClientCAs: true, Identity: enrollIdentityPrefix + "node-a",
	}
	if diff := cmp.Diff(want, get()); diff != "" {
		t.Errorf("before enrollment (-want +got):\n%s", diff)
	}
	enroll(t, b, tr, sp)
	want.Identity, want.Enrolled, want.NotAfter = nodeA, true, t0.Add(NodeCertLifetime)
	if diff := cmp.Diff(want, get()); diff != "" {
		t.Errorf("after enrollment (-want +got):\n%s", diff)
	}
}

// TestNodeCertificateExpiry proves that a speaker whose node certificate
// expired (its CCM was away too long) falls back to the self-signed one, so
// that the CCM can enroll it again instead of failing the handshake.
func TestNodeCertificateExpiry(t *testing.T) {
	cs := newClient()
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	sp := newSpeaker(t, "node-a", b.BundlePEM(), clk.Now)
	enroll(t, b, tr, sp)
	if got := IdentityOf(presented(sp)); got != nodeA {
		t.Fatalf("presents %q after enrollment, want %q", got, nodeA)
	}
	clk.Add(NodeCertLifetime + time.Second)
	if err := b.Sync(context.Background()); err != nil { // as Run does: the CCM's own certificates are due too
		t.Fatal(err)
	}
	if diff := cmp.Diff(enrollIdentityPrefix+"node-a", IdentityOf(presented(sp))); diff != "" {
		t.Errorf("presented after expiry (-want +got):\n%s", diff)
	}
	if enrolled, _ := sp.Enrolled(); enrolled {
		t.Error("Enrolled() with an expired node certificate")
	}
	peer := dial(t, b, "node-a", sp)
	if peer.Enrolled() {
		t.Error("the CCM considers a speaker with an expired certificate enrolled")
	}
	enroll(t, b, tr, sp)
	if diff := cmp.Diff(clk.Now().Add(NodeCertLifetime), presented(sp).NotAfter); diff != "" {
		t.Errorf("re-enrolled certificate NotAfter (-want +got):\n%s", diff)
	}
}

// TestRotationOverlap proves a CA rotation end to end. A speaker enrolled
// under the old CA, which has only the old CA in its file, stays reachable
// while the CCM issues from a new CA and keeps the old one as
// ironlb-ca-previous: the speaker names the CAs it trusts and the CCM
// presents its certificate from the old CA. The CCM then finds the node
// certificate due at once (the current CA did not issue it), renews it,
// and after Install the speaker presents a certificate of the new CA and
// trusts the new CA, so the overlap can end.
func TestRotationOverlap(t *testing.T) {
	oldCA := mustCA(t, t0.Add(-time.Hour))
	newCA := mustCA(t, t0)
	cs := newClient(caSecret(oldCA))
	tr := newTokenReviewer(cs)
	clk := newClock(t0)
	b := mustBootstrap(t, cs, WithClock(clk.Now))
	sp := newSpeaker(t, "node-a", oldCA.CertPEM(), clk.Now)
	enroll(t, b, tr, sp)
	cas := map[string]*CA{"old": oldCA, "new": newCA}
	issuer := func(c *x509.Certificate) string {
		for n, ca := range cas {
			if c.CheckSignatureFrom(ca.Certificate()) == nil {
				return n
			}
		}
		return "?"
	}
	// connect returns which CA issued the certificates each side used.
	connect := func(step string) (peer *Peer, speakerCertFrom string) {
		t.Helper()
		peer = &Peer{}
		res := handshake(t, sp.ServerTLSConfig(), b.ClientTLSConfig("node-a", peer))
		if res.clientErr != nil || res.serverErr != nil {
			t.Fatalf("%s: handshake failed: client: %v, server: %v", step, res.clientErr, res.serverErr)
		}
		if !peer.Enrolled() {
			t.Fatalf("%s: speaker not enrolled", step)
		}
		return peer, issuer(res.serverCert)
	}

	// The operator rotates: old CA kept as previous, new CA current.
	clk.Add(time.Hour)
	replaceSecret(t, cs, caSecretNamed(PreviousCASecretName, oldCA))
	replaceSecret(t, cs, caSecret(newCA))
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if diff := cmp.Diff(string(newCA.CertPEM())+string(oldCA.CertPEM()), string(b.BundlePEM())); diff != "" {
		t.Fatalf("bundle during the overlap (-want +got):\n%s", diff)
	}

	peer, from := connect("overlap, speaker trusts only the old CA")
	if diff := cmp.Diff("old", from); diff != "" {
		t.Errorf("speaker certificate issuer (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(clk.Now(), b.RenewalDue(peer)); diff != "" {
		t.Errorf("RenewalDue of a certificate of the previous CA (-want +got):\n%s", diff)
	}
	creds, err := b.Renew(context.Background(), "node-a", peer, "token:node-a")
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if err := sp.Install(creds.CertPEM, creds.BundlePEM); err != nil {
		t.Fatalf("Install: %v", err)
	}

	peer, from = connect("overlap, renewed")
	if diff := cmp.Diff("new", from); diff != "" {
		t.Errorf("speaker certificate issuer after renewal (-want +got):\n%s", diff)
	}
	leaf := peer.Leaf()
	if diff := cmp.Diff(renewAt(leaf), b.RenewalDue(peer)); diff != "" {
		t.Errorf("RenewalDue of a certificate of the current CA (-want +got):\n%s", diff)
	}
	if !renewAt(leaf).After(clk.Now()) {
		t.Error("a fresh certificate is due for renewal")
	}

	// The kubelet updates the mounted bundle (both CAs), then the overlap
	// ends: the CCM has only its certificate from the new CA and sends the
	// speaker its bundle, which the speaker now trusts.
	if err := WriteBundle(sp.caFile, b.BundlePEM()); err != nil {
		t.Fatal(err)
	}
	clk.Add(reloadInterval)
	deleteSecret(t, cs, PreviousCASecretName)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := len(ccmCerts(b)); n != 1 {
		t.Fatalf("CCM holds %d certificates after the overlap, want 1", n)
	}
	if err := sp.TrustBundle(b.BundlePEM()); err != nil {
		t.Fatalf("TrustBundle: %v", err)
	}
	if _, from := connect("after the overlap"); from != "new" {
		t.Errorf("speaker certificate issuer after the overlap = %s, want new", from)
	}

	// A speaker that never learned the new CA cannot be reached any more:
	// the overlap is what makes the rotation safe.
	stale := newSpeaker(t, "node-a", oldCA.CertPEM(), clk.Now)
	res := handshake(t, stale.ServerTLSConfig(), b.ClientTLSConfig("node-a", &Peer{}))
	if res.serverErr == nil || !strings.Contains(res.serverErr.Error(), "unknown authority") {
		t.Errorf("speaker trusting only the old CA: server error = %v, want unknown authority", res.serverErr)
	}
}

// TestClientCertificateSelection proves that the CCM presents the client
// certificate of a CA the speaker names in its request (the previous CA's
// for a speaker that trusts only that one), and the current CA's when the
// speaker names none or none it has.
func TestClientCertificateSelection(t *testing.T) {
	cur := mustCA(t, t0)
	prev := mustCA(t, t0)
	other := mustCA(t, t0)
	cs := newClient(caSecret(cur), caSecretNamed(PreviousCASecretName, prev))
	b := mustBootstrap(t, cs, WithClock(fixed(t0)))
	cfg := b.ClientTLSConfig("node-a", &Peer{})
	tests := []struct {
		name       string
		acceptable []*CA
		want       *CA
	}{
		{name: "no names", acceptable: nil, want: cur},
		{name: "current", acceptable: []*CA{cur}, want: cur},
		{name: "previous", acceptable: []*CA{prev}, want: prev},
		{name: "both", acceptable: []*CA{prev, cur}, want: cur},
		{name: "unknown", acceptable: []*CA{other}, want: cur},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cri := &tls.CertificateRequestInfo{
				SignatureSchemes: []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
				Version:          tls.VersionTLS13,
			}
			for _, ca := range tc.acceptable {
				cri.AcceptableCAs = append(cri.AcceptableCAs, ca.Certificate().RawSubject)
			}
			got, err := cfg.GetClientCertificate(cri)
			if err != nil {
				t.Fatalf("GetClientCertificate: %v", err)
			}
			if err := got.Leaf.CheckSignatureFrom(tc.want.Certificate()); err != nil {
				t.Errorf("presented a certificate not from the wanted CA: %v", err)
			}
		})
	}
}

// TestInstall proves that the speaker installs only a certificate that
// certifies its own key, names its node, is a valid server certificate and
// chains to the bundle sent with it, and that a refused certificate changes
// nothing.
func TestInstall(t *testing.T) {
	ca := mustCA(t, t0)
	foreign := mustCA(t, t0)
	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp := newSpeaker(t, "node-a", ca.CertPEM(), fixed(t0))
	issueFor := func(ca *CA, identity string, pub any, lifetime time.Duration, now time.Time) []byte {
		c, err := ca.IssueFor(identity, pub, lifetime, now)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	own := sp.key.Public()
	good := issueFor(ca, nodeA, own, NodeCertLifetime, t0)
	tests := []struct {
		name    string
		cert    []byte
		bundle  []byte
		wantErr string
	}{
		{name: "not PEM", cert: []byte("junk"), bundle: ca.CertPEM(), wantErr: "no PEM certificate"},
		{name: "another key", cert: issueFor(ca, nodeA, otherKey.Public(), NodeCertLifetime, t0), bundle: ca.CertPEM(), wantErr: "another key"},
		{name: "another node", cert: issueFor(ca, NodeIdentity("node-b"), own, NodeCertLifetime, t0), bundle: ca.CertPEM(), wantErr: `peer identity is "spiffe://ironlb.dev/node/node-b"`},
		{name: "CCM certificate", cert: issueFor(ca, CCMIdentity, own, NodeCertLifetime, t0), bundle: ca.CertPEM(), wantErr: "incompatible key usage"},
		{name: "not chaining to the bundle", cert: issueFor(foreign, nodeA, own, NodeCertLifetime, t0), bundle: ca.CertPEM(), wantErr: "unknown authority"},
		{name: "empty bundle", cert: good, bundle: nil, wantErr: "no PEM certificate of a CA"},
		{name: "expired", cert: issueFor(ca, nodeA, own, time.Hour, t0.Add(-2*time.Hour)), bundle: ca.CertPEM(), wantErr: "expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := sp.Install(tc.cert, tc.bundle)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Install() error = %v, want it to contain %q", err, tc.wantErr)
			}
			if enrolled, _ := sp.Enrolled(); enrolled {
				t.Error("Enrolled() after a refused Install")
			}
			if presented(sp) != sp.self.Leaf {
				t.Error("a refused certificate is presented")
			}
		})
	}

	t.Run("accepted, then a refused one keeps it", func(t *testing.T) {
		if err := sp.Install(good, ca.CertPEM()); err != nil {
			t.Fatalf("Install: %v", err)
		}
		if err := sp.Install(issueFor(ca, NodeIdentity("node-b"), own, NodeCertLifetime, t0), ca.CertPEM()); err == nil {
			t.Fatal("Install accepted a certificate for another node")
		}
		enrolled, notAfter := sp.Enrolled()
		if diff := cmp.Diff([]any{true, t0.Add(NodeCertLifetime)}, []any{enrolled, notAfter}); diff != "" {
			t.Errorf("Enrolled() (-want +got):\n%s", diff)
		}
		if !presented(sp).Equal(mustParseCert(t, good)) {
			t.Error("the installed certificate is not presented")
		}
	})
}

// TestNodeCredentialsReloadsCAFile proves that the speaker re-reads its
// mounted CA bundle (the kubelet replaces it when the ConfigMap changes) at
// most every reloadInterval, with no restart, and keeps the bundle it has
// when the file is corrupt or missing.
func TestNodeCredentialsReloadsCAFile(t *testing.T) {
	clk := newClock(t0)
	csA, csB := newClient(), newClient()
	bA := mustBootstrap(t, csA, WithClock(clk.Now))
	bB := mustBootstrap(t, csB, WithClock(clk.Now))
	sp := newSpeaker(t, "node-a", bA.BundlePEM(), clk.Now)
	caFile := sp.caFile
	// accepts reports which CCMs the speaker accepts now.
	accepts := func() []string {
		t.Helper()
		var got []string
		for name, b := range map[string]*Bundle{"A": bA, "B": bB} {
			res := handshake(t, sp.ServerTLSConfig(), b.ClientTLSConfig("node-a", &Peer{}))
			if res.serverErr == nil && res.clientErr == nil {
				got = append(got, name)
			}
		}
		slices.Sort(got)
		return got
	}
	steps := []struct {
		name    string
		write   []byte // nil: leave the file; "-": remove it
		advance time.Duration
		want    []string
	}{
		{name: "initial", want: []string{"A"}},
		{name: "file replaced, within the interval", write: bB.BundlePEM(), advance: reloadInterval - time.Millisecond, want: []string{"A"}},
		{name: "interval passed", advance: time.Millisecond, want: []string{"B"}},
		{name: "both CAs", write: append(bA.BundlePEM(), bB.BundlePEM()...), advance: reloadInterval, want: []string{"A", "B"}},
		{name: "corrupt file keeps the bundle", write: []byte("junk"), advance: reloadInterval, want: []string{"A", "B"}},
		{name: "missing file keeps the bundle", write: []byte("-"), advance: reloadInterval, want: []string{"A", "B"}},
		{name: "file back", write: bA.BundlePEM(), advance: reloadInterval, want: []string{"A"}},
	}
	for _, st := range steps {
		switch {
		case st.write == nil:
		case string(st.write) == "-":
			if err := os.Remove(caFile); err != nil {
				t.Fatal(err)
			}
		default:
			if err := WriteBundle(caFile, st.write); err != nil {
				t.Fatal(err)
			}
		}
		clk.Add(st.advance)
		if diff := cmp.Diff(st.want, accepts()); diff != "" {
			t.Errorf("%s: CCMs accepted (-want +got):\n%s", st.name, diff)
		}
	}
}

// TestNewNodeCredentials proves that a speaker does not start without a
// node name or a readable CA bundle, and that EnrollmentToken reads the
// current token (the kubelet rotates it) without its trailing newline.
func TestNewNodeCredentials(t *testing.T) {
	dir := t.TempDir()
	caPEM := mustCA(t, t0).CertPEM()
	caFile := filepath.Join(dir, "ca.crt")
	if err := WriteBundle(caFile, caPEM); err != nil {
		t.Fatal(err)
	}
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, node, caFile, wantErr string
	}{
		{name: "no node", node: "", caFile: caFile, wantErr: "empty node name"},
		{name: "missing CA file", node: "node-a", caFile: filepath.Join(dir, "missing"), wantErr: "no such file"},
		{name: "CA file without certificate", node: "node-a", caFile: junk, wantErr: "no PEM certificate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewNodeCredentials(tc.node, tc.caFile, "")
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewNodeCredentials() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}

	t.Run("token", func(t *testing.T) {
		tokenFile := filepath.Join(dir, "token")
		c, err := NewNodeCredentials("node-a", caFile, tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.EnrollmentToken(); err == nil {
			t.Error("EnrollmentToken() without the file succeeded")
		}
		for _, tok := range []string{"first", "second"} {
			if err := os.WriteFile(tokenFile, []byte(tok+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := c.EnrollmentToken()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tok, got); diff != "" {
				t.Errorf("EnrollmentToken() (-want +got):\n%s", diff)
			}
		}
		noFile, err := NewNodeCredentials("node-a", caFile, "")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := noFile.EnrollmentToken(); err == nil || !strings.Contains(err.Error(), "--token-file") {
			t.Errorf("EnrollmentToken() without --token-file: error = %v", err)
		}
	})
}
