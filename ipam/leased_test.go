package ipam

import (
	"errors"
	"net/netip"
	"testing"
)

// TestLeasedPools checks that the allocator never picks an address of a
// pool whose addresses a DHCP server leases, for that pool or another
// that overlaps it, and gives one only to the request its lease is for.
func TestLeasedPools(t *testing.T) {
	leased := Pool{Name: "dhcp", Ranges: mustRanges(t, "192.0.2.100-192.0.2.199"), Leased: true, AutoAssign: true}
	static := autoPool(t, "static", "192.0.2.98-192.0.2.101")
	lease := netip.MustParseAddr("192.0.2.150")
	for _, tc := range []struct {
		name    string
		req     func() Request
		want    string // address, or "" for an error
		wantErr error
	}{
		{name: "auto-assign skips the leased pool and its overlap", req: func() Request { return v4("a") }, want: "192.0.2.98"},
		{name: "naming the leased pool picks nothing", req: func() Request { r := v4("a"); r.Pool = "dhcp"; return r }, wantErr: ErrLeasedPool},
		{name: "an address of the leased pool without its lease", req: func() Request { r := v4("a"); r.Addresses = []netip.Addr{lease}; return r }, wantErr: ErrNoPool},
		{name: "an address in both pools without its lease", req: func() Request {
			r := v4("a")
			r.Pool = "static"
			r.Addresses = addrs("192.0.2.100")
			return r
		}, wantErr: ErrNoPool},
		{name: "the leased address with its lease", req: func() Request {
			r := v4("a")
			r.Pool = "dhcp"
			r.Addresses = []netip.Addr{lease}
			r.Leased = []netip.Addr{lease}
			return r
		}, want: "192.0.2.150"},
		{name: "a lease for the wrong pool", req: func() Request {
			r := v4("a")
			r.Pool = "static"
			r.Addresses = []netip.Addr{lease}
			r.Leased = []netip.Addr{lease}
			return r
		}, wantErr: ErrNoPool},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newAllocator(leased, static)
			al, err := a.Ensure(tc.req())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Ensure: got %v (%v), want %v", err, al.Addresses, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := al.Addresses[0].String(); got != tc.want {
				t.Errorf("got %s, want %s", got, tc.want)
			}
		})
	}
	t.Run("static pool runs dry before touching the overlap", func(t *testing.T) {
		a := newAllocator(leased, static)
		for _, o := range []string{"a", "b"} {
			if _, err := a.Ensure(v4(o)); err != nil {
				t.Fatal(err)
			}
		}
		if al, err := a.Ensure(v4("c")); !errors.Is(err, ErrExhausted) {
			t.Fatalf("third Service: got %v, %v; want ErrExhausted (192.0.2.100-101 are the DHCP server's)", al.Addresses, err)
		}
	})
}
