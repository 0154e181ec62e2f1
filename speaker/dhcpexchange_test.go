package speaker

import (
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestParseDHCP checks the grammar a DHCPExchange from the CCM must meet
// before the speaker puts anything on the LAN.
func TestParseDHCP(t *testing.T) {
	id := append([]byte{0}, "ironlb-abc"...)
	ok := func() *speakerv1.DHCPExchange {
		return &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_RENEW, ClientId: id, Address: "192.0.2.100", TimeoutMs: 4000}
	}
	for _, tc := range []struct {
		name    string
		edit    func(*speakerv1.DHCPExchange)
		allowed []netip.Prefix
		wantErr string
	}{
		{name: "valid renewal", edit: func(*speakerv1.DHCPExchange) {}},
		{name: "valid acquisition without an address", edit: func(e *speakerv1.DHCPExchange) { e.Op = speakerv1.DHCPExchange_ACQUIRE; e.Address = "" }},
		{name: "unknown operation", edit: func(e *speakerv1.DHCPExchange) { e.Op = 99 }, wantErr: "unknown DHCP operation"},
		{name: "empty client id", edit: func(e *speakerv1.DHCPExchange) { e.ClientId = nil }, wantErr: "client identifier"},
		{name: "huge client id", edit: func(e *speakerv1.DHCPExchange) { e.ClientId = make([]byte, 65) }, wantErr: "client identifier"},
		{name: "renewal without an address", edit: func(e *speakerv1.DHCPExchange) { e.Address = "" }, wantErr: "names no address"},
		{name: "IPv6 address", edit: func(e *speakerv1.DHCPExchange) { e.Address = "2001:db8::1" }, wantErr: "no IPv4 address"},
		{name: "address outside --allowed-cidrs", edit: func(*speakerv1.DHCPExchange) {}, allowed: []netip.Prefix{netip.MustParsePrefix("198.51.100.0/24")}, wantErr: "allowed-cidrs"},
		{name: "bad server", edit: func(e *speakerv1.DHCPExchange) { e.Server = "server" }, wantErr: "server"},
		{name: "bad server MAC", edit: func(e *speakerv1.DHCPExchange) { e.ServerMac = "00:11:22:33:44:55:66:77" }, wantErr: "hardware address"},
		{name: "hostname not a label", edit: func(e *speakerv1.DHCPExchange) { e.Hostname = "a.b" }, wantErr: "DNS label"},
		{name: "interface name with a slash", edit: func(e *speakerv1.DHCPExchange) { e.Interface = "../eth0" }, wantErr: "no interface name"},
		{name: "unknown interface", edit: func(e *speakerv1.DHCPExchange) { e.Interface = "nosuch0" }, wantErr: "nosuch0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := NewAgent("node-a", "lo", nil, logr.Discard(), WithAllowedPrefixes(tc.allowed), WithLocalAddresses(noLocalAddresses),
				WithInterfaceLookup(func(name string) (*net.Interface, error) {
					if name != "lo" && name != "eth0" {
						return nil, &net.OpError{Op: "route", Err: net.UnknownNetworkError("no such interface")}
					}
					return &net.Interface{Index: 1, Name: name}, nil
				}))
			ex := ok()
			tc.edit(ex)
			j, err := a.parseDHCP(ex)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("parseDHCP: %v", err)
				}
				if j.ifi.Name != "lo" {
					t.Errorf("interface %s, want the default lo", j.ifi.Name)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("parseDHCP: got %v, want an error with %q", err, tc.wantErr)
			}
		})
	}
}
