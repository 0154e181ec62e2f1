package pki

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// handshakeResult is what each side of a real TLS connection observed.
type handshakeResult struct {
	serverErr error
	clientErr error
	// peer identities as seen by each side, when the handshake succeeded.
	clientSawServer string
	serverSawClient string
	serverSerial    string
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
			res.serverSerial = cs.PeerCertificates[0].SerialNumber.String()
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

// writeDir writes a speaker file set like a Secret volume and returns the
// directory.
func writeDir(t *testing.T, dir string, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	if err := WriteFiles(dir, speakerSecret(caPEM, certPEM, keyPEM)); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	return dir
}

func TestHandshakeMatrix(t *testing.T) {
	cs := newClient()
	b, err := Bootstrap(context.Background(), cs, testNS)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	now := time.Now()
	ca := b.CA()
	foreign := mustCA(t, now)
	spS := getSecret(t, cs, SpeakerSecretName)

	speakerDir := t.TempDir()
	if err := WriteFiles(speakerDir, spS); err != nil {
		t.Fatalf("WriteFiles: %v", err)
	}
	goodServer, err := ServerTLSConfig(speakerDir)
	if err != nil {
		t.Fatalf("ServerTLSConfig: %v", err)
	}

	keyPair := func(certPEM, keyPEM []byte) tls.Certificate {
		c, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// clientWith returns a client config presenting cert (if any) that
	// accepts any server, to probe the server's checks in isolation.
	clientWith := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true, Certificates: certs}
	}
	// serverWith returns a speaker server config using the given files.
	serverWith := func(certPEM, keyPEM []byte) *tls.Config {
		cfg, err := ServerTLSConfig(writeDir(t, "", ca.CertPEM(), certPEM, keyPEM))
		if err != nil {
			t.Fatalf("ServerTLSConfig: %v", err)
		}
		return cfg
	}

	tests := []struct {
		name          string
		server        *tls.Config
		client        *tls.Config
		wantServerErr string
		wantClientErr bool
		want          handshakeResult // identities on success
	}{
		{
			name:   "ccm client to speaker server",
			server: goodServer,
			client: b.ClientTLSConfig(),
			want:   handshakeResult{clientSawServer: SpeakerIdentity, serverSawClient: CCMIdentity},
		},
		{
			name:          "client without certificate",
			server:        goodServer,
			client:        clientWith(),
			wantServerErr: "client didn't provide a certificate",
			wantClientErr: true,
		},
		{
			name:          "client with speaker certificate",
			server:        goodServer,
			client:        clientWith(keyPair(spS.Data[TLSCertKey], spS.Data[TLSKeyKey])),
			wantServerErr: `peer identity is "spiffe://ironlb.dev/speaker", want "spiffe://ironlb.dev/ccm"`,
			wantClientErr: true,
		},
		{
			name:          "client with CCM identity from a foreign CA",
			server:        goodServer,
			client:        clientWith(keyPair(mustIssue(t, foreign, CCMIdentity, 0, now))),
			wantServerErr: "certificate signed by unknown authority",
			wantClientErr: true,
		},
		{
			name:          "client with expired CCM certificate",
			server:        goodServer,
			client:        clientWith(keyPair(mustIssue(t, ca, CCMIdentity, time.Minute, now.Add(-time.Hour)))),
			wantServerErr: "expired",
			wantClientErr: true,
		},
		{
			name:          "client limited to TLS 1.2",
			server:        goodServer,
			client:        &tls.Config{MaxVersion: tls.VersionTLS12, InsecureSkipVerify: true, Certificates: []tls.Certificate{*b.Certificate()}},
			wantServerErr: "unsupported versions",
			wantClientErr: true,
		},
		{
			name:          "server with CCM certificate",
			server:        serverWith(mustIssue(t, ca, CCMIdentity, 0, now)),
			client:        b.ClientTLSConfig(),
			wantServerErr: "bad certificate",
			wantClientErr: true,
		},
		{
			name:          "server with other identity from the CA",
			server:        serverWith(mustIssue(t, ca, "spiffe://ironlb.dev/other", 0, now)),
			client:        b.ClientTLSConfig(),
			wantServerErr: "bad certificate",
			wantClientErr: true,
		},
		{
			name:          "server with speaker identity from a foreign CA",
			server:        serverWith(mustIssue(t, foreign, SpeakerIdentity, 0, now)),
			client:        b.ClientTLSConfig(),
			wantServerErr: "bad certificate",
			wantClientErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := handshake(t, tc.server, tc.client)
			if tc.wantServerErr == "" {
				if got.serverErr != nil || got.clientErr != nil {
					t.Fatalf("handshake failed: server: %v, client: %v", got.serverErr, got.clientErr)
				}
				got.serverErr, got.clientErr, got.serverSerial = nil, nil, ""
				if diff := cmp.Diff(tc.want, got, cmp.AllowUnexported(handshakeResult{})); diff != "" {
					t.Errorf("identities mismatch (-want +got):\n%s", diff)
				}
				return
			}
			if got.serverErr == nil || !strings.Contains(got.serverErr.Error(), tc.wantServerErr) {
				t.Errorf("server error = %v, want it to contain %q", got.serverErr, tc.wantServerErr)
			}
			if tc.wantClientErr && got.clientErr == nil {
				t.Error("client succeeded, want an error")
			}
		})
	}
}

// TestClientRejectsServerReason checks the client side error messages,
// which the matrix above only sees as alerts on the server.
func TestClientRejectsServerReason(t *testing.T) {
	cs := newClient()
	b, err := Bootstrap(context.Background(), cs, testNS)
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	now := time.Now()
	foreign := mustCA(t, now)
	tests := []struct {
		name      string
		certPEM   []byte
		keyPEM    []byte
		wantError string
	}{
		{name: "CCM certificate lacks server auth", wantError: "incompatible key usage"},
		{name: "other identity", wantError: `peer identity is "spiffe://ironlb.dev/other"`},
		{name: "foreign CA", wantError: "signed by unknown authority"},
	}
	tests[0].certPEM, tests[0].keyPEM = mustIssue(t, b.CA(), CCMIdentity, 0, now)
	tests[1].certPEM, tests[1].keyPEM = mustIssue(t, b.CA(), "spiffe://ironlb.dev/other", 0, now)
	tests[2].certPEM, tests[2].keyPEM = mustIssue(t, foreign, SpeakerIdentity, 0, now)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := ServerTLSConfig(writeDir(t, "", b.CA().CertPEM(), tc.certPEM, tc.keyPEM))
			if err != nil {
				t.Fatal(err)
			}
			got := handshake(t, cfg, b.ClientTLSConfig())
			if got.clientErr == nil || !strings.Contains(got.clientErr.Error(), tc.wantError) {
				t.Errorf("client error = %v, want it to contain %q", got.clientErr, tc.wantError)
			}
		})
	}
}

// TestServerReloadsFiles rotates the speaker certificate the way the CCM
// and the kubelet do and checks that a running server presents the new
// certificate without being recreated, and ignores a broken file set.
func TestServerReloadsFiles(t *testing.T) {
	cs := newClient()
	clk := newClock(time.Now())
	b, err := Bootstrap(context.Background(), cs, testNS, WithClock(clk.Now), WithLeafLifetime(3*time.Hour))
	if err != nil {
		t.Fatalf("Bootstrap: %v", err)
	}
	dir := t.TempDir()
	if err := WriteFiles(dir, getSecret(t, cs, SpeakerSecretName)); err != nil {
		t.Fatal(err)
	}
	// The server shares the clock so that it accepts the CCM certificates
	// issued in the simulated future.
	serverClock := clk
	server, err := serverTLSConfig(dir, time.Second, serverClock.Now)
	if err != nil {
		t.Fatalf("serverTLSConfig: %v", err)
	}
	serial := func(s *corev1.Secret) string { return mustParseCert(t, s.Data[TLSCertKey]).SerialNumber.String() }
	presented := func() string {
		t.Helper()
		got := handshake(t, server, b.ClientTLSConfig())
		if got.serverErr != nil || got.clientErr != nil {
			t.Fatalf("handshake failed: server: %v, client: %v", got.serverErr, got.clientErr)
		}
		return got.serverSerial
	}

	first := serial(getSecret(t, cs, SpeakerSecretName))
	if diff := cmp.Diff(first, presented()); diff != "" {
		t.Fatalf("initial certificate mismatch (-want +got):\n%s", diff)
	}

	// The CCM renews the speaker certificate; the kubelet updates the files.
	clk.Add(2*time.Hour + time.Minute)
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	presented() // the server checks its (unchanged) files now
	renewed := getSecret(t, cs, SpeakerSecretName)
	if serial(renewed) == first {
		t.Fatal("speaker certificate was not renewed")
	}
	if err := WriteFiles(dir, renewed); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(first, presented()); diff != "" {
		t.Errorf("files re-read before the reload interval (-want +got):\n%s", diff)
	}
	serverClock.Add(time.Second)
	if diff := cmp.Diff(serial(renewed), presented()); diff != "" {
		t.Errorf("renewed certificate not presented (-want +got):\n%s", diff)
	}

	// A half-written or corrupt file set is ignored.
	if err := os.WriteFile(filepath.Join(dir, TLSCertKey), []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	serverClock.Add(time.Second)
	if diff := cmp.Diff(serial(renewed), presented()); diff != "" {
		t.Errorf("corrupt files replaced the working certificate (-want +got):\n%s", diff)
	}

	// CA rotation: both Secrets deleted, the CCM recreates them and adopts
	// the new CA; once the files follow, connections work again.
	for _, name := range []string{CASecretName, SpeakerSecretName} {
		if err := cs.CoreV1().Secrets(testNS).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Sync(context.Background()); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if got := handshake(t, server, b.ClientTLSConfig()); got.clientErr == nil {
		t.Error("handshake succeeded across different CAs during the rotation window")
	}
	rotated := getSecret(t, cs, SpeakerSecretName)
	if err := WriteFiles(dir, rotated); err != nil {
		t.Fatal(err)
	}
	serverClock.Add(time.Second)
	if diff := cmp.Diff(serial(rotated), presented()); diff != "" {
		t.Errorf("certificate from the new CA not presented (-want +got):\n%s", diff)
	}
}

// TestServerTLSConfigPublicReload exercises the exported constructor with
// its real one second reload interval.
func TestServerTLSConfigPublicReload(t *testing.T) {
	ca := mustCA(t, time.Now())
	now := time.Now()
	c1, k1 := mustIssue(t, ca, SpeakerIdentity, 0, now)
	dir := writeDir(t, "", ca.CertPEM(), c1, k1)
	cfg, err := ServerTLSConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(tls.VersionTLS13, int(cfg.MinVersion)); diff != "" {
		t.Errorf("MinVersion mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(tls.RequireAnyClientCert, cfg.ClientAuth); diff != "" {
		t.Errorf("ClientAuth mismatch (-want +got):\n%s", diff)
	}
	get := func() string {
		c, err := cfg.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.String()
	}
	want1 := mustParseCert(t, c1).SerialNumber.String()
	if diff := cmp.Diff(want1, get()); diff != "" {
		t.Fatalf("initial certificate mismatch (-want +got):\n%s", diff)
	}
	c2, k2 := mustIssue(t, ca, SpeakerIdentity, 0, now)
	writeDir(t, dir, ca.CertPEM(), c2, k2)
	want2 := mustParseCert(t, c2).SerialNumber.String()
	deadline := time.Now().Add(5 * time.Second)
	for get() != want2 {
		if time.Now().After(deadline) {
			t.Fatal("new certificate not picked up within 5s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestServerTLSConfigErrors(t *testing.T) {
	ca := mustCA(t, time.Now())
	c, k := mustIssue(t, ca, SpeakerIdentity, 0, time.Now())
	_, otherKey := mustIssue(t, ca, SpeakerIdentity, 0, time.Now())
	tests := []struct {
		name    string
		files   map[string][]byte
		wantErr string
	}{
		{name: "empty directory", files: nil, wantErr: "ca.crt: no such file"},
		{name: "missing key", files: map[string][]byte{CACertKey: ca.CertPEM(), TLSCertKey: c}, wantErr: "tls.key: no such file"},
		{name: "bad ca.crt", files: map[string][]byte{CACertKey: []byte("x"), TLSCertKey: c, TLSKeyKey: k}, wantErr: "ca.crt: no PEM certificate"},
		{name: "mismatched key", files: map[string][]byte{CACertKey: ca.CertPEM(), TLSCertKey: c, TLSKeyKey: otherKey}, wantErr: "load tls.crt and tls.key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			_, err := ServerTLSConfig(dir)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ServerTLSConfig() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestWriteFiles(t *testing.T) {
	s := speakerSecret([]byte("ca"), []byte("cert"), []byte("key"))
	dir := filepath.Join(t.TempDir(), "nested")
	for range 2 { // the second write replaces the files
		if err := WriteFiles(dir, s); err != nil {
			t.Fatalf("WriteFiles: %v", err)
		}
	}
	type file struct {
		Data string
		Mode os.FileMode
	}
	got := map[string]file{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		got[e.Name()] = file{Data: string(data), Mode: info.Mode().Perm()}
	}
	want := map[string]file{
		CACertKey:  {Data: "ca", Mode: 0o644},
		TLSCertKey: {Data: "cert", Mode: 0o644},
		TLSKeyKey:  {Data: "key", Mode: 0o600},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("written files mismatch (-want +got):\n%s", diff)
	}

	tests := []struct {
		name    string
		secret  *corev1.Secret
		wantErr string
	}{
		{name: "nil secret", secret: nil, wantErr: "nil secret"},
		{name: "missing key", secret: &corev1.Secret{Data: map[string][]byte{CACertKey: []byte("x")}}, wantErr: `no key "tls.key"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := WriteFiles(t.TempDir(), tc.secret)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("WriteFiles() error = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
