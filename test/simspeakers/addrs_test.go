package simspeakers

import (
	"net/netip"
	"testing"
)

func TestNodeAddrs(t *testing.T) {
	ps := []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("192.0.2.0/24")}
	got, err := nodeAddrs(netip.Addr{}, ps, 300)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range map[int]string{0: "198.51.100.1", 253: "198.51.100.254", 254: "192.0.2.1", 299: "192.0.2.46"} {
		if got[i].String() != want {
			t.Errorf("address %d = %s, want %s", i, got[i], want)
		}
	}
	if _, err := nodeAddrs(netip.Addr{}, ps, 509); err == nil {
		t.Error("509 nodes in two /24s: no error")
	}
	if got, err := nodeAddrs(netip.Addr{}, ps, 508); err != nil || got[507].String() != "192.0.2.254" {
		t.Errorf("508 nodes: last %v, %v; want 192.0.2.254", got[len(got)-1], err)
	}
	v6, err := nodeAddrs(netip.Addr{}, []netip.Prefix{netip.MustParsePrefix("2001:db8:5::/120")}, 255)
	if err != nil || v6[254].String() != "2001:db8:5::ff" {
		t.Errorf("IPv6: %v, %v; want the last 2001:db8:5::ff", v6, err)
	}
	seq, err := nodeAddrs(netip.MustParseAddr("198.51.100.1"), nil, 3)
	if err != nil || seq[2].String() != "198.51.100.3" {
		t.Errorf("from FirstAddr: %v, %v", seq, err)
	}
}
