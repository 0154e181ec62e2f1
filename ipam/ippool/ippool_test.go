package ippool

import (
	"math/big"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

func pool(name string, addrs ...string) *v1alpha1.IPPool {
	p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: name, Generation: 3}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.AddressRange(a))
	}
	return p
}

func TestToPool(t *testing.T) {
	off := false
	p := pool("gold", "192.0.2.0/30", "2001:db8::/126")
	p.Spec.AutoAssign = &off
	p.Spec.AvoidBuggyIPs = true
	p.Spec.Priority = 7
	p.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{
		NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}},
		ServiceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "tier", Operator: metav1.LabelSelectorOpIn, Values: []string{"edge"}},
		}},
	}
	got, err := ToPool(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "gold" || got.AutoAssign || !got.AvoidBuggyIPs || got.Priority != 7 || len(got.Ranges) != 2 {
		t.Errorf("ToPool = %+v", got)
	}
	for _, tc := range []struct {
		subject ipam.Subject
		want    bool
	}{
		{ipam.Subject{NamespaceLabels: map[string]string{"team": "a"}, Labels: map[string]string{"tier": "edge"}}, true},
		{ipam.Subject{NamespaceLabels: map[string]string{"team": "b"}, Labels: map[string]string{"tier": "edge"}}, false},
		{ipam.Subject{NamespaceLabels: map[string]string{"team": "a"}, Labels: map[string]string{"tier": "core"}}, false},
		{ipam.Subject{}, false},
	} {
		if got := got.Refuses(tc.subject) == nil; got != tc.want {
			t.Errorf("Refuses(%+v) == nil is %v, want %v", tc.subject, got, tc.want)
		}
	}

	def, err := ToPool(pool("plain", "192.0.2.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	if !def.AutoAssign || def.Refuses != nil {
		t.Errorf("defaults: AutoAssign=%v Refuses set=%v; want auto-assign for everyone", def.AutoAssign, def.Refuses != nil)
	}
	empty := pool("empty-selectors", "192.0.2.0/30")
	empty.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{NamespaceSelector: &metav1.LabelSelector{}}
	e, err := ToPool(empty)
	if err != nil || e.Refuses != nil {
		t.Errorf("an empty selector must match everything (err %v)", err)
	}
}

func TestToPoolErrors(t *testing.T) {
	bad := pool("bad-selector", "192.0.2.0/30")
	bad.Spec.ServiceAllocation = &v1alpha1.ServiceAllocation{ServiceSelector: &metav1.LabelSelector{
		MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Sometimes"}},
	}}
	for _, tc := range []struct {
		pool    *v1alpha1.IPPool
		wantErr string
	}{
		{pool("reversed", "192.0.2.9-192.0.2.1"), "IPPool reversed: spec.addresses: range"},
		{pool("none"), "no addresses"},
		{bad, "IPPool bad-selector: spec.serviceAllocation: serviceSelector"},
	} {
		if _, err := ToPool(tc.pool); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("ToPool(%s) error = %v, want one containing %q", tc.pool.Name, err, tc.wantErr)
		}
	}
}

func stats(total, used int64) ipam.PoolStats {
	return ipam.PoolStats{Total: big.NewInt(total), Used: uint64(used), Free: big.NewInt(total - used)}
}

func TestStatus(t *testing.T) {
	p := pool("a", "192.0.2.0/30", "2001:db8::/126")
	other := pool("b", "192.0.2.2/31", "198.51.100.0/24")
	unrelated := pool("c", "203.0.113.0/24")

	got := Status(p, []*v1alpha1.IPPool{other, unrelated}, nil, nil, stats(4, 3), stats(4, 1))
	wantCounts := v1alpha1.IPPoolStatus{
		ObservedGeneration: 3,
		Used:               4,
		IPv4:               &v1alpha1.AddressCounts{Total: "4", Used: 3, Free: "1"},
		IPv6:               &v1alpha1.AddressCounts{Total: "4", Used: 1, Free: "3"},
	}
	if diff := cmp.Diff(wantCounts, got, cmp.FilterPath(func(p cmp.Path) bool { return p.String() == "Conditions" }, cmp.Ignore())); diff != "" {
		t.Errorf("Status counts (-want +got):\n%s", diff)
	}
	ready := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionReady)
	if ready == nil || ready.Status != metav1.ConditionTrue || ready.ObservedGeneration != 3 {
		t.Errorf("Ready = %+v, want True", ready)
	}
	conflict := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionConflicting)
	if conflict == nil || conflict.Status != metav1.ConditionTrue || !strings.Contains(conflict.Message, "b (192.0.2.2/31)") || strings.Contains(conflict.Message, "c (") {
		t.Errorf("Conflicting = %+v, want True naming pool b and its overlap only", conflict)
	}

	alone := Status(unrelated, []*v1alpha1.IPPool{p, other}, map[netip.Addr]string{netip.MustParseAddr("192.0.2.11"): "node-a"}, map[netip.Addr]string{netip.MustParseAddr("192.0.2.250"): "the cloud config"}, stats(256, 0), ipam.PoolStats{Total: new(big.Int), Free: new(big.Int)})
	if c := meta.FindStatusCondition(alone.Conditions, v1alpha1.ConditionConflicting); c == nil || c.Status != metav1.ConditionFalse {
		t.Errorf("Conflicting = %+v, want False", c)
	}
	if alone.IPv6 != nil {
		t.Errorf("IPv6 counts %+v for a pool without IPv6", alone.IPv6)
	}

	big6 := Status(pool("wide", "2001:db8::/48"), nil, nil, nil, ipam.PoolStats{Total: new(big.Int)}, ipam.PoolStats{Total: new(big.Int).Lsh(big.NewInt(1), 80), Used: 2, Free: new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 80), big.NewInt(2))})
	if big6.IPv6 == nil || big6.IPv6.Total != "1208925819614629174706176" || big6.IPv6.Free != "1208925819614629174706174" {
		t.Errorf("IPv6 /48 counts = %+v", big6.IPv6)
	}

	// A pool holding a Node's InternalIP conflicts with it.
	nodes := map[netip.Addr]string{netip.MustParseAddr("203.0.113.7"): "node-c", netip.MustParseAddr("192.0.2.11"): "node-a"}
	withNode := Status(unrelated, nil, nodes, nil, stats(256, 1), ipam.PoolStats{Total: new(big.Int), Free: new(big.Int)})
	if c := meta.FindStatusCondition(withNode.Conditions, v1alpha1.ConditionConflicting); c == nil || c.Status != metav1.ConditionTrue ||
		c.Reason != v1alpha1.ReasonNodeAddress || !strings.Contains(c.Message, "203.0.113.7 of Node node-c") || strings.Contains(c.Message, "node-a") {
		t.Errorf("Conflicting of a pool holding a node address = %+v, want True/NodeAddress naming node-c only", c)
	}

	invalid := Status(pool("broken", "192.0.2.9-192.0.2.1"), nil, nil, nil, ipam.PoolStats{}, ipam.PoolStats{})
	if c := meta.FindStatusCondition(invalid.Conditions, v1alpha1.ConditionReady); c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1alpha1.ReasonInvalid {
		t.Errorf("Ready of an invalid pool = %+v, want False/Invalid", c)
	}
}

// TestStatusWritesDoNotRebuildPools: the controller's own status writes
// come back as updates with the same generation; they must not rebuild the
// allocator's pool or re-plan announcements. A spec change (a new
// generation) or a re-created pool (a new UID) does.
func TestStatusWritesDoNotRebuildPools(t *testing.T) {
	scheme := runtime.NewScheme()
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(scheme, map[schema.GroupVersionResource]string{v1alpha1.IPPoolResource: "IPPoolList"})
	alloc := ipam.New()
	c, err := New(client, alloc, 0)
	if err != nil {
		t.Fatal(err)
	}
	changes := 0
	c.OnChange(func(string) { changes++ })
	obj := func(uid string, generation int64, used int64, addrs ...string) *unstructured.Unstructured {
		p := pool("lan", addrs...)
		p.UID, p.Generation = types.UID(uid), generation
		p.Status.Used = used
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(p)
		if err != nil {
			t.Fatal(err)
		}
		return &unstructured.Unstructured{Object: u}
	}
	steps := []struct {
		name string
		obj  *unstructured.Unstructured
		want int
	}{
		{"created", obj("u1", 1, 0, "192.0.2.0/30"), 1},
		{"its status written", obj("u1", 1, 3, "192.0.2.0/30"), 1},
		{"a resync", obj("u1", 1, 3, "192.0.2.0/30"), 1},
		{"its spec edited", obj("u1", 2, 3, "192.0.2.0/29"), 2},
		{"deleted and created again", obj("u2", 1, 0, "192.0.2.0/29"), 3},
	}
	for _, s := range steps {
		c.apply(s.obj)
		if changes != s.want {
			t.Errorf("%s: %d changes, want %d", s.name, changes, s.want)
		}
	}
	if v4, _, ok := alloc.Stats("lan"); !ok || v4.Total.Int64() != 8 {
		t.Errorf("the allocator's pool has %v IPv4 addresses (ok %v), want the /29's 8", v4.Total, ok)
	}
}

func TestToBGPAggregation(t *testing.T) {
	pool := func(addrs []string, l4, l6 *int32) *v1alpha1.IPPool {
		p := &v1alpha1.IPPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1alpha1.IPPoolSpec{
			BGP: &v1alpha1.BGP{Advertisements: []v1alpha1.BGPAdvertisement{{AggregationLength: l4, AggregationLengthV6: l6}}},
		}}
		for _, a := range addrs {
			p.Spec.Addresses = append(p.Spec.Addresses, v1alpha1.AddressRange(a))
		}
		return p
	}
	l := func(v int32) *int32 { return &v }
	tests := []struct {
		name  string
		p     *v1alpha1.IPPool
		valid bool
	}{
		{"CIDR at its own length", pool([]string{"198.51.100.0/27"}, l(27), nil), true},
		{"aligned range", pool([]string{"198.51.100.32-198.51.100.63"}, l(27), nil), true},
		{"range off the boundary", pool([]string{"198.51.100.10-198.51.100.20"}, l(24), nil), false},
		{"host routes of a range", pool([]string{"198.51.100.10-198.51.100.20"}, l(32), nil), true},
		{"IPv6 range off the boundary", pool([]string{"2001:db8::10-2001:db8::20"}, nil, l(64)), false},
		{"IPv4 length does not apply to IPv6", pool([]string{"2001:db8::10-2001:db8::20"}, l(24), nil), true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := ToBGP(tc.p)
			if (err == nil) != tc.valid {
				t.Errorf("ToBGP: %v, want valid=%t", err, tc.valid)
			}
		})
	}
}

// TestStatusControlPlaneVIP: a pool covering the control-plane VIP is
// Conflicting with reason ControlPlaneVIP, naming the VIP and where IronLB
// learnt it; a pool that does not cover it is not.
func TestStatusControlPlaneVIP(t *testing.T) {
	cp := map[netip.Addr]string{netip.MustParseAddr("192.0.2.250"): "kube-system/kubeadm-config"}
	for _, tc := range []struct {
		name       string
		pool       *v1alpha1.IPPool
		nodes      map[netip.Addr]string
		wantStatus metav1.ConditionStatus
		wantReason string
		wantMsg    string
	}{
		{"covers the VIP", pool("lan", "192.0.2.200-192.0.2.254"), nil, metav1.ConditionTrue, v1alpha1.ReasonControlPlaneVIP,
			"contains the control-plane VIP 192.0.2.250 (from kube-system/kubeadm-config); IronLB never hands it out (exclude it from the pool)"},
		{"covers the VIP and a node", pool("lan", "192.0.2.0/24"), map[netip.Addr]string{netip.MustParseAddr("192.0.2.11"): "node-1"}, metav1.ConditionTrue, v1alpha1.ReasonControlPlaneVIP,
			"contains the InternalIP 192.0.2.11 of Node node-1; IronLB never hands it out; it also contains the control-plane VIP 192.0.2.250 (from kube-system/kubeadm-config); IronLB never hands it out (exclude it from the pool)"},
		{"does not cover it", pool("lan", "192.0.2.200-192.0.2.239"), nil, metav1.ConditionFalse, v1alpha1.ReasonNoOverlap,
			"no overlap with other IPPools or Nodes' addresses"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Status(tc.pool, nil, tc.nodes, cp, stats(55, 0), ipam.PoolStats{Total: new(big.Int), Free: new(big.Int)})
			c := meta.FindStatusCondition(got.Conditions, v1alpha1.ConditionConflicting)
			if c == nil {
				t.Fatal("no Conflicting condition")
			}
			if diff := cmp.Diff([]string{string(tc.wantStatus), tc.wantReason, tc.wantMsg}, []string{string(c.Status), c.Reason, c.Message}); diff != "" {
				t.Errorf("Conflicting [status, reason, message] (-want +got):\n%s", diff)
			}
		})
	}
}
