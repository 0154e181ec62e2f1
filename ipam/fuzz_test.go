package ipam

import (
	"math/big"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// fuzzSeeds are entries worth starting from: valid ones of every shape and
// each kind of mistake.
var fuzzSeeds = []string{
	"192.0.2.0/24", "192.0.2.0/28", "192.0.2.7/32", "0.0.0.0/0", "10.0.0.0/8",
	"2001:db8::/48", "2001:db8:1::/64", "2001:db8::1/128", "ffff::/16", "::/96", "::1:0:0:0/96",
	"192.0.2.200-192.0.2.250", "192.0.2.200 - 192.0.2.250", " 192.0.2.1-192.0.2.1 ",
	"192.0.2.255-192.0.3.0", "2001:db8::ffff:ffff:ffff:ffff-2001:db8:0:1::1",
	"::fffe:ffff:ffff-::fffe:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
	"", " ", "-", "/", "192.0.2.1", "garbage", "192.0.2.1/24", "2001:db8::1/64",
	"192.0.2.250-192.0.2.200", "192.0.2.1-2001:db8::1", "192.0.2.1-", "-192.0.2.1",
	"192.0.2.1-192.0.2.2-192.0.2.3", "fe80::1%eth0-fe80::2", "fe80::%eth0/64", "fe80::1%eth-0/128",
	"::ffff:192.0.2.0/120", "::ffff:192.0.2.1-::ffff:192.0.2.9", "::fffe:ffff:ffff-::1:0:0:0", "::/0",
	"192.0.2.0/33", "192.0.2.0/-1", "192.0.2.0/024", "1.2.3.4/32\n", "::ffff:0:0/96", "::/64",
}

// addrInt returns a as a number, IPv4 addresses as themselves.
func addrInt(a netip.Addr) *big.Int { return new(big.Int).SetBytes(a.AsSlice()) }

// checkParsedRange checks what is true of every Range ParseRange returns.
func checkParsedRange(t *testing.T, in string, r Range) {
	t.Helper()
	switch {
	case !r.First.IsValid() || !r.Last.IsValid():
		t.Fatalf("ParseRange(%q) = %#v: invalid address", in, r)
	case r.First.Is4() != r.Last.Is4():
		t.Fatalf("ParseRange(%q) = %v mixes families", in, r)
	case r.Last.Less(r.First):
		t.Fatalf("ParseRange(%q) = %v: First after Last", in, r)
	case r.First.Zone() != "" || r.Last.Zone() != "":
		t.Fatalf("ParseRange(%q) = %v has a zone", in, r)
	case r.First.Is4In6() || r.Last.Is4In6():
		t.Fatalf("ParseRange(%q) = %v holds IPv4-mapped addresses", in, r)
	case slices.ContainsFunc(forbidden, func(b struct {
		r    Range
		what string
	}) bool {
		return len(Overlap([]Range{r}, []Range{b.r})) > 0
	}):
		t.Fatalf("ParseRange(%q) = %v overlaps a forbidden block", in, r)
	case !r.Contains(r.First) || !r.Contains(r.Last):
		t.Fatalf("%v does not contain its ends", r)
	}
	want := new(big.Int).Sub(addrInt(r.Last), addrInt(r.First))
	if want.Add(want, big.NewInt(1)); r.Size().Cmp(want) != 0 {
		t.Fatalf("%v.Size() = %s, want %s", r, r.Size(), want)
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		r, err := ParseRange(in)
		if err != nil {
			if r != (Range{}) {
				t.Fatalf("ParseRange(%q) returned %v with error %v", in, r, err)
			}
			if err.Error() == "" {
				t.Fatalf("ParseRange(%q): empty error message", in)
			}
			return
		}
		checkParsedRange(t, in, r)

		s := r.String()
		back, err := ParseRange(s)
		if err != nil {
			t.Fatalf("ParseRange(%q) = %v, whose String %q does not parse: %v", in, r, s, err)
		}
		if back != r {
			t.Fatalf("ParseRange(%q) = %v; String %q re-parses to %v", in, r, s, back)
		}
		if strings.Contains(s, "/") {
			// A CIDR exactly when the range is one.
			p := netip.MustParsePrefix(s)
			if p.Addr() != r.First || lastOf(p) != r.Last {
				t.Fatalf("%v.String() = %q, which is another range", r, s)
			}
		}
		rs, err := ParseRanges([]string{in})
		if err != nil || len(rs) != 1 || rs[0] != r {
			t.Fatalf("ParseRanges([%q]) = %v, %v; want [%v]", in, rs, err, r)
		}
	})
}

func FuzzParseRanges(f *testing.F) {
	for i, s := range fuzzSeeds {
		f.Add(s)
		f.Add(s + "," + fuzzSeeds[(i*7+3)%len(fuzzSeeds)])
	}
	for _, s := range []string{
		"192.0.2.0/25,192.0.2.128/25",
		"192.0.2.10-192.0.2.30,192.0.2.20-192.0.2.40,192.0.2.0/28",
		"2001:db8::/64,192.0.2.0/24,2001:db8:0:1::/64,198.51.100.0/24",
		"::fffe:ffff:ff00-::fffe:ffff:ffff,0.0.0.0/8,255.255.255.0/24,::1:0:0:0/120",
		"ffff::/16,ffff:ffff::/32",
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:fff0-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe,ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128",
		"192.0.2.1-192.0.2.5,192.0.2.7-192.0.2.9,192.0.2.6/32",
		"192.0.2.0/24,,192.0.2.0/24",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, list string) {
		entries := strings.Split(list, ",")
		rs, err := ParseRanges(entries)
		if err != nil {
			if rs != nil {
				t.Fatalf("ParseRanges(%q) returned %v with error %v", entries, rs, err)
			}
			return
		}
		var parsed []Range
		for _, e := range entries {
			r, err := ParseRange(e)
			if err != nil {
				t.Fatalf("ParseRanges(%q) accepted %q, which ParseRange refuses: %v", entries, e, err)
			}
			parsed = append(parsed, r)
		}
		// Sorted, disjoint, and not adjacent within a family.
		for i, r := range rs {
			checkParsedRange(t, r.String(), r)
			if i == 0 {
				continue
			}
			prev := rs[i-1]
			if !keyOf(prev.Last).less(keyOf(r.First)) {
				t.Fatalf("ParseRanges(%q) = %v: %v and %v are not sorted and disjoint", entries, rs, prev, r)
			}
			if prev.Family() == r.Family() && keyOf(prev.Last).next() == keyOf(r.First) {
				t.Fatalf("ParseRanges(%q) = %v: %v and %v are adjacent but not merged", entries, rs, prev, r)
			}
		}
		// The same addresses: every entry lies in a merged range, and the
		// entries inside each merged range cover it without gaps.
		for _, p := range parsed {
			if !slices.ContainsFunc(rs, func(m Range) bool { return m.Contains(p.First) && m.Contains(p.Last) }) {
				t.Fatalf("ParseRanges(%q) = %v loses %v", entries, rs, p)
			}
		}
		for _, m := range rs {
			var in []Range
			for _, p := range parsed {
				if m.Contains(p.First) {
					in = append(in, p)
				}
			}
			slices.SortFunc(in, func(a, b Range) int { return a.First.Compare(b.First) })
			next := addrInt(m.First)
			for _, p := range in {
				if addrInt(p.First).Cmp(next) > 0 {
					t.Fatalf("ParseRanges(%q) = %v: %v includes addresses before %v that no entry has", entries, rs, m, p.First)
				}
				if end := new(big.Int).Add(addrInt(p.Last), big.NewInt(1)); end.Cmp(next) > 0 {
					next = end
				}
			}
			if want := new(big.Int).Add(addrInt(m.Last), big.NewInt(1)); next.Cmp(want) != 0 {
				t.Fatalf("ParseRanges(%q) = %v: the entries do not cover %v", entries, rs, m)
			}
		}
		// A list overlaps itself entirely.
		if got := Overlap(rs, rs); !slices.Equal(got, rs) {
			t.Fatalf("Overlap(%v, itself) = %v", rs, got)
		}
	})
}
