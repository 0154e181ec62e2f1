package ipam

import (
	"fmt"
	"math/big"
	"net/netip"
	"slices"
	"strings"
)

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// String returns the range as a CIDR when it is exactly one, else as
// "first-last".
func (r Range) String() string {
	for bits := 0; bits <= r.First.BitLen(); bits++ {
		p := netip.PrefixFrom(r.First, bits)
		if p.Masked().Addr() == r.First && lastOf(p) == r.Last {
			return p.String()
		}
	}
	return r.First.String() + "-" + r.Last.String()
}

// Family returns the range's family.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a lies in r.
func (r Range) Contains(a netip.Addr) bool {
	return a.Is4() == r.First.Is4() && r.First.Compare(a) <= 0 && a.Compare(r.Last) <= 0
}

// Size returns the number of addresses in r.
func (r Range) Size() *big.Int { return span(keyOf(r.First), keyOf(r.Last)) }

// ParseRange parses a CIDR ("192.0.2.0/24", "2001:db8::/64") or an
// inclusive range of one family ("192.0.2.10-192.0.2.20"; spaces around the
// dash are allowed).
//
// A range may not overlap the blocks that cannot hold VIPs: "this network"
// (0.0.0.0/8), loopback, link-local, multicast, the IPv4 broadcast address,
// the IPv6 unspecified address and the IPv4-mapped block.
func ParseRange(s string) (Range, error) {
	r, err := parseRange(s)
	if err != nil {
		return Range{}, err
	}
	for _, b := range forbidden {
		if r.Family() == b.r.Family() && !(r.Last.Less(b.r.First) || b.r.Last.Less(r.First)) {
			return Range{}, fmt.Errorf("%q overlaps %s %s, which cannot hold VIPs", strings.TrimSpace(s), b.what, b.r)
		}
	}
	return r, nil
}

// parseRange parses the syntax of a range.
func parseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, fmt.Errorf("empty address entry")
	}
	var r Range
	if first, last, ok := strings.Cut(s, "-"); ok {
		a, err := parseAddr(strings.TrimSpace(first))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		b, err := parseAddr(strings.TrimSpace(last))
		if err != nil {
			return Range{}, fmt.Errorf("range %q: %w", s, err)
		}
		if a.Is4() != b.Is4() {
			return Range{}, fmt.Errorf("range %q mixes IPv4 and IPv6", s)
		}
		if b.Less(a) {
			return Range{}, fmt.Errorf("range %q is reversed: %s comes after %s", s, a, b)
		}
		r = Range{First: a, Last: b}
	} else {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			// netip refuses zones in prefixes; say so rather than "garbage".
			if addr, _, ok := strings.Cut(s, "/"); ok {
				if a, err := netip.ParseAddr(addr); err == nil && a.Zone() != "" {
					return Range{}, fmt.Errorf("CIDR %q: %w", s, checkAddr(a))
				}
			}
			return Range{}, fmt.Errorf("%q is neither a CIDR (192.0.2.0/24) nor a range (192.0.2.10-192.0.2.20)", s)
		}
		if err := checkAddr(p.Addr()); err != nil {
			return Range{}, fmt.Errorf("CIDR %q: %w", s, err)
		}
		if p.Masked() != p {
			return Range{}, fmt.Errorf("CIDR %q has host bits set; did you mean %s?", s, p.Masked())
		}
		r = Range{First: p.Addr(), Last: lastOf(p)}
	}
	return r, nil
}

// forbidden are the blocks no pool may overlap: addresses that are not
// unicast, or that only mean something on one host or one link. A VIP there
// would break the nodes or never be reached.
var forbidden = []struct {
	r    Range
	what string
}{
	{mustRange("0.0.0.0/8"), `the "this network" block`},
	{mustRange("127.0.0.0/8"), "the loopback block"},
	{mustRange("169.254.0.0/16"), "the link-local block"},
	{mustRange("224.0.0.0/4"), "the multicast block"},
	{mustRange("255.255.255.255/32"), "the broadcast address"},
	{mustRange("::/128"), "the unspecified address"},
	{mustRange("::1/128"), "the loopback address"},
	{Range{First: netip.MustParseAddr("::ffff:0:0"), Last: netip.MustParseAddr("::ffff:ffff:ffff")}, "the IPv4-mapped block"},
	{mustRange("fe80::/10"), "the link-local block"},
	{mustRange("ff00::/8"), "the multicast block"},
}

func mustRange(cidr string) Range {
	p := netip.MustParsePrefix(cidr)
	return Range{First: p.Addr(), Last: lastOf(p)}
}

func parseAddr(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return a, checkAddr(a)
}

func checkAddr(a netip.Addr) error {
	switch {
	case a.Zone() != "":
		return fmt.Errorf("%s: zones are not allowed", a)
	case a.Is4In6():
		return fmt.Errorf("%s: IPv4-mapped IPv6 addresses are not allowed; write the IPv4 address", a)
	}
	return nil
}

// Aligned reports whether r starts and ends on boundaries of prefixes of
// length bits, so that the covering prefixes of its addresses hold no
// address outside it (true for bits at or past the address length).
func (r Range) Aligned(bits int) bool {
	if bits >= r.First.BitLen() {
		return true
	}
	first, _ := r.First.Prefix(bits)
	last, _ := r.Last.Prefix(bits)
	return first.Addr() == r.First && lastOf(last) == r.Last
}

func lastOf(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// ParseRanges parses a pool's address entries and returns them sorted, with
// overlapping and adjacent entries merged.
func ParseRanges(entries []string) ([]Range, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("no addresses")
	}
	rs := make([]Range, 0, len(entries))
	for _, e := range entries {
		r, err := ParseRange(e)
		if err != nil {
			return nil, err
		}
		rs = append(rs, r)
	}
	return mergeRanges(rs), nil
}

func mergeRanges(rs []Range) []Range {
	slices.SortFunc(rs, func(a, b Range) int { return keyCompare(keyOf(a.First), keyOf(b.First)) })
	out := rs[:0:0]
	for _, r := range rs {
		// r joins the previous range if it starts no later than just after
		// it; a range ending at the last IPv6 address has no "just after".
		if n := len(out); n > 0 && out[n-1].Family() == r.Family() &&
			(keyOf(out[n-1].Last) == maxKey || !keyOf(out[n-1].Last).next().less(keyOf(r.First))) {
			if out[n-1].Last.Less(r.Last) {
				out[n-1].Last = r.Last
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// maxKey is the key of the last IPv6 address, ffff:...:ffff.
var maxKey = key{^uint64(0), ^uint64(0)}

func keyCompare(a, b key) int {
	switch {
	case a.less(b):
		return -1
	case b.less(a):
		return 1
	}
	return 0
}

// Overlap returns the addresses two range lists have in common.
func Overlap(a, b []Range) []Range {
	var out []Range
	for _, x := range a {
		for _, y := range b {
			if x.Family() != y.Family() || x.Last.Less(y.First) || y.Last.Less(x.First) {
				continue
			}
			first, last := x.First, x.Last
			if first.Less(y.First) {
				first = y.First
			}
			if y.Last.Less(last) {
				last = y.Last
			}
			out = append(out, Range{First: first, Last: last})
		}
	}
	return out
}

// buggyIn counts the IPv4 addresses ending in .0 or .255 in [first, last].
func buggyIn(first, last key) uint64 {
	upTo := func(v int64) uint64 { // addresses in [0, v] ending in .0 or .255
		if v < 0 {
			return 0
		}
		return uint64(v/256+1) + uint64((v+1)/256)
	}
	f, l := int64(first.lo&0xffffffff), int64(last.lo&0xffffffff)
	return upTo(l) - upTo(f-1)
}
