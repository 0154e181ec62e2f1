package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/dynamic"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// TestIPPoolValidation applies deploy/'s CRD to a real API server and checks
// that malformed pools are rejected at admission with readable messages and
// good ones are accepted.
func TestIPPoolValidation(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cp := withCRDs(t, ctx, "ippools.ironlb.dev")
	checkAdmission(t, ctx, cp, "IPPool", "p", []admissionCase{
		{"cidrs and ranges", "  addresses: [192.0.2.0/28, 2001:db8:1::/64, 192.0.2.200-192.0.2.250, '2001:db8:2::10 - 2001:db8:2::20']", nil},
		{"single address range", "  addresses: [198.51.100.7-198.51.100.7]", nil},
		{"ipv6 range across a byte", "  addresses: [2001:db8::ff-2001:db8::100]", nil},
		{"empty list", "  addresses: []", []string{"spec.addresses", "should have at least 1 items"}},
		{"missing addresses", "  autoAssign: true", []string{"spec.addresses", "Required value"}},
		{"bad CIDR", "  addresses: [192.0.2.0/33]", []string{"spec.addresses[0]", "must be a CIDR"}},
		{"garbage", "  addresses: [pool-a]", []string{"spec.addresses[0]", "must be a CIDR"}},
		{"host bits", "  addresses: [192.0.2.5/24]", []string{"spec.addresses[0]", "CIDR 192.0.2.5/24 has host bits set; write its network address"}},
		{"reversed IPv4 range", "  addresses: [192.0.2.0/28, 192.0.2.250-192.0.2.200]", []string{"spec.addresses[1]", "range 192.0.2.250-192.0.2.200 is reversed"}},
		{"reversed IPv4 range, one bit", "  addresses: [192.0.2.11-192.0.2.10]", []string{"is reversed"}},
		{"reversed IPv6 range", "  addresses: [2001:db8::100-2001:db8::ff]", []string{"range 2001:db8::100-2001:db8::ff is reversed"}},
		{"reversed IPv6 range, high bits", "  addresses: [2001:db9::-2001:db8::ffff]", []string{"is reversed"}},
		{"mixed-family range", "  addresses: [192.0.2.1-2001:db8::1]", []string{"spec.addresses[0]", "mixes IPv4 and IPv6"}},
		{"IPv4-mapped IPv6", "  addresses: ['::ffff:192.0.2.1-::ffff:192.0.2.9']", []string{"must be a CIDR"}},
		{"three parts", "  addresses: [192.0.2.1-192.0.2.2-192.0.2.3]", []string{"must be a CIDR"}},
		{"duplicate entries", "  addresses: [192.0.2.0/28, 192.0.2.0/28]", []string{"Duplicate value"}},
		{"everything", "  addresses: [0.0.0.0/0]", []string{"0.0.0.0/0 overlaps the unspecified block (0.0.0.0/8, ::)"}},
		{"everything v6", "  addresses: ['::/0']", []string{"::/0 overlaps the unspecified block"}},
		{"this network", "  addresses: [0.0.0.0/30]", []string{"overlaps the unspecified block"}},
		{"loopback", "  addresses: [127.0.0.0/24]", []string{"127.0.0.0/24 overlaps the loopback block (127.0.0.0/8, ::1)"}},
		{"loopback in a wide CIDR", "  addresses: [64.0.0.0/2]", []string{"overlaps the loopback block"}},
		{"loopback range end", "  addresses: [126.255.255.250-127.0.0.3]", []string{"overlaps the loopback block"}},
		{"loopback v6", "  addresses: ['::1/128']", []string{"overlaps the loopback block"}},
		{"link-local", "  addresses: [169.254.1.0/24]", []string{"overlaps the link-local block"}},
		{"link-local v6 range", "  addresses: ['fe80::1-fe80::9']", []string{"overlaps the link-local block"}},
		{"multicast", "  addresses: [239.0.0.0/24]", []string{"overlaps the multicast block"}},
		{"multicast v6", "  addresses: ['ff02::/16']", []string{"overlaps the multicast block"}},
		{"broadcast", "  addresses: [255.255.255.0/24]", []string{"overlaps the broadcast address"}},
		{"IPv4-mapped CIDR", "  addresses: ['::ffff:0:0/104']", []string{"must be a CIDR"}},
		{"just beside the blocks", "  addresses: [1.0.0.0/8, 126.0.0.0/8, 128.0.0.0/8, 169.253.0.0/16, 223.255.255.0/24, 240.0.0.0/5, '::2/127', 'fe00::/9', 'fec0::/10']", nil},
		{"layer2", "  addresses: [192.0.2.0/28]\n  layer2:\n    nodeSelector:\n      matchLabels: {rack: r1}\n      matchExpressions: [{key: zone, operator: In, values: [a, b]}, {key: spare, operator: DoesNotExist}]\n    interfaces: [eth0, bond0.100]", nil},
		{"layer2 bad operator", "  addresses: [192.0.2.0/28]\n  layer2:\n    nodeSelector:\n      matchExpressions: [{key: zone, operator: Near, values: [a]}]", []string{"spec.layer2", "operator must be one of In, NotIn, Exists, DoesNotExist"}},
		{"layer2 In without values", "  addresses: [192.0.2.0/28]\n  layer2:\n    nodeSelector:\n      matchExpressions: [{key: zone, operator: In}]", []string{"spec.layer2", "In and NotIn need values"}},
		{"dhcp", "  addresses: [192.0.2.100-192.0.2.199]\n  autoAssign: false\n  dhcp:\n    interface: eth0", nil},
		{"dhcp without autoAssign false", "  addresses: [192.0.2.100-192.0.2.199]\n  dhcp: {}", []string{"dhcp: a pool of addresses leased from DHCP must set autoAssign: false"}},
		{"dhcp with IPv6", "  addresses: [192.0.2.100-192.0.2.199, '2001:db8::/64']\n  autoAssign: false\n  dhcp: {}", []string{"DHCP leases IPv4 addresses only"}},
		{"dhcp bad interface", "  addresses: [192.0.2.100-192.0.2.199]\n  autoAssign: false\n  dhcp:\n    interface: a/b", []string{"spec.dhcp.interface"}},
		{"dhcp and clusterAPI", "  addresses: [192.0.2.100-192.0.2.199]\n  autoAssign: false\n  dhcp: {}\n  clusterAPI: {prefix: 24}", []string{"dhcp and clusterAPI exclude each other"}},
		{"layer2 Exists with values", "  addresses: [192.0.2.0/28]\n  layer2:\n    nodeSelector:\n      matchExpressions: [{key: zone, operator: Exists, values: [a]}]", []string{"spec.layer2", "Exists and DoesNotExist take none"}},
		{"layer2 interface too long", "  addresses: [192.0.2.0/28]\n  layer2:\n    interfaces: [averyveryverylongname]", []string{"spec.layer2.interfaces[0]", "Too long"}},
		{"layer2 interface with slash", "  addresses: [192.0.2.0/28]\n  layer2:\n    interfaces: ['eth0/1']", []string{"spec.layer2.interfaces[0]"}},
		{"layer2 interface dot", "  addresses: [192.0.2.0/28]\n  layer2:\n    interfaces: ['..']", []string{"an interface name cannot be . or .."}},
		{"bgp", "  addresses: [192.0.2.0/24, '2001:db8:5::/64']\n  bgp:\n    nodeSelector:\n      matchLabels: {rack: r1}\n    advertisements:\n    - peerSelector: {matchLabels: {tor: a}}\n      communities: ['65000:100', no-export]\n      largeCommunities: ['4200000000:1:2']\n      localPref: 200\n      aggregationLength: 24\n      aggregationLengthV6: 64\n    - {}", nil},
		{"bgp and layer2", "  addresses: [192.0.2.0/28]\n  layer2: {}\n  bgp: {}", nil},
		{"bgp community too big", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{communities: ['65536:1']}]", []string{"community 65536:1: each number must be at most 65535"}},
		{"bgp community garbage", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{communities: ['no-such']}]", []string{"community no-such must be two numbers"}},
		{"bgp large community too big", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{largeCommunities: ['1:2:4294967296']}]", []string{"large community 1:2:4294967296: each number must be at most 4294967295"}},
		{"bgp large community short", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{largeCommunities: ['1:2']}]", []string{"large community 1:2 must be three numbers"}},
		{"bgp aggregation too short", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{aggregationLength: 24}]", []string{"aggregationLength is shorter than one of the pool's IPv4 CIDRs"}},
		{"bgp aggregation v6 too short", "  addresses: ['2001:db8::/120']\n  bgp:\n    advertisements: [{aggregationLengthV6: 64}]", []string{"aggregationLengthV6 is shorter than one of the pool's IPv6 CIDRs"}},
		{"bgp aggregation too long", "  addresses: [192.0.2.0/28]\n  bgp:\n    advertisements: [{aggregationLength: 33}]", []string{"aggregationLength", "less than or equal to 32"}},
		{"layer2 duplicate interfaces", "  addresses: [192.0.2.0/28]\n  layer2:\n    interfaces: [eth0, eth0]", []string{"Duplicate value"}},
		{"serviceAllocation namespaces", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: [team-a, b2]\n    serviceSelector: {matchLabels: {exposure: public}}", nil},
		{"serviceAllocation namespace not a DNS label", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: [Team_A]", []string{"spec.serviceAllocation.namespaces[0]", "should match"}},
		{"serviceAllocation namespace too long", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: [" + strings.Repeat("a", 64) + "]", []string{"spec.serviceAllocation.namespaces[0]", "Too long"}},
		{"serviceAllocation namespace empty", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: ['']", []string{"spec.serviceAllocation.namespaces[0]"}},
		{"serviceAllocation duplicate namespaces", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: [a, a]", []string{"Duplicate value"}},
		{"serviceAllocation too many namespaces", "  addresses: [192.0.2.0/28]\n  serviceAllocation:\n    namespaces: [" + manyNamespaces(129) + "]", []string{"spec.serviceAllocation.namespaces", "must have at most 128 items"}},
	})
}

// TestIPPoolReversedRangeRuleMatchesGo cross-checks the CRD's bitwise
// reversed-range rule against Go's address order on random ranges.
func TestIPPoolReversedRangeRuleMatchesGo(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cp := withCRDs(t, ctx, "ippools.ironlb.dev")
	client := dynamic.NewForConfigOrDie(cp.Config).Resource(v1alpha1.IPPoolResource)
	rng := rand.New(rand.NewPCG(7, 11))
	randAddr := func(v6 bool, near netip.Addr) netip.Addr {
		if near.IsValid() && rng.IntN(2) == 0 {
			// Differ from near in one random bit, to hit every bit position.
			b := near.AsSlice()
			bit := rng.IntN(len(b) * 8)
			b[bit/8] ^= 0x80 >> (bit % 8)
			a, _ := netip.AddrFromSlice(b)
			return a
		}
		if !v6 {
			return netip.AddrFrom4([4]byte{192, 0, 2, byte(rng.IntN(256))})
		}
		var b [16]byte
		b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
		for i := 4; i < 16; i++ {
			b[i] = byte(rng.IntN(256))
		}
		return netip.AddrFrom16(b)
	}
	for i := range 150 {
		v6 := i%2 == 1
		a := randAddr(v6, netip.Addr{})
		b := randAddr(v6, a)
		if !v6 && !b.Is4() || v6 && (b.Is4() || b.Is4In6()) {
			continue
		}
		entry := a.String() + "-" + b.String()
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "ironlb.dev/v1alpha1", "kind": "IPPool",
			"metadata": map[string]any{"name": fmt.Sprintf("r%d", i)},
			"spec":     map[string]any{"addresses": []any{entry}},
		}}
		_, err := client.Create(ctx, obj, metav1.CreateOptions{})
		wantReject := b.Less(a)
		if wantReject != (err != nil) {
			t.Errorf("%s: reversed=%v but create returned %v", entry, wantReject, err)
		}
		if err != nil && !strings.Contains(err.Error(), "is reversed") {
			t.Errorf("%s: unexpected rejection: %v", entry, err)
		}
	}
}

// manyNamespaces is a YAML flow list body of n distinct namespace names.
func manyNamespaces(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("ns-%d", i)
	}
	return strings.Join(names, ", ")
}
