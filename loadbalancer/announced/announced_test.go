package announced

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var cmpOpts = []cmp.Option{cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

// TestRoundTrip: what Encode writes, Decode reads back, and records as
// earlier versions wrote them read the same.
func TestRoundTrip(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.200"), netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("2001:db8::5")
	tests := []struct {
		name    string
		entries []Entry
		want    string
	}{
		{name: "layer 2", entries: []Entry{{Address: a, Layer2: []string{"node-a"}}}, want: "192.0.2.200=node-a"},
		{name: "nowhere", entries: []Entry{{Address: c}}, want: "2001:db8::5=-"},
		{name: "bgp", entries: []Entry{{Address: b, BGP: []string{"node-a", "node-b"}}}, want: "198.51.100.7=bgp:node-a+node-b"},
		{
			name:    "both ways, shared, two VIPs",
			entries: []Entry{{Address: a, Layer2: []string{"node-a"}, BGP: []string{"node-a", "node-c"}, SharedAs: "shop/web"}, {Address: c, SharedAs: "*/dns"}},
			want:    "192.0.2.200=node-a;bgp:node-a+node-c@shop/web, 2001:db8::5=-@*/dns",
		},
		{name: "moving", entries: []Entry{{Address: a, Layer2: []string{"node-a", "node-b.example.com"}}}, want: "192.0.2.200=node-a+node-b.example.com"},
		{name: "label-value key", entries: []Entry{{Address: a, Layer2: []string{"n"}, SharedAs: "shop/Key_1.2-x"}}, want: "192.0.2.200=n@shop/Key_1.2-x"},
		{
			// A key from before keys were checked cannot break the
			// record: every separator is escaped.
			name:    "hostile key",
			entries: []Entry{{Address: a, Layer2: []string{"node-a"}, SharedAs: "team-b/x, 192.0.2.50=node-evil"}},
			want:    "192.0.2.200=node-a@team-b/x%2C%20192.0.2.50%3Dnode-evil",
		},
		{name: "control characters", entries: []Entry{{Address: a, SharedAs: "k\x1b[2J%\n@;+=é"}}, want: "192.0.2.200=-@k%1B%5B2J%25%0A%40%3B%2B%3D%C3%A9"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Encode(tc.entries)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("Encode = %q, want %q", got, tc.want)
			}
			var own []netip.Addr
			for _, e := range tc.entries {
				own = append(own, e.Address)
			}
			back, err := Decode(got, own)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.entries, back, cmpOpts...); diff != "" {
				t.Errorf("Decode(Encode(x)) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestEncodeRefuses(t *testing.T) {
	a := netip.MustParseAddr("192.0.2.200")
	tests := []struct {
		name    string
		entries []Entry
	}{
		{name: "no address", entries: []Entry{{Layer2: []string{"node-a"}}}},
		{name: "zone", entries: []Entry{{Address: netip.MustParseAddr("fe80::1%eth0")}}},
		{name: "twice", entries: []Entry{{Address: a}, {Address: a}}},
		{name: "bad node", entries: []Entry{{Address: a, Layer2: []string{"node-a, 192.0.2.50=node-evil"}}}},
		{name: "empty node", entries: []Entry{{Address: a, BGP: []string{""}}}},
		{name: "long key", entries: []Entry{{Address: a, SharedAs: strings.Repeat("k", MaxKeyLen+1)}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := Encode(tc.entries); err == nil {
				t.Errorf("Encode = %q, want an error", got)
			}
		})
	}
}

// TestDecodeStrict: entries that do not follow the grammar, and entries
// for addresses the Service does not hold, are rejected; the rest are
// kept.
func TestDecodeStrict(t *testing.T) {
	own := addrs("192.0.2.1", "2001:db8::1")
	tests := []struct {
		name     string
		msg      string
		want     []Entry
		rejected bool
	}{
		{name: "empty", msg: ""},
		{name: "earlier versions' format", msg: "192.0.2.1=node-a@shop/web, 2001:db8::1=bgp:node-a+node-b",
			want: []Entry{{Address: own[0], Layer2: []string{"node-a"}, SharedAs: "shop/web"}, {Address: own[1], BGP: []string{"node-a", "node-b"}}}},
		{
			// What a sharing key of "x, 192.0.2.50=node-evil" made
			// earlier versions write: the forged entry is for an
			// address the Service does not hold.
			name:     "forged entry for another Service's address",
			msg:      "192.0.2.1=node-b@team-b/x, 192.0.2.50=node-evil",
			want:     []Entry{{Address: own[0], Layer2: []string{"node-b"}, SharedAs: "team-b/x"}},
			rejected: true,
		},
		{name: "own address written twice", msg: "192.0.2.1=node-a, 192.0.2.1=node-evil", rejected: true},
		{name: "non-canonical address", msg: "2001:DB8::1=node-a", rejected: true},
		{name: "zoned address", msg: "2001:db8::1%eth0=node-a", rejected: true},
		{name: "no =", msg: "192.0.2.1", rejected: true},
		{name: "empty owner", msg: "192.0.2.1=", rejected: true},
		{name: "bad node", msg: "192.0.2.1=Node_A", rejected: true},
		{name: "escape sequence in a node", msg: "192.0.2.1=node-a\x1b[2J", rejected: true},
		{name: "bgp twice", msg: "192.0.2.1=bgp:a;bgp:b", rejected: true},
		{name: "layer 2 after bgp", msg: "192.0.2.1=bgp:a;b", rejected: true},
		{name: "empty node in a list", msg: "192.0.2.1=a++b", rejected: true},
		{name: "empty key", msg: "192.0.2.1=a@", rejected: true},
		{name: "unescaped space in key", msg: "192.0.2.1=a@x y", rejected: true},
		{name: "second @", msg: "192.0.2.1=a@x@y", rejected: true},
		{name: "lower-case escape", msg: "192.0.2.1=a@x%2c", rejected: true},
		{name: "needless escape", msg: "192.0.2.1=a@%41", rejected: true},
		{name: "short escape", msg: "192.0.2.1=a@x%2", rejected: true},
		{name: "long key", msg: "192.0.2.1=a@" + strings.Repeat("k", MaxKeyLen+1), rejected: true},
		{name: "one bad, one good", msg: "192.0.2.1=a@%zz, 2001:db8::1=-", want: []Entry{{Address: own[1]}}, rejected: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Decode(tc.msg, own)
			if (err != nil) != tc.rejected {
				t.Errorf("error = %v, want one: %t", err, tc.rejected)
			}
			if diff := cmp.Diff(tc.want, got, cmpOpts...); diff != "" {
				t.Errorf("Decode(%q) (-want +got):\n%s", tc.msg, diff)
			}
		})
	}
}

// FuzzDecode: Decode never panics, never returns an entry for an address
// the Service does not hold or one written twice, and whatever it returns
// Encode writes back to something that decodes the same.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		"192.0.2.1=node-a@shop/web, 2001:db8::1=bgp:node-a+node-b",
		"192.0.2.1=node-b@team-b/x, 192.0.2.50=node-evil",
		"192.0.2.1=node-a;bgp:node-a+node-c@%2C%20x", "2001:db8::1=-", "192.0.2.1=a@%41", ",,,", "=@;+",
	} {
		f.Add(s)
	}
	own := addrs("192.0.2.1", "2001:db8::1")
	f.Fuzz(func(t *testing.T, msg string) {
		got, _ := Decode(msg, own)
		var seen []netip.Addr
		for _, e := range got {
			if !slices.Contains(own, e.Address) {
				t.Fatalf("Decode(%q) yields %s, not the Service's", msg, e.Address)
			}
			if slices.Contains(seen, e.Address) {
				t.Fatalf("Decode(%q) yields %s twice", msg, e.Address)
			}
			seen = append(seen, e.Address)
		}
		enc, err := Encode(got)
		if err != nil {
			t.Fatalf("Encode(Decode(%q)): %v", msg, err)
		}
		back, err := Decode(enc, own)
		if err != nil {
			t.Fatalf("Decode(%q) (from %q): %v", enc, msg, err)
		}
		if diff := cmp.Diff(got, back, cmpOpts...); diff != "" {
			t.Fatalf("round trip of %q via %q (-want +got):\n%s", msg, enc, diff)
		}
	})
}

// FuzzRoundTrip: for any entry Encode accepts, Decode returns it unchanged,
// and no sharing key or node name can add an entry.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{192, 0, 2, 1}, "node-a", "", "shop/web")
	f.Add([]byte{192, 0, 2, 1}, "node-a", "node-b+node-c", "x, 192.0.2.50=node-evil")
	f.Add([]byte{0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5}, "", "n", "k\x1b[2J%@;")
	f.Fuzz(func(t *testing.T, ip []byte, l2, bgp, key string) {
		a, ok := netip.AddrFromSlice(ip)
		if !ok {
			return
		}
		e := Entry{Address: a, SharedAs: key}
		if l2 != "" {
			e.Layer2 = strings.Split(l2, "+")
		}
		if bgp != "" {
			e.BGP = strings.Split(bgp, "+")
		}
		msg, err := Encode([]Entry{e})
		if err != nil {
			return
		}
		got, err := Decode(msg, []netip.Addr{a})
		if err != nil {
			t.Fatalf("Decode(%q): %v", msg, err)
		}
		if diff := cmp.Diff([]Entry{e}, got, cmpOpts...); diff != "" {
			t.Fatalf("Decode(Encode(x)) of %q (-want +got):\n%s", msg, diff)
		}
	})
}
