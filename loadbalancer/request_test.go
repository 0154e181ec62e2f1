package loadbalancer

import (
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

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
		reason  RequestErrorReason
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
			reason:  ReasonInvalidSharingNamespaces,
		},
		{
			name:    "disagreeing pool spellings",
			svc:     service(map[string]string{AnnotationPool: "a", "metallb.universe.tf/address-pool": "b"}),
			wantErr: `annotations disagree: ironlb.dev/pool="a" but metallb.universe.tf/address-pool="b"`,
			reason:  ReasonAnnotationsDisagree,
		},
		{
			name:    "disagreeing spec.loadBalancerIP",
			svc:     service(map[string]string{AnnotationIPs: "203.0.113.9"}, func(s *v1.Service) { s.Spec.LoadBalancerIP = "203.0.113.10" }),
			wantErr: "spec.loadBalancerIP 203.0.113.10 is not among",
			reason:  ReasonAnnotationsDisagree,
		},
		{name: "bad address", svc: service(map[string]string{AnnotationIPs: "192.0.2.300"}), wantErr: `"192.0.2.300" is not an IP address`, reason: ReasonInvalidAddresses},
		{name: "two IPv4", svc: service(map[string]string{AnnotationIPs: "192.0.2.1,192.0.2.2"}), wantErr: "more than one IPv4 address", reason: ReasonInvalidAddresses},
		{name: "mapped", svc: service(map[string]string{AnnotationIPs: "::ffff:192.0.2.1"}), wantErr: "write IPv4-mapped addresses as IPv4", reason: ReasonInvalidAddresses},
		{name: "loopback", svc: service(map[string]string{AnnotationIPs: "127.0.0.1"}), wantErr: "cannot be a load-balancer address", reason: ReasonInvalidAddresses},
		{name: "empty element", svc: service(map[string]string{AnnotationIPs: "192.0.2.1,"}), wantErr: `"" is not an IP address`, reason: ReasonInvalidAddresses},
		{name: "bad spec.loadBalancerIP", svc: service(nil, func(s *v1.Service) { s.Spec.LoadBalancerIP = "x" }), wantErr: "spec.loadBalancerIP", reason: ReasonInvalidAddresses},
		{
			// Issue 20, finding 5: a key that spells an entry of the
			// Announced record.
			name:    "sharing key forging a record entry",
			svc:     service(map[string]string{AnnotationAllowShared: "x, 192.0.2.50=node-evil"}),
			wantErr: `annotation ironlb.dev/allow-shared-ip: "x, 192.0.2.50=node-evil" is not a sharing key`,
			reason:  ReasonInvalidSharingKey,
		},
		{
			name:    "MetalLB sharing key with an escape sequence",
			svc:     service(map[string]string{"metallb.io/allow-shared-ip": "web\x1b[2J"}),
			wantErr: `annotation metallb.io/allow-shared-ip: "web\x1b[2J" is not a sharing key`,
			reason:  ReasonInvalidSharingKey,
		},
		{
			name:    "long sharing key",
			svc:     service(map[string]string{"metallb.universe.tf/allow-shared-ip": strings.Repeat("k", 64)}),
			wantErr: `"kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk" is not a sharing key`,
			reason:  ReasonInvalidSharingKey,
		},
		{
			name:    "disagreeing sharing keys, one hostile",
			svc:     service(map[string]string{AnnotationAllowShared: "web", "metallb.io/allow-shared-ip": "web\x1b"}),
			wantErr: `annotations disagree: ironlb.dev/allow-shared-ip="web" but metallb.io/allow-shared-ip="web\x1b"; keep one`,
			reason:  ReasonAnnotationsDisagree,
		},
		{
			name:    "pool name with a comma",
			svc:     service(map[string]string{AnnotationPool: "gold,silver"}),
			wantErr: `annotation ironlb.dev/pool: "gold,silver" is not an IPPool name`,
			reason:  ReasonInvalidPoolName,
		},
		{
			name:    "MetalLB pool name in capitals",
			svc:     service(map[string]string{"metallb.io/address-pool": "Gold"}),
			wantErr: `annotation metallb.io/address-pool: "Gold" is not an IPPool name`,
			reason:  ReasonInvalidPoolName,
		},
		{
			name:    "too many namespaces to share with",
			svc:     service(map[string]string{AnnotationAllowShared: "dns", AnnotationSharingCrossNamespace: nsList(65)}),
			wantErr: `more than 64 namespaces`,
			reason:  ReasonInvalidSharingNamespaces,
		},
		{
			name: "64 namespaces to share with",
			svc:  service(map[string]string{AnnotationAllowShared: "dns", AnnotationSharingCrossNamespace: nsList(64)}),
			want: with(func(r *ipam.Request) {
				r.Sharing.Key = "*/dns"
				r.Sharing.Namespaces = strings.Split(nsList(64), ",")
				slices.Sort(r.Sharing.Namespaces)
			}),
		},
		{
			name: "MetalLB's documented key, trimmed",
			svc:  service(map[string]string{"metallb.universe.tf/allow-shared-ip": " key-to-share-1.2.3.4 "}),
			want: with(func(r *ipam.Request) { r.Sharing.Key = "shop/key-to-share-1.2.3.4" }),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RequestFor(tc.svc, map[string]string{"team": "a"})
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tc.wantErr)
				}
				if got := ReasonOf(err); got != tc.reason {
					t.Errorf("reason = %q, want %q", got, tc.reason)
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
// family, a pool by a valid name and a sharing key that follows the
// grammar, scoped to the Service's namespace.
func FuzzRequestFor(f *testing.F) {
	f.Add("gold", "192.0.2.1", "key", "", "198.51.100.1")
	f.Add("", "192.0.2.1,2001:db8::2", "", "a", "")
	f.Add("gold", "", "x, 192.0.2.50=node-evil", "", "")
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
		if req.Pool != "" && len(validation.IsDNS1123Subdomain(req.Pool)) > 0 {
			t.Fatalf("accepted pool name %q", req.Pool)
		}
		if req.Sharing.Key != "" {
			ns, key, ok := strings.Cut(req.Sharing.Key, "/")
			if !ok || ns != "shop" || ValidateSharingKey(key) != nil {
				t.Fatalf("accepted sharing key %q", req.Sharing.Key)
			}
		}
	})
}

func nsList(n int) string {
	var out []string
	for i := range n {
		out = append(out, fmt.Sprintf("ns-%d", i))
	}
	return strings.Join(out, ",")
}

func TestValidateSharingKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"web", true},
		{"key-to-share-1.2.3.4", true}, // MetalLB's documentation
		{"Shared_IP.v2", true},
		{"a", true},
		{"0", true},
		{strings.Repeat("k", 63), true},
		{strings.Repeat("k", 64), false},
		{"", false},
		{"-web", false},
		{"web.", false},
		{"web key", false},
		{"x, 192.0.2.50=node-evil", false},
		{"web@other", false},
		{"ns/web", false},
		{"a;bgp:b+c", false},
		{"web%2C", false},
		{"web\x1b[2J", false},
		{"web\n", false},
		{"wéb", false},
		{"web\u202e", false},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprintf("%q", tc.key), func(t *testing.T) {
			err := ValidateSharingKey(tc.key)
			if (err == nil) != tc.ok {
				t.Errorf("ValidateSharingKey(%q) = %v, want ok: %t", tc.key, err, tc.ok)
			}
			if err != nil && !strings.Contains(err.Error(), strconv.Quote(tc.key)) && len(tc.key) <= maxShownValue {
				t.Errorf("error %q does not quote the key", err)
			}
		})
	}
}

// FuzzValidateSharingKey: an accepted key is short and holds none of the
// characters that separate the Announced record's fields, no whitespace
// and nothing unprintable.
func FuzzValidateSharingKey(f *testing.F) {
	for _, s := range []string{"web", "key-to-share-1.2.3.4", "x, 192.0.2.50=node-evil", "a\x1b[2J", "k\n", "a.b", "-"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if ValidateSharingKey(key) != nil {
			return
		}
		if len(key) == 0 || len(key) > MaxSharingKeyLen {
			t.Fatalf("accepted %q of %d bytes", key, len(key))
		}
		for _, r := range key {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
				t.Fatalf("accepted %q holding %q", key, r)
			}
		}
	})
}
