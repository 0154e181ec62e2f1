package bgppeers

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/api/v1alpha1"
)

func node(name string, lbls map[string]string, ips ...string) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls}}
	for _, ip := range ips {
		n.Status.Addresses = append(n.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip})
	}
	return n
}

func peer(name, addr string, mod ...func(*v1alpha1.BGPPeerSpec)) *v1alpha1.BGPPeer {
	p := &v1alpha1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.BGPPeerSpec{
		PeerAddress: addr, PeerASN: 64512, MyASN: 64513, PeerPort: 179,
		HoldTime: &metav1.Duration{Duration: 9 * time.Second}, ConnectRetryTime: &metav1.Duration{Duration: 2 * time.Second},
	}}
	for _, m := range mod {
		m(&p.Spec)
	}
	return p
}

func secrets(m map[string]map[string]string) Secrets {
	return func(name string) (*v1.Secret, error) {
		d, ok := m[name]
		if !ok {
			return nil, nil
		}
		s := &v1.Secret{Type: v1alpha1.BGPPasswordSecretType, Data: map[string][]byte{}}
		for k, v := range d {
			s.Data[k] = []byte(v)
		}
		return s, nil
	}
}

func TestBGPConfigFor(t *testing.T) {
	rack1 := &metav1.LabelSelector{MatchLabels: map[string]string{"rack": "r1"}}
	withPassword := func(name, key string) func(*v1alpha1.BGPPeerSpec) {
		return func(s *v1alpha1.BGPPeerSpec) { s.PasswordSecretRef = &v1alpha1.SecretKeyRef{Name: name, Key: key} }
	}
	sec := secrets(map[string]map[string]string{"tor-pw": {"password": "s3cret"}})
	tests := []struct {
		name     string
		node     *v1.Node
		peers    []*v1alpha1.BGPPeer
		want     *speakerv1.BGPConfig
		problems []Reason
	}{
		{
			name:  "no peer selects the node",
			node:  node("a", map[string]string{"rack": "r2"}, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{peer("tor", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.NodeSelector = rack1 })},
		},
		{
			name:  "dual-stack node, password, selected",
			node:  node("a", map[string]string{"rack": "r1"}, "192.0.2.11", "2001:db8::11"),
			peers: []*v1alpha1.BGPPeer{peer("tor", "192.0.2.1", withPassword("tor-pw", ""), func(s *v1alpha1.BGPPeerSpec) { s.NodeSelector = rack1 })},
			want: &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, NextHopV6: "2001:db8::11", Peers: []*speakerv1.BGPPeer{{
				Name: "tor", Address: "192.0.2.1", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2, Password: "s3cret",
			}}},
		},
		{
			name: "BFD and graceful restart, defaults filled in",
			node: node("a", nil, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{
				peer("tor-a", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
					s.BFD = &v1alpha1.BGPPeerBFD{Enabled: true}
					s.GracefulRestart = &v1alpha1.BGPPeerGracefulRestart{Enabled: true}
				}),
				peer("tor-b", "192.0.2.2", func(s *v1alpha1.BGPPeerSpec) {
					three := int32(5)
					s.BFD = &v1alpha1.BGPPeerBFD{Enabled: true, ReceiveInterval: &metav1.Duration{Duration: 100 * time.Millisecond},
						TransmitInterval: &metav1.Duration{Duration: 50 * time.Millisecond}, DetectMultiplier: &three}
					s.GracefulRestart = &v1alpha1.BGPPeerGracefulRestart{Enabled: true, RestartTime: &metav1.Duration{Duration: 1500 * time.Millisecond}}
				}),
				peer("tor-c", "192.0.2.3", func(s *v1alpha1.BGPPeerSpec) {
					s.BFD = &v1alpha1.BGPPeerBFD{Enabled: false, ReceiveInterval: &metav1.Duration{Duration: 100 * time.Millisecond}}
					s.GracefulRestart = &v1alpha1.BGPPeerGracefulRestart{Enabled: false}
				}),
			},
			want: &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{{
				Name: "tor-a", Address: "192.0.2.1", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
				Bfd:             &speakerv1.BFD{ReceiveIntervalMs: 300, TransmitIntervalMs: 300, DetectMultiplier: 3},
				GracefulRestart: &speakerv1.GracefulRestart{RestartTimeSeconds: 120},
			}, {
				Name: "tor-b", Address: "192.0.2.2", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
				Bfd:             &speakerv1.BFD{ReceiveIntervalMs: 100, TransmitIntervalMs: 50, DetectMultiplier: 5},
				GracefulRestart: &speakerv1.GracefulRestart{RestartTimeSeconds: 2},
			}, {
				Name: "tor-c", Address: "192.0.2.3", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
			}}},
		},
		{
			name:  "a missing Secret drops that peer only",
			node:  node("a", nil, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{peer("tor-a", "192.0.2.1", withPassword("nope", "")), peer("tor-b", "192.0.2.2")},
			want: &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{{
				Name: "tor-b", Address: "192.0.2.2", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
			}}},
			problems: []Reason{ReasonPasswordSecret},
		},
		{
			name:     "a missing key",
			node:     node("a", nil, "192.0.2.11"),
			peers:    []*v1alpha1.BGPPeer{peer("tor", "192.0.2.1", withPassword("tor-pw", "other"))},
			problems: []Reason{ReasonPasswordSecret},
		},
		{
			name:     "IPv6-only node needs a router ID",
			node:     node("a", nil, "2001:db8::11"),
			peers:    []*v1alpha1.BGPPeer{peer("tor", "2001:db8::1")},
			problems: []Reason{ReasonRouterID},
		},
		{
			name:  "IPv6-only node with a router ID",
			node:  node("a", nil, "2001:db8::11"),
			peers: []*v1alpha1.BGPPeer{peer("tor", "2001:db8::1", func(s *v1alpha1.BGPPeerSpec) { s.RouterID = "10.0.0.11" })},
			want: &speakerv1.BGPConfig{RouterId: "10.0.0.11", Asn: 64513, NextHopV6: "2001:db8::11", Peers: []*speakerv1.BGPPeer{{
				Name: "tor", Address: "2001:db8::1", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
			}}},
		},
		{
			name: "two router IDs: the second peer is refused",
			node: node("a", nil, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{
				peer("tor-a", "192.0.2.1"),
				peer("tor-b", "192.0.2.2", func(s *v1alpha1.BGPPeerSpec) { s.RouterID = "10.0.0.1" }),
			},
			want: &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{{
				Name: "tor-a", Address: "192.0.2.1", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
			}}},
			problems: []Reason{ReasonRouterID},
		},
		{
			name:  "two peers with one address: the first by name keeps the session",
			node:  node("a", nil, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{peer("tor-b", "192.0.2.1"), peer("tor-a", "192.0.2.1")},
			want: &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{{
				Name: "tor-a", Address: "192.0.2.1", Port: 179, PeerAsn: 64512, MyAsn: 64513, HoldTimeSeconds: 9, ConnectRetrySeconds: 2,
			}}},
			problems: []Reason{ReasonDuplicate},
		},
		{
			name:     "hold time 0 is unsupported",
			node:     node("a", nil, "192.0.2.11"),
			peers:    []*v1alpha1.BGPPeer{peer("tor", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) { s.HoldTime = &metav1.Duration{} })},
			problems: []Reason{ReasonUnsupported},
		},
		{
			name: "bad selector",
			node: node("a", nil, "192.0.2.11"),
			peers: []*v1alpha1.BGPPeer{peer("tor", "192.0.2.1", func(s *v1alpha1.BGPPeerSpec) {
				s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "rack", Operator: "Near"}}}
			})},
			problems: []Reason{ReasonInvalidSelector},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := BGPConfigFor(tc.node, tc.peers, sec)
			if diff := cmp.Diff(tc.want, got, protocmp.Transform()); diff != "" {
				t.Errorf("set-up (-want +got):\n%s", diff)
			}
			var reasons []Reason
			for _, p := range problems {
				reasons = append(reasons, p.Reason)
				if p.Message == "" {
					t.Errorf("problem %+v has no message", p)
				}
			}
			if diff := cmp.Diff(tc.problems, reasons); diff != "" {
				t.Errorf("problems (-want +got):\n%s\n%+v", diff, problems)
			}
		})
	}
}
