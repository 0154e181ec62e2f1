package loadbalancer

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/ipam"
)

func service(annotations map[string]string, mutate ...func(*v1.Service)) *v1.Service {
	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "uid-1", Annotations: annotations, Labels: map[string]string{"app": "web"}},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			Ports:      []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}, {Port: 53, Protocol: v1.ProtocolUDP}},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
		},
	}
	for _, m := range mutate {
		m(svc)
	}
	return svc
}

func policy(p v1.IPFamilyPolicy, fams ...v1.IPFamily) func(*v1.Service) {
	return func(s *v1.Service) {
		s.Spec.IPFamilyPolicy = &p
		s.Spec.IPFamilies = fams
	}
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func TestRequestFor(t *testing.T) {
	base := ipam.Request{
		Owner:      "uid-1",
		Name:       "shop/web",
		Subject:    ipam.Subject{Namespace: "shop", NamespaceLabels: map[string]string{"team": "a"}, Labels: map[string]string{"app": "web"}},
		Families:   []ipam.Family{ipam.IPv4},
		RequireAll: true,
		Sharing: ipam.Sharing{
			TrafficPolicy: "Cluster",
			Ports:         []ipam.Port{{Protocol: "TCP", Port: 80}, {Protocol: "UDP", Port: 53}},
		},
	}
	with := func(f func(*ipam.Request)) ipam.Request {
		r := base
		r.Sharing.Ports = append([]ipam.Port(nil), base.Sharing.Ports...)
		f(&r)
		return r
	}
	tests := []struct {
		name    string
		svc     *v1.Service
		want    ipam.Request
		wantErr string
	}{
		{name: "plain", svc: service(nil), want: base},
		{
			name: "ironlb annotations",
			svc: service(map[string]string{
				AnnotationPool: "gold", AnnotationIPs: "192.0.2.7, 2001:db8::7", AnnotationAllowShared: "web",
			}, policy(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol)),
			want: with(func(r *ipam.Request) {
				r.Pool, r.Sharing.Key = "gold", "shop/web" // keys are the namespace's
				r.Addresses = addrs("192.0.2.7", "2001:db8::7")
				r.Families = []ipam.Family{ipam.IPv4, ipam.IPv6}
			}),
		},
		{
			name: "metallb.universe.tf spellings",
			svc: service(map[string]string{
				"metallb.universe.tf/address-pool":    "legacy",
				"metallb.universe.tf/loadBalancerIPs": "198.51.100.1",
				"metallb.universe.tf/allow-shared-ip": "k",
			}),
			want: with(func(r *ipam.Request) {
				r.Pool, r.Sharing.Key, r.Addresses = "legacy", "shop/k", addrs("198.51.100.1")
			}),
		},
		{
			name: "metallb.io spellings",
			svc: service(map[string]string{
				"metallb.io/address-pool": "legacy", "metallb.io/loadBalancerIPs": "198.51.100.1", "metallb.io/allow-shared-ip": "k",
			}),
			want: with(func(r *ipam.Request) {
				r.Pool, r.Sharing.Key, r.Addresses = "legacy", "shop/k", addrs("198.51.100.1")
			}),
		},
		{
			name: "agreeing spellings",
			svc:  service(map[string]string{AnnotationPool: "p", "metallb.universe.tf/address-pool": "p"}),
			want: with(func(r *ipam.Request) { r.Pool = "p" }),
		},
		{
			name: "spec.loadBalancerIP",
			svc:  service(nil, func(s *v1.Service) { s.Spec.LoadBalancerIP = "203.0.113.9" }),
			want: with(func(r *ipam.Request) { r.Addresses = addrs("203.0.113.9") }),
		},
		{
			name: "spec.loadBalancerIP agreeing with the annotation",
			svc:  service(map[string]string{AnnotationIPs: "203.0.113.9"}, func(s *v1.Service) { s.Spec.LoadBalancerIP = "203.0.113.9" }),
			want: with(func(r *ipam.Request) { r.Addresses = addrs("203.0.113.9") }),
		},
		{
			name: "PreferDualStack",
			svc:  service(nil, policy(v1.IPFamilyPolicyPreferDualStack, v1.IPv6Protocol, v1.IPv4Protocol)),
			want: with(func(r *ipam.Request) {
				r.Families, r.RequireAll = []ipam.Family{ipam.IPv6, ipam.IPv4}, false
			}),
		},
		{
			name: "SingleStack IPv6",
			svc:  service(nil, policy(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)),
			want: with(func(r *ipam.Request) { r.Families = []ipam.Family{ipam.IPv6} }),
		},
		{
			name: "Local traffic policy, default protocol",
			svc: service(nil, func(s *v1.Service) {
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.Ports = []v1.ServicePort{{Port: 443}}
			}),
			want: with(func(r *ipam.Request) {
				r.Sharing.TrafficPolicy = "Local"
				r.Sharing.Ports = []ipam.Port{{Protocol: "TCP", Port: 443}}
			}),
		},
		{
			name: "Local traffic policy: sharers must select the same pods",
			svc: service(nil, func(s *v1.Service) {
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.Selector = map[string]string{"tier": "web", "app": "shop"}
			}),
			want: with(func(r *ipam.Request) {
				r.Sharing.TrafficPolicy = "Local"
				r.Sharing.Selector = "app=shop,tier=web"
			}),
		},
		{
			name: "sharing across namespaces",
			svc:  service(map[string]string{AnnotationAllowShared: "dns", AnnotationSharingCrossNamespace: " infra, shop2,infra "}),
			want: with(func(r *ipam.Request) {
				r.Sharing.Key, r.Sharing.Namespaces = "*/dns", []string{"infra", "shop2"}
			}),
		},
		{
			name: "sharing with any namespace",
			svc:  service(map[string]string{AnnotationAllowShared: "dns", AnnotationSharingCrossNamespace: "*"}),
			want: with(func(r *ipam.Request) {
				r.Sharing.Key, r.Sharing.Namespaces = "*/dns", []string{"*"}
			}),
		},
		{
			name:    "a bad namespace to share with",
			svc:     service(map[string]string{AnnotationAllowShared: "dns", AnnotationSharingCrossNamespace: "Infra_1"}),
			wantErr: `"Infra_1" is not a namespace name`,
		},
		{
			name:    "disagreeing pool spellings",
			svc:     service(map[string]string{AnnotationPool: "a", "metallb.universe.tf/address-pool": "b"}),
			wantErr: `annotations disagree: ironlb.dev/pool="a" but metallb.universe.tf/address-pool="b"`,
		},
		{
			name:    "disagreeing spec.loadBalancerIP",
			svc:     service(map[string]string{AnnotationIPs: "203.0.113.9"}, func(s *v1.Service) { s.Spec.LoadBalancerIP = "203.0.113.10" }),
			wantErr: "spec.loadBalancerIP 203.0.113.10 is not among",
		},
		{name: "bad address", svc: service(map[string]string{AnnotationIPs: "192.0.2.300"}), wantErr: `"192.0.2.300" is not an IP address`},
		{name: "two IPv4", svc: service(map[string]string{AnnotationIPs: "192.0.2.1,192.0.2.2"}), wantErr: "more than one IPv4 address"},
		{name: "mapped", svc: service(map[string]string{AnnotationIPs: "::ffff:192.0.2.1"}), wantErr: "write IPv4-mapped addresses as IPv4"},
		{name: "loopback", svc: service(map[string]string{AnnotationIPs: "127.0.0.1"}), wantErr: "cannot be a load-balancer address"},
		{name: "empty element", svc: service(map[string]string{AnnotationIPs: "192.0.2.1,"}), wantErr: `"" is not an IP address`},
		{name: "bad spec.loadBalancerIP", svc: service(nil, func(s *v1.Service) { s.Spec.LoadBalancerIP = "x" }), wantErr: "spec.loadBalancerIP"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RequestFor(tc.svc, map[string]string{"team": "a"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{})); diff != "" {
				t.Errorf("RequestFor (-want +got):\n%s", diff)
			}
		})
	}
}

// FuzzParseAddressList checks that any accepted list holds usable addresses,
// at most one per family, that print back to what was parsed.
func FuzzParseAddressList(f *testing.F) {
	for _, s := range []string{"192.0.2.1", "192.0.2.1,2001:db8::1", " 2001:db8::1 , 192.0.2.1 ", "", ",", "::ffff:1.2.3.4", "fe80::1%eth0", "1.2.3.4,1.2.3.5"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseAddressList(s)
		if err != nil {
			return
		}
		if len(got) == 0 || len(got) > 2 {
			t.Fatalf("ParseAddressList(%q) = %v", s, got)
		}
		if len(got) == 2 && ipam.FamilyOf(got[0]) == ipam.FamilyOf(got[1]) {
			t.Fatalf("two addresses of one family: %v", got)
		}
		for _, a := range got {
			if a.Zone() != "" || a.Is4In6() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() {
				t.Fatalf("accepted unusable %s", a)
			}
			if back, err := netip.ParseAddr(a.String()); err != nil || back != a {
				t.Fatalf("%s does not round-trip", a)
			}
		}
	})
}

// FuzzRequestFor feeds arbitrary annotation values through RequestFor: it
// must never panic, and an accepted request names at most one address per
// family, each within the Service's families.
func FuzzRequestFor(f *testing.F) {
	f.Add("gold", "192.0.2.1", "key", "", "198.51.100.1")
	f.Add("", "192.0.2.1,2001:db8::2", "", "a", "")
	f.Fuzz(func(t *testing.T, pool, ips, shared, metallbPool, metallbIPs string) {
		svc := service(map[string]string{
			AnnotationPool: pool, AnnotationIPs: ips, AnnotationAllowShared: shared,
			"metallb.universe.tf/address-pool": metallbPool, "metallb.universe.tf/loadBalancerIPs": metallbIPs,
		}, policy(v1.IPFamilyPolicyPreferDualStack, v1.IPv4Protocol, v1.IPv6Protocol))
		req, err := RequestFor(svc, nil)
		if err != nil {
			return
		}
		if len(req.Addresses) > 2 {
			t.Fatalf("%d addresses", len(req.Addresses))
		}
		if req.Pool != strings.TrimSpace(pool) && req.Pool != strings.TrimSpace(metallbPool) {
			t.Fatalf("pool %q from neither annotation", req.Pool)
		}
	})
}
