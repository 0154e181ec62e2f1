package bgppeers

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/prototext"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// caKeyPEM stands for the CA's private key in the ironlb-ca Secret.
const caKeyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIRONLBCAPRIVATEKEY\n-----END EC PRIVATE KEY-----\n"

// bgpPasswordType is v1alpha1.BGPPasswordSecretType, spelt out so that
// this file also builds against the code before the type existed.
const bgpPasswordType v1.SecretType = "ironlb.dev/bgp-password"

func secretOf(name string, typ v1.SecretType, data map[string]string) *v1.Secret {
	s := &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ironlb-system"}, Type: typ, Data: map[string][]byte{}}
	for k, v := range data {
		s.Data[k] = []byte(v)
	}
	return s
}

// secretsOf finds Secrets of every type by name, as a lister of all the
// namespace's Secrets would.
func secretsOf(objs ...*v1.Secret) Secrets {
	return func(name string) (*v1.Secret, error) {
		for _, s := range objs {
			if s.Name == name {
				return s, nil
			}
		}
		return nil, nil
	}
}

// TestPasswordFromIronLBsOwnSecrets is the attack of issue 20, finding 1:
// whoever may write BGPPeers points passwordSecretRef at IronLB's CA (or
// any Secret not meant as a BGP password) to have its content sent to
// every selected node as an "MD5 password", and reads the status to learn
// which Secrets and keys exist. No such Secret may reach the speakers'
// set-up, and the status must be the same whichever way a Secret cannot
// be used.
func TestPasswordFromIronLBsOwnSecrets(t *testing.T) {
	all := secretsOf(
		secretOf("ironlb-ca", v1.SecretTypeOpaque, map[string]string{"ca.crt": "CERT", "ca.key": caKeyPEM}),
		// Typed right but IronLB's own by name: created by someone before
		// the CCM made its own, or a CA rotated out.
		secretOf("ironlb-ca-previous", bgpPasswordType, map[string]string{"ca.key": "IronLBPreviousCAKey"}),
		secretOf("ironlb-speaker-tls", bgpPasswordType, map[string]string{"tls.key": "IronLBSpeakerKey"}),
		secretOf("ironlb-metrics-reader", v1.SecretTypeServiceAccountToken, map[string]string{"token": "MetricsToken"}),
		secretOf("plain", v1.SecretTypeOpaque, map[string]string{"password": "OpaquePassword"}),
		secretOf("basic", v1.SecretTypeBasicAuth, map[string]string{"password": "BasicAuthPassword"}),
		secretOf("tor-pw", bgpPasswordType, map[string]string{"password": "s3cret"}),
		secretOf("long", bgpPasswordType, map[string]string{"password": strings.Repeat("L", 81)}),
		secretOf("newline", bgpPasswordType, map[string]string{"password": "NewlinePassword\n"}),
		secretOf("empty", bgpPasswordType, map[string]string{"password": ""}),
	)
	leaks := []string{"IRONLBCAPRIVATEKEY", "IronLBPreviousCAKey", "IronLBSpeakerKey", "MetricsToken", "OpaquePassword", "BasicAuthPassword", "LLLLLLLL", "NewlinePassword"}
	tests := []struct {
		name      string
		secret    string
		key       string
		wantUsed  bool
		wantError bool
	}{
		{name: "a BGP password Secret", secret: "tor-pw", key: "password", wantUsed: true},
		{name: "the CA's private key", secret: "ironlb-ca", key: "ca.key", wantError: true},
		{name: "the CA's certificate", secret: "ironlb-ca", key: "ca.crt", wantError: true},
		{name: "the previous CA, typed as a password", secret: "ironlb-ca-previous", key: "ca.key", wantError: true},
		{name: "the legacy speaker key, typed as a password", secret: "ironlb-speaker-tls", key: "tls.key", wantError: true},
		{name: "the metrics reader's token", secret: "ironlb-metrics-reader", key: "token", wantError: true},
		{name: "an Opaque Secret", secret: "plain", key: "password", wantError: true},
		{name: "a basic-auth Secret", secret: "basic", key: "password", wantError: true},
		{name: "a missing Secret", secret: "nope", key: "password", wantError: true},
		{name: "a missing key", secret: "tor-pw", key: "other", wantError: true},
		{name: "81 bytes", secret: "long", key: "password", wantError: true},
		{name: "a newline", secret: "newline", key: "password", wantError: true},
		{name: "an empty value", secret: "empty", key: "password", wantError: true},
	}
	n := node("a", nil, "192.0.2.11")
	var messages, reasons []string
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := peer("tor", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
				s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: tc.secret, Key: tc.key}
			})
			cfg, problems := BGPConfigFor(n, []*v1alpha1.BGPPeer{p}, all)
			sent := prototext.Format(cfg)
			for _, l := range leaks {
				if strings.Contains(sent, l) {
					t.Errorf("the speaker's set-up holds %q from Secret %s:\n%s", l, tc.secret, sent)
				}
			}
			if got := len(cfg.GetPeers()) == 1; got != tc.wantUsed {
				t.Errorf("peer used: %v, want %v (problems %+v)", got, tc.wantUsed, problems)
			}
			if tc.wantUsed && cfg.GetPeers()[0].GetPassword() != "s3cret" {
				t.Errorf("password %q, want s3cret", cfg.GetPeers()[0].GetPassword())
			}
			if !tc.wantError {
				if len(problems) != 0 {
					t.Errorf("problems %+v, want none", problems)
				}
				return
			}
			if len(problems) != 1 {
				t.Fatalf("problems %+v, want one", problems)
			}
			// The message may name what the editor wrote (the Secret's name
			// and key), nothing else.
			msg := strings.ReplaceAll(problems[0].Message, strconv.Quote(tc.secret), `"NAME"`)
			msg = strings.ReplaceAll(msg, strconv.Quote(tc.key), `"KEY"`)
			messages = append(messages, msg)
			reasons = append(reasons, string(problems[0].Reason))
		})
	}
	for i := 1; i < len(messages); i++ {
		if diff := cmp.Diff(messages[0], messages[i]); diff != "" {
			t.Errorf("status messages differ by what the Secret is (-first +other):\n%s\nall: %q", diff, messages)
			break
		}
	}
	for i := 1; i < len(reasons); i++ {
		if reasons[i] != reasons[0] {
			t.Errorf("condition reasons differ by what the Secret is: %q", reasons)
			break
		}
	}
}
