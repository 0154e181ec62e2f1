package ipam

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestHoldsEach: HoldsEach answers as Holds does for each address, of
// either family, held or not, and for addresses that are no address.
func TestHoldsEach(t *testing.T) {
	a := newAllocator(autoPool(t, "p", "192.0.2.0/30"))
	got, err := a.Ensure(v4("svc"))
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	held := got.Addresses[0]
	tests := []struct {
		name  string
		addrs []netip.Addr
	}{
		{"none", nil},
		{"held", []netip.Addr{held}},
		{"mixed", append(addrs("192.0.2.3", "2001:db8::1", "10.0.0.1"), held, netip.Addr{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := make([]bool, len(tt.addrs))
			for i, addr := range tt.addrs {
				want[i] = a.Holds(addr)
			}
			if diff := cmp.Diff(want, a.HoldsEach(tt.addrs)); diff != "" {
				t.Errorf("HoldsEach(%v) (-want +got):\n%s", tt.addrs, diff)
			}
		})
	}
	if !a.HoldsEach([]netip.Addr{held})[0] {
		t.Errorf("HoldsEach(%s) = false, want the allocated address held", held)
	}
}
