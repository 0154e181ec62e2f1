package cpvip

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"

	"github.com/ironlb/ironlb/speaker/bgp"
)

func TestBGPFlags(t *testing.T) {
	defaults := BGPConfig{BFD: true, BFDInterval: 300 * time.Millisecond, BFDMultiplier: 3}
	withPeers := func(c BGPConfig, peers ...string) BGPConfig {
		for _, p := range peers {
			c.Peers = append(c.Peers, netip.MustParseAddr(p))
		}
		c.PeerASN, c.ASN = 64512, 64513
		return c
	}
	tests := []struct {
		name    string
		args    []string
		want    BGPConfig
		wantErr string // in the parse or Validate error; empty: valid
		reason  error
	}{
		{name: "defaults", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513"},
			want: withPeers(defaults, "192.0.2.1")},
		{name: "repeated peers, both families, BFD timers",
			args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer", "2001:db8::1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd-interval=100ms", "--bfd-multiplier=5"},
			want: withPeers(BGPConfig{BFD: true, BFDInterval: 100 * time.Millisecond, BFDMultiplier: 5}, "192.0.2.1", "2001:db8::1")},
		{name: "BFD off ignores its timers", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd=false", "--bfd-interval=1ns"},
			want: withPeers(BGPConfig{BFDInterval: time.Nanosecond, BFDMultiplier: 3}, "192.0.2.1")},
		{name: "no peer", args: []string{"--bgp-peer-asn=64512", "--bgp-asn=64513"}, wantErr: "at least one", reason: ErrNoPeers},
		{name: "a name, not an address", args: []string{"--bgp-peer=router.example"}, wantErr: "invalid argument"},
		{name: "a comma list is not an address", args: []string{"--bgp-peer=192.0.2.1,192.0.2.2"}, wantErr: "invalid argument"},
		{name: "a zone", args: []string{"--bgp-peer=fe80::1%eth0"}, wantErr: "zone"},
		{name: "a peer twice", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513"}, wantErr: "twice"},
		{name: "a loopback peer", args: []string{"--bgp-peer=127.0.0.1", "--bgp-peer-asn=64512", "--bgp-asn=64513"}, wantErr: "unicast"},
		{name: "a multicast peer", args: []string{"--bgp-peer=224.0.0.5", "--bgp-peer-asn=64512", "--bgp-asn=64513"}, wantErr: "unicast"},
		{name: "no ASN", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512"}, wantErr: "--bgp-asn 0", reason: ErrASN},
		{name: "AS_TRANS", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=23456", "--bgp-asn=64513"}, wantErr: "--bgp-peer-asn 23456", reason: ErrASN},
		{name: "ASN beyond 32 bits", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=4294967296"}, wantErr: "out of range"},
		{name: "BFD interval too short", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd-interval=5ms"}, wantErr: "--bfd-interval 5ms"},
		{name: "BFD interval too long", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd-interval=1m"}, wantErr: "--bfd-interval 1m0s"},
		{name: "BFD interval below a millisecond", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd-interval=10500us"}, wantErr: "whole milliseconds"},
		{name: "BFD multiplier 0", args: []string{"--bgp-peer=192.0.2.1", "--bgp-peer-asn=64512", "--bgp-asn=64513", "--bfd-multiplier=0"}, wantErr: "--bfd-multiplier 0"},
		{name: "BFD multiplier past 255", args: []string{"--bgp-peer=192.0.2.1", "--bfd-multiplier=256"}, wantErr: "out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
			fs.SetOutput(&strings.Builder{})
			var c BGPConfig
			AddBGPFlags(fs, &c)
			err := fs.Parse(tt.args)
			if err == nil {
				err = c.Validate()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				if tt.reason != nil && !errors.Is(err, tt.reason) {
					t.Errorf("error %v is not %v", err, tt.reason)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, c, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadPassword(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, content, want, wantErr string
	}{
		{name: "trailing newline dropped", content: "s3cret\n", want: "s3cret"},
		{name: "CRLF dropped", content: "s3cret\r\n", want: "s3cret"},
		{name: "80 characters", content: strings.Repeat("x", 80), want: strings.Repeat("x", 80)},
		{name: "81 characters", content: strings.Repeat("x", 81), wantErr: "1 to 80"},
		{name: "a huge file is not read whole", content: strings.Repeat("x", 1<<20), wantErr: "1 to 80"},
		{name: "empty", content: "\n", wantErr: "1 to 80"},
		{name: "a second line", content: "a\nb\n", wantErr: "printable"},
		{name: "a NUL", content: "a\x00b", wantErr: "printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tt.name, " ", "_"))
			if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := readPassword(p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one with %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("readPassword = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := readPassword(filepath.Join(dir, "absent")); err == nil {
		t.Error("a missing password file was accepted")
	}
}

func TestDesired(t *testing.T) {
	c := BGPConfig{Peers: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("2001:db8::1")},
		PeerASN: 64512, ASN: 64513, BFD: true, BFDInterval: 300 * time.Millisecond, BFDMultiplier: 3}
	vip, node := netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("192.0.2.11")
	bfdT := bgp.BFDTimers{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, Multiplier: 3}
	peer := func(a string, src netip.Addr) bgp.Peer {
		return bgp.Peer{Address: netip.MustParseAddr(a), PeerASN: 64512, MyASN: 64513, Password: "pw", SourceAddress: src,
			HoldTime: 9 * time.Second, KeepaliveTime: 3 * time.Second, ConnectRetry: time.Second, BFD: bfdT}
	}
	host := netip.MustParsePrefix("192.0.2.250/32")
	want := bgp.Desired{ASN: 64513, RouterID: node,
		Peers: []bgp.Peer{peer("192.0.2.1", node), peer("2001:db8::1", netip.Addr{})},
		Exports: map[bgp.Export]bgp.Attributes{
			{Peer: netip.MustParseAddr("192.0.2.1"), Prefix: host}:   {},
			{Peer: netip.MustParseAddr("2001:db8::1"), Prefix: host}: {},
		}}
	cmpAddr := cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
	cmpPrefix := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, c.desired("pw", vip, node, true), cmpAddr, cmpPrefix); diff != "" {
		t.Errorf("advertising (-want +got):\n%s", diff)
	}
	want.Exports = map[bgp.Export]bgp.Attributes{}
	if diff := cmp.Diff(want, c.desired("pw", vip, node, false), cmpAddr, cmpPrefix); diff != "" {
		t.Errorf("withdrawn (-want +got):\n%s", diff)
	}
	id := routerID(netip.MustParseAddr("2001:db8::11"))
	if !id.Is4() || id.IsUnspecified() || id != routerID(netip.MustParseAddr("2001:db8::11")) || id == routerID(netip.MustParseAddr("2001:db8::12")) {
		t.Errorf("router IDs of IPv6 nodes: %s, want a stable IPv4 one, different per node", id)
	}
}
