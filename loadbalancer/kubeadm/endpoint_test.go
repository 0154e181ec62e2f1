package kubeadm

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestEndpointOf(t *testing.T) {
	const header = "apiVersion: kubeadm.k8s.io/v1beta4\nkind: ClusterConfiguration\n"
	for _, tc := range []struct {
		name    string
		data    map[string]string
		want    Endpoint
		wantErr string
	}{
		{name: "IPv4 with port", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250:6443\n"}, want: Endpoint{VIP: netip.MustParseAddr("192.0.2.250")}},
		{name: "IPv4 without port", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250\n"}, want: Endpoint{VIP: netip.MustParseAddr("192.0.2.250")}},
		{name: "IPv6 with port", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"[2001:db8::250]:6443\"\n"}, want: Endpoint{VIP: netip.MustParseAddr("2001:db8::250")}},
		{name: "IPv6 without port", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"2001:db8::250\"\n"}, want: Endpoint{VIP: netip.MustParseAddr("2001:db8::250")}},
		{name: "IPv6 in brackets without port", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"[2001:db8::250]\"\n"}, want: Endpoint{VIP: netip.MustParseAddr("2001:db8::250")}},
		{name: "v1beta3, other fields", data: map[string]string{DataKey: "apiVersion: kubeadm.k8s.io/v1beta3\nkind: ClusterConfiguration\nkubernetesVersion: v1.30.0\nnetworking: {podSubnet: 10.244.0.0/16}\ncontrolPlaneEndpoint: 192.0.2.250:6443\n"}, want: Endpoint{VIP: netip.MustParseAddr("192.0.2.250")}},
		{name: "DNS name", data: map[string]string{DataKey: header + "controlPlaneEndpoint: cp.example.com:6443\n"}, want: Endpoint{Host: "cp.example.com"}},
		{name: "no endpoint", data: map[string]string{DataKey: header}, want: Endpoint{}},
		{name: "no ClusterConfiguration", data: map[string]string{}, wantErr: "has no ClusterConfiguration"},
		{name: "not YAML", data: map[string]string{DataKey: "{{"}, wantErr: "invalid kubeadm"},
		{name: "duplicate key", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250\ncontrolPlaneEndpoint: 192.0.2.251\n"}, wantErr: "already set"},
		{name: "endpoint not a string", data: map[string]string{DataKey: header + "controlPlaneEndpoint: [1, 2]\n"}, wantErr: "invalid kubeadm"},
		{name: "other kind", data: map[string]string{DataKey: "apiVersion: kubeadm.k8s.io/v1beta4\nkind: InitConfiguration\ncontrolPlaneEndpoint: 192.0.2.250\n"}, wantErr: "kind \"InitConfiguration\""},
		{name: "other group", data: map[string]string{DataKey: "apiVersion: evil.example/v1\nkind: ClusterConfiguration\ncontrolPlaneEndpoint: 192.0.2.250\n"}, wantErr: "apiVersion \"evil.example/v1\""},
		{name: "port out of range", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250:70000\n"}, wantErr: "not a number from 1 to 65535"},
		{name: "port zero", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250:0\n"}, wantErr: "not a number from 1 to 65535"},
		{name: "port with sign", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 192.0.2.250:+6443\n"}, wantErr: "not a number from 1 to 65535"},
		{name: "loopback", data: map[string]string{DataKey: header + "controlPlaneEndpoint: 127.0.0.1:6443\n"}, wantErr: "not an address a host can serve"},
		{name: "zone", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"[fe80::1%eth0]:6443\"\n"}, wantErr: "not an address a host can serve"},
		{name: "IPv4-mapped", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"[::ffff:192.0.2.250]:6443\"\n"}, wantErr: "not an address a host can serve"},
		{name: "garbage host", data: map[string]string{DataKey: header + "controlPlaneEndpoint: \"a b:6443\"\n"}, wantErr: "neither an IP address nor a DNS name"},
		{name: "too large", data: map[string]string{DataKey: header + "x: " + strings.Repeat("a", maxClusterConfiguration) + "\n"}, wantErr: "more than 65536"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: Name}, Data: tc.data}
			got, err := EndpointOf(cm)
			if tc.wantErr != "" {
				if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("EndpointOf = %+v, %v; want ErrInvalid containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("EndpointOf (-want +got):\n%s", diff)
			}
		})
	}
}
