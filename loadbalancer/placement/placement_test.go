package placement

import (
	"fmt"
	"math"
	"net/netip"
	"testing"
)

func TestChoose(t *testing.T) {
	vip := netip.MustParseAddr("192.0.2.200")
	nodes := []string{"a", "b", "c"}
	hashed := Choose(vip, "", nodes)
	tests := []struct {
		name     string
		current  string
		eligible []string
		want     string
	}{
		{"no node", "", nil, ""},
		{"no node keeps nothing", "a", nil, ""},
		{"single", "", []string{"b"}, "b"},
		{"current kept", "c", nodes, "c"},
		{"current not eligible", "x", nodes, hashed},
		{"order does not matter", "", []string{"c", "a", "b"}, hashed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Choose(vip, tc.current, tc.eligible); got != tc.want {
				t.Errorf("Choose(%s, %q, %v) = %q, want %q", vip, tc.current, tc.eligible, got, tc.want)
			}
		})
	}
}

// TestSpread checks that VIPs spread evenly and that removing a node moves
// only the VIPs it held.
func TestSpread(t *testing.T) {
	nodes := []string{"node-a", "node-b", "node-c", "node-d"}
	const n = 4000
	count := map[string]int{}
	owner := map[netip.Addr]string{}
	base := netip.MustParseAddr("198.51.100.0")
	for i := 0; i < n; i++ {
		vip := netip.AddrFrom4([4]byte{198, 51, byte(i >> 8), byte(i)})
		if i == 0 {
			vip = base
		}
		o := Choose(vip, "", nodes)
		owner[vip] = o
		count[o]++
	}
	for _, nd := range nodes {
		share := float64(count[nd]) / n
		if math.Abs(share-0.25) > 0.04 {
			t.Errorf("node %s got %.3f of the VIPs, want 0.25±0.04 (counts %v)", nd, share, count)
		}
	}
	rest := nodes[1:]
	for vip, o := range owner {
		// Without stickiness, a VIP not on node-a must stay where it is.
		got := Choose(vip, "", rest)
		if o != "node-a" && got != o {
			t.Fatalf("VIP %s moved from %s to %s when node-a left", vip, o, got)
		}
		if got == "node-a" {
			t.Fatalf("VIP %s chose a removed node", vip)
		}
	}
}

func BenchmarkChoose(b *testing.B) {
	nodes := make([]string, 100)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("node-%03d", i)
	}
	vip := netip.MustParseAddr("2001:db8::1")
	for b.Loop() {
		Choose(vip, "", nodes)
	}
}
