package ipam

import (
	"math/big"
	"math/rand/v2"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// rng builds a Range from two addresses, without validation.
func rng(first, last string) Range {
	return Range{First: netip.MustParseAddr(first), Last: netip.MustParseAddr(last)}
}

// mustRanges parses pool entries or fails the test.
func mustRanges(t testing.TB, entries ...string) []Range {
	t.Helper()
	rs, err := ParseRanges(entries)
	if err != nil {
		t.Fatalf("ParseRanges(%q): %v", entries, err)
	}
	return rs
}

// bigInt parses a decimal number.
func bigInt(t testing.TB, s string) *big.Int {
	t.Helper()
	n, ok := new(big.Int).SetString(s, 10)
	if !ok {
		t.Fatalf("bad number %q", s)
	}
	return n
}

// pow2 returns 2^n.
func pow2(n uint) *big.Int { return new(big.Int).Lsh(big.NewInt(1), n) }

func TestParseRangeValid(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Range
	}{
		{"192.0.2.0/28", rng("192.0.2.0", "192.0.2.15")},
		{"  192.0.2.0/28\t", rng("192.0.2.0", "192.0.2.15")},
		{"192.0.2.7/32", rng("192.0.2.7", "192.0.2.7")},
		{"1.0.0.0/8", rng("1.0.0.0", "1.255.255.255")},
		{"10.0.0.0/8", rng("10.0.0.0", "10.255.255.255")},
		{"2001:db8:1::/64", rng("2001:db8:1::", "2001:db8:1::ffff:ffff:ffff:ffff")},
		{"2001:db8::1/128", rng("2001:db8::1", "2001:db8::1")},
		{"fe00::/9", rng("fe00::", "fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff")},
		{"192.0.2.200-192.0.2.250", rng("192.0.2.200", "192.0.2.250")},
		{"192.0.2.200 - 192.0.2.250", rng("192.0.2.200", "192.0.2.250")},
		{" 192.0.2.200 -192.0.2.250 ", rng("192.0.2.200", "192.0.2.250")},
		{"192.0.2.9-192.0.2.9", rng("192.0.2.9", "192.0.2.9")},
		{"192.0.2.255-192.0.3.0", rng("192.0.2.255", "192.0.3.0")},
		{"2001:db8::1-2001:db8::1:0", rng("2001:db8::1", "2001:db8::1:0")},
		// Just above the loopback address, just below and just above the
		// IPv4-mapped block.
		{"::2-::ffff:ffff", rng("::2", "::ffff:ffff")},
		{"::fffe:0:0-::fffe:ffff:ffff", rng("::fffe:0:0", "::fffe:ffff:ffff")},
		{"::1:0:0:0/112", rng("::1:0:0:0", "::1:0:0:ffff")},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseRange(tc.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
				t.Errorf("ParseRange(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseRangeInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		// wantErr is the whole message, or a part of it when partial.
		wantErr string
		partial bool
	}{
		{"empty", "", "empty address entry", false},
		{"blank", "  \t ", "empty address entry", false},
		{"garbage", "pool-a", `range "pool-a": "pool" is not an IP address`, false},
		{"word", "everything", `"everything" is neither a CIDR (192.0.2.0/24) nor a range (192.0.2.10-192.0.2.20)`, false},
		{"bare address", "192.0.2.1", `"192.0.2.1" is neither a CIDR`, true},
		{"prefix too long", "192.0.2.0/33", `"192.0.2.0/33" is neither a CIDR`, true},
		{"host bits v4", "192.0.2.1/24", `CIDR "192.0.2.1/24" has host bits set; did you mean 192.0.2.0/24?`, false},
		{"host bits v6", "2001:db8::1/64", `CIDR "2001:db8::1/64" has host bits set; did you mean 2001:db8::/64?`, false},
		{"reversed", "192.0.2.250-192.0.2.200", `range "192.0.2.250-192.0.2.200" is reversed: 192.0.2.250 comes after 192.0.2.200`, false},
		{"reversed v6", "2001:db8::2-2001:db8::1", `is reversed: 2001:db8::2 comes after 2001:db8::1`, true},
		{"mixed families", "192.0.2.1-2001:db8::1", `range "192.0.2.1-2001:db8::1" mixes IPv4 and IPv6`, false},
		{"missing last", "192.0.2.1-", `range "192.0.2.1-": "" is not an IP address`, false},
		{"missing first", "-192.0.2.1", `range "-192.0.2.1": "" is not an IP address`, false},
		{"three parts", "192.0.2.1-192.0.2.2-192.0.2.3", `"192.0.2.2-192.0.2.3" is not an IP address`, true},
		{"CIDR in range", "192.0.2.0/30-192.0.2.9", `"192.0.2.0/30" is not an IP address`, true},
		{"zone in range", "2001:db8::1%eth0-2001:db8::9", `range "2001:db8::1%eth0-2001:db8::9": 2001:db8::1%eth0: zones are not allowed`, false},
		{"zone in range end", "2001:db8::1-2001:db8::9%eth0", `zones are not allowed`, true},
		{"zone in CIDR", "2001:db8::%eth0/64", `zones are not allowed`, true},
		{"mapped CIDR", "::ffff:192.0.2.0/120", `CIDR "::ffff:192.0.2.0/120": ::ffff:192.0.2.0: IPv4-mapped IPv6 addresses are not allowed; write the IPv4 address`, false},
		{"mapped range", "::ffff:192.0.2.1-::ffff:192.0.2.9", `IPv4-mapped IPv6 addresses are not allowed`, true},
		{"v6 range across mapped block", "::fffe:ffff:ffff-::1:0:0:0", `"::fffe:ffff:ffff-::1:0:0:0" overlaps the IPv4-mapped block ::ffff:0.0.0.0/96, which cannot hold VIPs`, false},
		{"v6 range ending in mapped block", "::fffe:0:0-::ffff:0:0", `::ffff:0.0.0.0: IPv4-mapped IPv6 addresses are not allowed`, true},
		{"v6 CIDR containing mapped block", "::fffe:0:0/95", `"::fffe:0:0/95" overlaps the IPv4-mapped block`, true},
		{"everything v6", "::/0", `"::/0" overlaps the unspecified address ::/128, which cannot hold VIPs`, false},
		{"everything v4", "0.0.0.0/0", `"0.0.0.0/0" overlaps the "this network" block 0.0.0.0/8, which cannot hold VIPs`, false},
		{"this network", "0.0.0.0/32", `overlaps the "this network" block 0.0.0.0/8`, true},
		{"loopback v4", "127.0.0.1/32", `"127.0.0.1/32" overlaps the loopback block 127.0.0.0/8, which cannot hold VIPs`, false},
		{"loopback v4 range", "126.255.255.250-127.0.0.3", `overlaps the loopback block 127.0.0.0/8`, true},
		{"range spanning loopback", "100.0.0.0-130.0.0.0", `overlaps the loopback block 127.0.0.0/8`, true},
		{"link-local v4", "169.254.10.0/24", `overlaps the link-local block 169.254.0.0/16`, true},
		{"multicast v4", "239.1.1.0/24", `overlaps the multicast block 224.0.0.0/4`, true},
		{"broadcast", "255.255.255.0/24", `overlaps the broadcast address 255.255.255.255/32`, true},
		{"unspecified v6", "::/128", `overlaps the unspecified address ::/128`, true},
		{"loopback v6", "::1/128", `"::1/128" overlaps the loopback address ::1/128, which cannot hold VIPs`, false},
		{"link-local v6", "fe80::/64", `overlaps the link-local block fe80::/10`, true},
		{"link-local v6 range", "fe80::1-fe80::9", `overlaps the link-local block fe80::/10`, true},
		{"multicast v6", "ff02::/16", `overlaps the multicast block ff00::/8`, true},
		{"top of v6", "ffff::/16", `overlaps the multicast block ff00::/8`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseRange(tc.in)
			if err == nil {
				t.Fatalf("ParseRange(%q) = %v, want an error", tc.in, r)
			}
			got := err.Error()
			if tc.partial {
				if !strings.Contains(got, tc.wantErr) {
					t.Errorf("ParseRange(%q) error = %q, want it to contain %q", tc.in, got, tc.wantErr)
				}
			} else if got != tc.wantErr {
				t.Errorf("ParseRange(%q) error mismatch (-want +got):\n%s", tc.in, cmp.Diff(tc.wantErr, got))
			}
			if r != (Range{}) {
				t.Errorf("ParseRange(%q) returned %v with its error, want the zero Range", tc.in, r)
			}
		})
	}
}

// rawRanges parses entries by syntax alone and merges them, for tests of
// the key arithmetic at the edges of the address space, which pools may
// not reach.
func rawRanges(t testing.TB, entries ...string) []Range {
	t.Helper()
	var rs []Range
	for _, e := range entries {
		r, err := parseRange(e)
		if err != nil {
			t.Fatalf("parseRange(%q): %v", e, err)
		}
		rs = append(rs, r)
	}
	return mergeRanges(rs)
}

func TestParseRanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []string
		want    []string // Range.String of each merged range
		wantErr string
		raw     bool // merge without the checks of ParseRange (edges of the address space)
	}{
		{name: "nil", in: nil, wantErr: "no addresses"},
		{name: "empty", in: []string{}, wantErr: "no addresses"},
		{name: "empty entry", in: []string{"192.0.2.0/24", ""}, wantErr: "empty address entry"},
		{name: "bad entry named", in: []string{"192.0.2.0/24", "192.0.3.1/24"}, wantErr: `CIDR "192.0.3.1/24" has host bits set; did you mean 192.0.3.0/24?`},
		{name: "single", in: []string{"192.0.2.0/24"}, want: []string{"192.0.2.0/24"}},
		{name: "sorted", in: []string{"198.51.100.0/24", "192.0.2.0/24"}, want: []string{"192.0.2.0/24", "198.51.100.0/24"}},
		{name: "adjacent CIDRs merge", in: []string{"192.0.2.0/25", "192.0.2.128/25"}, want: []string{"192.0.2.0/24"}},
		{name: "adjacent ranges merge", in: []string{"192.0.2.10-192.0.2.19", "192.0.2.20-192.0.2.29"}, want: []string{"192.0.2.10-192.0.2.29"}},
		{name: "overlapping merge", in: []string{"192.0.2.10-192.0.2.30", "192.0.2.20-192.0.2.40"}, want: []string{"192.0.2.10-192.0.2.40"}},
		{name: "contained", in: []string{"192.0.2.0/24", "192.0.2.16/28"}, want: []string{"192.0.2.0/24"}},
		{name: "contained listed first", in: []string{"192.0.2.16/28", "192.0.2.0/24"}, want: []string{"192.0.2.0/24"}},
		{name: "duplicates", in: []string{"192.0.2.0/24", "192.0.2.0/24"}, want: []string{"192.0.2.0/24"}},
		{name: "gap of one kept", in: []string{"192.0.2.1-192.0.2.5", "192.0.2.7-192.0.2.9"}, want: []string{"192.0.2.1-192.0.2.5", "192.0.2.7-192.0.2.9"}},
		{name: "chain", in: []string{"192.0.2.30-192.0.2.40", "192.0.2.0-192.0.2.10", "192.0.2.11-192.0.2.29"}, want: []string{"192.0.2.0-192.0.2.40"}},
		{
			name: "mixed families",
			in:   []string{"2001:db8::/64", "192.0.2.0/24", "2001:db8:0:1::/64", "198.51.100.0/24"},
			want: []string{"192.0.2.0/24", "198.51.100.0/24", "2001:db8::/63"},
		},
		{
			// Keys of IPv4 addresses follow ::fffe:ffff:ffff, but the
			// families never merge.
			name: "v6 just below the IPv4 keys",
			raw:  true,
			in:   []string{"::fffe:ffff:ff00-::fffe:ffff:ffff", "0.0.0.0/8"},
			want: []string{"::fffe:ffff:ff00/120", "0.0.0.0/8"},
		},
		{
			name: "v6 just above the IPv4 keys",
			raw:  true,
			in:   []string{"255.255.255.0/24", "::1:0:0:0/120"},
			want: []string{"255.255.255.0/24", "::1:0:0:0/120"},
		},
		{
			// The last address of the IPv6 space has no successor.
			name: "overlap at the top of the v6 space",
			raw:  true,
			in:   []string{"ffff::/16", "ffff:ffff::/32"},
			want: []string{"ffff::/16"},
		},
		{
			name: "adjacent at the top of the v6 space",
			raw:  true,
			in:   []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"},
			want: []string{"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0/124"},
		},
		{
			name: "adjacent across a 64-bit boundary",
			in:   []string{"2001:db8::-2001:db8::ffff:ffff:ffff:ffff", "2001:db8:0:1::-2001:db8:0:1::5"},
			want: []string{"2001:db8::-2001:db8:0:1::5"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []Range
			var err error
			if tc.raw {
				got = rawRanges(t, tc.in...)
			} else {
				got, err = ParseRanges(tc.in)
			}
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("ParseRanges(%q) = %v, %v; want error %q", tc.in, got, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRanges(%q): %v", tc.in, err)
			}
			var gotStr []string
			for _, r := range got {
				gotStr = append(gotStr, r.String())
			}
			if diff := cmp.Diff(tc.want, gotStr); diff != "" {
				t.Errorf("ParseRanges(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseRangesDoesNotModifyInput(t *testing.T) {
	in := []string{"198.51.100.0/24", "192.0.2.0/24"}
	mustRanges(t, in...)
	if diff := cmp.Diff([]string{"198.51.100.0/24", "192.0.2.0/24"}, in); diff != "" {
		t.Errorf("input changed (-want +got):\n%s", diff)
	}
}

func TestRangeString(t *testing.T) {
	for _, tc := range []struct {
		r    Range
		want string
	}{
		{rng("192.0.2.0", "192.0.2.15"), "192.0.2.0/28"},
		{rng("192.0.2.16", "192.0.2.31"), "192.0.2.16/28"},
		{rng("192.0.2.8", "192.0.2.23"), "192.0.2.8-192.0.2.23"}, // 16 addresses, not aligned
		{rng("192.0.2.0", "192.0.2.16"), "192.0.2.0-192.0.2.16"},
		{rng("192.0.2.1", "192.0.2.15"), "192.0.2.1-192.0.2.15"},
		{rng("192.0.2.7", "192.0.2.7"), "192.0.2.7/32"},
		{rng("0.0.0.0", "255.255.255.255"), "0.0.0.0/0"},
		{rng("10.0.0.0", "10.255.255.255"), "10.0.0.0/8"},
		{rng("2001:db8::", "2001:db8::ffff"), "2001:db8::/112"},
		{rng("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff"), "2001:db8::/48"},
		{rng("2001:db8::1", "2001:db8::1"), "2001:db8::1/128"},
		{rng("2001:db8::1", "2001:db8::ff"), "2001:db8::1-2001:db8::ff"},
		{rng("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), "::/0"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.r.String(); got != tc.want {
				t.Errorf("%#v.String() = %q, want %q", tc.r, got, tc.want)
			}
		})
	}
}

func TestRangeStringRoundTrips(t *testing.T) {
	for _, in := range []string{
		"192.0.2.0/28", "192.0.2.1-192.0.2.15", "192.0.2.7/32", "2001:db8::/48",
		"2001:db8::1-2001:db8::ff", "10.0.0.0/8", "192.0.2.255-192.0.3.0",
	} {
		r, err := ParseRange(in)
		if err != nil {
			t.Fatalf("ParseRange(%q): %v", in, err)
		}
		back, err := ParseRange(r.String())
		if err != nil || back != r {
			t.Errorf("ParseRange(%q).String() = %q re-parses to %v, %v; want %v", in, r.String(), back, err, r)
		}
	}
}

func TestRangeSize(t *testing.T) {
	for _, tc := range []struct {
		r    Range
		want *big.Int
	}{
		{rng("192.0.2.7", "192.0.2.7"), big.NewInt(1)},
		{rng("192.0.2.0", "192.0.2.15"), big.NewInt(16)},
		{rng("192.0.2.200", "192.0.2.250"), big.NewInt(51)},
		{rng("10.0.0.0", "10.255.255.255"), pow2(24)},
		{rng("0.0.0.0", "255.255.255.255"), pow2(32)},
		{rng("2001:db8::", "2001:db8::ffff:ffff:ffff:ffff"), pow2(64)},
		{rng("2001:db8::", "2001:db8:0:ffff:ffff:ffff:ffff:ffff"), pow2(80)},
		// Across a 64-bit boundary, the low half of First above Last's.
		{rng("2001:db8::ffff:ffff:ffff:fffe", "2001:db8:0:1::1"), big.NewInt(4)},
		{rng("::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), pow2(128)},
		{rng("ffff::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"), pow2(112)},
	} {
		t.Run(tc.r.String(), func(t *testing.T) {
			if got := tc.r.Size(); got.Cmp(tc.want) != 0 {
				t.Errorf("Size() = %s, want %s", got, tc.want)
			}
		})
	}
}

func TestRangeContainsAndFamily(t *testing.T) {
	v4 := rng("192.0.2.10", "192.0.2.20")
	v6 := rng("2001:db8::10", "2001:db8::20")
	for _, tc := range []struct {
		r    Range
		a    string
		want bool
	}{
		{v4, "192.0.2.10", true},
		{v4, "192.0.2.15", true},
		{v4, "192.0.2.20", true},
		{v4, "192.0.2.9", false},
		{v4, "192.0.2.21", false},
		{v4, "::ffff:192.0.2.15", false},
		{v4, "2001:db8::15", false},
		{v6, "2001:db8::10", true},
		{v6, "2001:db8::20", true},
		{v6, "2001:db8::21", false},
		{v6, "192.0.2.15", false},
	} {
		if got := tc.r.Contains(netip.MustParseAddr(tc.a)); got != tc.want {
			t.Errorf("%v.Contains(%s) = %v, want %v", tc.r, tc.a, got, tc.want)
		}
	}
	if v4.Family() != IPv4 || v6.Family() != IPv6 {
		t.Errorf("families: %v %v, want IPv4 IPv6", v4.Family(), v6.Family())
	}
	if got := Family(0).String(); got != "unknown family" {
		t.Errorf("Family(0).String() = %q", got)
	}
}

func TestOverlap(t *testing.T) {
	for _, tc := range []struct {
		name string
		a, b []string
		want []string
		raw  bool // edges of the address space, which pools may not reach
	}{
		{name: "disjoint", a: []string{"192.0.2.0/28"}, b: []string{"192.0.2.16/28"}},
		{name: "touching is not overlapping", a: []string{"192.0.2.0-192.0.2.10"}, b: []string{"192.0.2.11-192.0.2.20"}},
		{name: "one address", a: []string{"192.0.2.0-192.0.2.10"}, b: []string{"192.0.2.10-192.0.2.20"}, want: []string{"192.0.2.10/32"}},
		{name: "partial", a: []string{"192.0.2.0-192.0.2.10"}, b: []string{"192.0.2.5-192.0.2.20"}, want: []string{"192.0.2.5-192.0.2.10"}},
		{name: "partial reversed", a: []string{"192.0.2.5-192.0.2.20"}, b: []string{"192.0.2.0-192.0.2.10"}, want: []string{"192.0.2.5-192.0.2.10"}},
		{name: "contained", a: []string{"192.0.2.0/24"}, b: []string{"192.0.2.16/28"}, want: []string{"192.0.2.16/28"}},
		{name: "identical", a: []string{"2001:db8::/64"}, b: []string{"2001:db8::/64"}, want: []string{"2001:db8::/64"}},
		{
			name: "several pieces",
			a:    []string{"192.0.2.0/24", "2001:db8::/120"},
			b:    []string{"192.0.2.10-192.0.2.12", "192.0.2.250-192.0.3.5", "2001:db8::80-2001:db8::1:0", "198.51.100.0/24"},
			want: []string{"192.0.2.10-192.0.2.12", "192.0.2.250-192.0.2.255", "2001:db8::80/121"},
		},
		{name: "families never overlap", a: []string{"0.0.0.0/0"}, b: []string{"::/96", "::1:0:0:0/96"}, raw: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			parse := mustRanges
			if tc.raw {
				parse = rawRanges
			}
			for _, r := range Overlap(parse(t, tc.a...), parse(t, tc.b...)) {
				got = append(got, r.String())
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Overlap(%q, %q) mismatch (-want +got):\n%s", tc.a, tc.b, diff)
			}
		})
	}
}

// buggyBrute counts the addresses ending in .0 or .255 one by one.
func buggyBrute(first, last key) uint64 {
	var n uint64
	for k := first; ; k = k.next() {
		if k.buggy() {
			n++
		}
		if k == last {
			return n
		}
	}
}

func TestBuggyIn(t *testing.T) {
	k := func(s string) key { return keyOf(netip.MustParseAddr(s)) }
	for _, tc := range []struct {
		first, last string
		want        uint64
	}{
		{"0.0.0.0", "0.0.0.0", 1},
		{"0.0.0.1", "0.0.0.254", 0},
		{"0.0.0.0", "0.0.0.255", 2},
		{"192.0.2.255", "192.0.3.0", 2},
		{"192.0.2.254", "192.0.3.1", 2},
		{"192.0.2.255", "192.0.2.255", 1},
		{"255.255.255.255", "255.255.255.255", 1},
		{"255.255.255.0", "255.255.255.255", 2},
		{"10.0.0.0", "10.255.255.255", 1 << 17},
		{"0.0.0.0", "255.255.255.255", 1 << 25},
	} {
		t.Run(tc.first+"-"+tc.last, func(t *testing.T) {
			if got := buggyIn(k(tc.first), k(tc.last)); got != tc.want {
				t.Errorf("buggyIn = %d, want %d", got, tc.want)
			}
		})
	}

	// Cross-check small ranges against counting, near the ends of the
	// space and at random.
	r := rand.New(rand.NewPCG(1, 2))
	base := []uint32{0, 0xc0000200, 0xfffff000}
	for i := 0; i < 3000; i++ {
		lo := base[i%len(base)] + uint32(r.IntN(2048))
		hi := lo + uint32(r.IntN(1100))
		if hi < lo {
			hi = 0xffffffff
		}
		a, b := netip.AddrFrom4(be4(lo)), netip.AddrFrom4(be4(hi))
		first, last := keyOf(a), keyOf(b)
		if got, want := buggyIn(first, last), buggyBrute(first, last); got != want {
			t.Fatalf("buggyIn(%s, %s) = %d, counting gives %d", a, b, got, want)
		}
	}
}

func be4(v uint32) [4]byte { return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }

func TestKeyArithmetic(t *testing.T) {
	k := func(s string) key { return keyOf(netip.MustParseAddr(s)) }
	if got, want := k("2001:db8::ffff:ffff:ffff:ffff").next(), k("2001:db8:0:1::"); got != want {
		t.Errorf("next across 64 bits = %v, want %v", got, want)
	}
	if got, want := k("2001:db8:0:1::").prev(), k("2001:db8::ffff:ffff:ffff:ffff"); got != want {
		t.Errorf("prev across 64 bits = %v, want %v", got, want)
	}
	for _, s := range []string{"192.0.2.1", "0.0.0.0", "255.255.255.255", "2001:db8::1", "::"} {
		a := netip.MustParseAddr(s)
		if got := keyOf(a).addr(FamilyOf(a)); got != a {
			t.Errorf("keyOf(%s).addr() = %s", a, got)
		}
	}
	// IPv4 keys lie in the IPv4-mapped block, apart from every pool's IPv6
	// addresses.
	mappedBlock := mustRange("::ffff:0:0/96")
	if !mappedBlock.Contains(keyOf(netip.MustParseAddr("0.0.0.0")).addr(IPv6)) ||
		!mappedBlock.Contains(keyOf(netip.MustParseAddr("255.255.255.255")).addr(IPv6)) {
		t.Error("IPv4 keys are not in ::ffff:0:0/96")
	}
}
