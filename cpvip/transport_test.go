package cpvip

import (
	"net/netip"
	"testing"
)

func TestBroadcast(t *testing.T) {
	for _, tt := range []struct{ prefix, want string }{
		{"192.0.2.11/24", "192.0.2.255"},
		{"10.1.2.3/8", "10.255.255.255"},
		{"172.16.5.4/20", "172.16.15.255"},
		{"192.0.2.9/31", "192.0.2.9"},
		{"2001:db8::11/64", "ff02::1"},
	} {
		t.Run(tt.prefix, func(t *testing.T) {
			if got := Broadcast(netip.MustParsePrefix(tt.prefix)); got.String() != tt.want {
				t.Errorf("Broadcast = %s, want %s", got, tt.want)
			}
		})
	}
}
