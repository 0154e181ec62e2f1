package speakers

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// check returns how s breaks AddrSet's invariants, or nil: chunks
// non-empty, of at most maxChunk addresses and at least minChunk unless
// alone, in order, and counted by n; the empty set has no chunks.
func (s AddrSet) check() error {
	n := 0
	var prev netip.Addr
	for i, c := range s.chunks {
		if len(c) == 0 || len(c) > maxChunk || len(c) < minChunk && len(s.chunks) > 1 {
			return fmt.Errorf("chunk %d of %d holds %d addresses, want %d to %d", i, len(s.chunks), len(c), minChunk, maxChunk)
		}
		for j, a := range c {
			if (i > 0 || j > 0) && !prev.Less(a) {
				return fmt.Errorf("chunk %d: %s at %d follows %s", i, a, j, prev)
			}
			prev = a
		}
		n += len(c)
	}
	if n != s.n {
		return fmt.Errorf("the set counts %d addresses, its chunks hold %d", s.n, n)
	}
	if n == 0 && s.chunks != nil {
		return fmt.Errorf("the empty set keeps %d chunks", len(s.chunks))
	}
	return nil
}

// sameSet reports whether a and b are the same value: the same index of
// the same chunks.
func sameSet(a, b AddrSet) bool {
	if len(a.chunks) != len(b.chunks) || a.n != b.n {
		return false
	}
	return len(a.chunks) == 0 || &a.chunks[0] == &b.chunks[0]
}

// shared counts the chunks of a that are chunks of b.
func shared(a, b AddrSet) int {
	n := 0
	for _, c := range a.chunks {
		if slices.ContainsFunc(b.chunks, func(d []netip.Addr) bool { return &c[0] == &d[0] && len(c) == len(d) }) {
			n++
		}
	}
	return n
}

// v4 is the IPv4 address 10.0.0.0 + i.
func v4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// v4s are the addresses v4(i) for each i of is, sorted.
func v4s(is ...int) []netip.Addr {
	out := make([]netip.Addr, 0, len(is))
	for _, i := range is {
		out = append(out, v4(i))
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// span is v4s(lo, …, hi-1).
func span(lo, hi int) []int {
	var is []int
	for i := lo; i < hi; i++ {
		is = append(is, i)
	}
	return is
}

// checkSet fails t unless s is a valid set of want (sorted) and answers
// Holds, Len, All and Slice as want does. Holds is asked of probes, of
// want's addresses and those next to them (of every stride-th when
// stride > 1: the randomized test's sets are large), and of addresses
// outside want's.
func checkSet(t *testing.T, s AddrSet, want []netip.Addr, stride int, probes ...netip.Addr) {
	t.Helper()
	if err := s.check(); err != nil {
		t.Fatalf("invalid set: %v", err)
	}
	if got := s.Slice(); !slices.Equal(want, got) {
		t.Fatalf("Slice (-want +got):\n%s", cmp.Diff(want, got, equateAddrs))
	}
	if got := slices.Collect(s.All()); !slices.Equal(want, got) {
		t.Fatalf("All (-want +got):\n%s", cmp.Diff(want, got, equateAddrs))
	}
	if s.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", s.Len(), len(want))
	}
	for i := 0; i < len(want); i += max(stride, 1) {
		a := want[i]
		probes = append(probes, a.Prev(), a, a.Next())
	}
	probes = append(probes, netip.Addr{}, netip.MustParseAddr("0.0.0.0"), netip.MustParseAddr("255.255.255.255"), netip.MustParseAddr("2001:db8::1"))
	for _, b := range probes {
		if got, want := s.Holds(b), Holds(want, b); got != want {
			t.Fatalf("Holds(%s) = %v, want %v", b, got, want)
		}
	}
}

// TestNewAddrSet: a set holds the addresses of its list, and nothing
// else, in chunks of valid sizes, sharing the list.
func TestNewAddrSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		sorted []netip.Addr
		chunks int
	}{
		{"empty", nil, 0},
		{"one", v4s(7), 1},
		{"one chunk", v4s(span(0, buildChunk)...), 1},
		{"two chunks", v4s(span(0, buildChunk+1)...), 2},
		{"many", v4s(span(0, 1000)...), 16},
		{"both families", append(v4s(1, 2), netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("2001:db8::2")), 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewAddrSet(tc.sorted)
			checkSet(t, s, tc.sorted, 1)
			if len(s.chunks) != tc.chunks {
				t.Errorf("%d chunks, want %d", len(s.chunks), tc.chunks)
			}
			for i, c := range s.chunks {
				if len(tc.sorted) > 0 && &c[0] == &tc.sorted[i*len(tc.sorted)/len(s.chunks)] {
					t.Errorf("chunk %d is part of the caller's list; NewAddrSet says it copies", i)
				}
			}
		})
	}
	var zero AddrSet
	checkSet(t, zero, nil, 1)
}

// TestAddrSetPatch: a patched set holds its base's addresses without
// remove's and with add's; it is its base when its members are the
// same, and otherwise shares the chunks it did not change.
func TestAddrSetPatch(t *testing.T) {
	small := v4s(1, 3, 5)
	big := v4s(span(0, 2000)...) // 32 chunks of 62 or 63: 0–61, 62–124, …
	for _, tc := range []struct {
		name        string
		base        []netip.Addr
		remove, add []netip.Addr
		want        []netip.Addr
		same        bool
		shared      int // of big's chunks, at least this many are kept
	}{
		{name: "nothing", base: small, want: small, same: true},
		{name: "named, unchanged", base: small, remove: v4s(3, 4), add: v4s(3), want: small, same: true},
		{name: "added first, middle, last", base: small, remove: v4s(0, 4, 9), add: v4s(0, 4, 9), want: v4s(0, 1, 3, 4, 5, 9)},
		{name: "removed", base: small, remove: v4s(1, 5), want: v4s(3)},
		{name: "both", base: small, remove: v4s(2, 3), add: v4s(2), want: v4s(1, 2, 5)},
		{name: "all removed", base: small, remove: v4s(1, 3, 5), want: nil},
		{name: "to the empty set", base: nil, remove: v4s(4, 2), add: v4s(4, 2), want: v4s(2, 4)},
		{name: "nothing to the empty set", base: nil, remove: v4s(4), want: nil, same: true},
		{name: "add outside remove", base: small, add: v4s(3, 4), want: v4s(1, 3, 4, 5)},
		{name: "another family", base: small, remove: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, add: []netip.Addr{netip.MustParseAddr("2001:db8::1")}, want: append(v4s(1, 3, 5), netip.MustParseAddr("2001:db8::1"))},
		{name: "big: one added", base: big, remove: v4s(5000), add: v4s(5000), want: v4s(append(span(0, 2000), 5000)...), shared: 31},
		{name: "big: one removed", base: big, remove: v4s(1000), want: v4s(slices.Delete(span(0, 2000), 1000, 1001)...), shared: 31},
		{name: "big: named, unchanged", base: big, remove: v4s(0, 1000, 1999, 3000), add: v4s(0, 1000, 1999), want: big, same: true},
		{name: "big: a chunk emptied", base: big, remove: v4s(span(62, 125)...), want: v4s(slices.Delete(span(0, 2000), 62, 125)...), shared: 31},
		{name: "big: all but the last", base: big, remove: v4s(span(0, 1999)...), want: v4s(1999)},
		{name: "big: a chunk split", base: big, remove: v4s(span(3000, 3200)...), add: v4s(span(3000, 3200)...), want: v4s(append(span(0, 2000), span(3000, 3200)...)...), shared: 31},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := NewAddrSet(tc.base)
			before := base.Slice()
			got := base.Patch(tc.remove, tc.add)
			checkSet(t, got, tc.want, 1, tc.remove...)
			if same := sameSet(got, base); same != tc.same {
				t.Errorf("the result is its base: %v, want %v", same, tc.same)
			}
			if n := shared(base, got); n < tc.shared {
				t.Errorf("the result shares %d of its base's %d chunks, want at least %d", n, len(base.chunks), tc.shared)
			}
			if diff := cmp.Diff(before, base.Slice(), equateAddrs); diff != "" {
				t.Errorf("patching changed the base (-before +after):\n%s", diff)
			}
		})
	}
}

// TestAddrSetPatchAllocations: a patch that changes no member allocates
// nothing; one that adds one address to a large set allocates the index
// and a chunk or two, not the set.
func TestAddrSetPatchAllocations(t *testing.T) {
	base := NewAddrSet(v4s(span(0, 15_000)...))
	named, add := v4s(100, 20_000), v4s(100)
	if n := testing.AllocsPerRun(100, func() { base.Patch(named, add) }); n != 0 {
		t.Errorf("a patch that changes nothing allocates %v times, want 0", n)
	}
	one := v4s(7_500)
	if n := testing.AllocsPerRun(100, func() { base.Patch(one, nil) }); n > 2 {
		t.Errorf("removing one address allocates %v times, want at most 2 (the index, a chunk)", n)
	}
}

// TestAddrSetRandom compares sets with a sorted list over many random
// patches: insertions at the front, the back and the middle, removals
// that empty chunks, additions that split them. Every set handed out
// stays as it was when later sets are patched from it.
func TestAddrSetRandom(t *testing.T) {
	for seed := range uint64(4) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			const space = 4_000 // v4(0) to v4(space-1), and a few IPv6
			addr := func(i int) netip.Addr {
				if i%997 == 0 {
					return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)})
				}
				return v4(i)
			}
			type version struct {
				set  AddrSet
				want []netip.Addr
			}
			var (
				model []netip.Addr
				set   AddrSet
				kept  []version
				// patches that made more chunks, and fewer
				grew, shrank int
			)
			for step := range 500 {
				// Which addresses the patch names (remove) and which of
				// them it holds afterwards (add).
				named := map[netip.Addr]bool{}
				var lo, hi int
				switch rng.IntN(6) {
				case 0: // the front
					lo, hi = 0, 1+rng.IntN(200)
				case 1: // the back
					lo = space - 1 - rng.IntN(200)
					hi = space
				case 2: // anywhere, a few
					lo = rng.IntN(space)
					hi = min(space, lo+1+rng.IntN(3))
				default: // a run, large enough to empty or split chunks
					lo = rng.IntN(space)
					hi = min(space, lo+1+rng.IntN(400))
				}
				bias := rng.Float64() // the share of the run held afterwards
				for i := lo; i < hi; i++ {
					if rng.IntN(4) == 0 {
						continue
					}
					named[addr(i)] = rng.Float64() < bias
				}
				var remove, add []netip.Addr
				for a, held := range named {
					remove = append(remove, a)
					if held {
						add = append(add, a)
					}
				}
				slices.SortFunc(remove, netip.Addr.Compare)
				slices.SortFunc(add, netip.Addr.Compare)
				var want []netip.Addr
				for _, a := range model {
					if _, ok := named[a]; !ok {
						want = append(want, a)
					}
				}
				want = append(want, add...)
				slices.SortFunc(want, netip.Addr.Compare)

				got := set.Patch(remove, add)
				checkSet(t, got, want, 17, remove...)
				if same := sameSet(got, set); same != slices.Equal(want, model) {
					t.Fatalf("step %d: the result is its base: %v, but the members changed: %v", step, same, !slices.Equal(want, model))
				}
				switch {
				case len(got.chunks) > len(set.chunks):
					grew++
				case len(got.chunks) < len(set.chunks):
					shrank++
				}
				if step%50 == 0 {
					kept = append(kept, version{set, model})
				}
				set, model = got, want
				if step%200 == 199 { // now and then, a complete report
					set = NewAddrSet(slices.Clone(model))
				}
			}
			if grew < 10 || shrank < 10 {
				t.Errorf("of 500 patches, %d made more chunks and %d fewer: want at least 10 of each, or the test tries too little", grew, shrank)
			}
			for i, v := range kept {
				if diff := cmp.Diff(v.want, v.set.Slice(), equateAddrs); diff != "" {
					t.Errorf("set %d of those handed out changed since (-then +now):\n%s", i, diff)
				}
			}
		})
	}
}

// BenchmarkAddrSetPatch patches a set of n addresses with one address,
// added then removed, as each node's set is for a BGP VIP created or
// deleted; patchSorted, the sorted list it replaced, for comparison.
func BenchmarkAddrSetPatch(b *testing.B) {
	for _, n := range []int{1_500, 15_000} {
		rng := rand.New(rand.NewPCG(uint64(n), 1))
		is := rng.Perm(2 * n)
		base := v4s(is[:n]...)
		var changes [][]netip.Addr // one address each, not in base
		for _, i := range is[n:] {
			changes = append(changes, v4s(i))
		}
		b.Run(fmt.Sprintf("n=%d/AddrSet", n), func(b *testing.B) {
			s := NewAddrSet(slices.Clone(base))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := changes[i/2%len(changes)]
				if i%2 == 0 {
					s = s.Patch(c, c)
				} else {
					s = s.Patch(c, nil)
				}
				i++
			}
			if s.Len() != n && s.Len() != n+1 {
				b.Fatalf("the set holds %d addresses, want %d or %d", s.Len(), n, n+1)
			}
		})
		b.Run(fmt.Sprintf("n=%d/patchSorted", n), func(b *testing.B) {
			s := slices.Clone(base)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				c := changes[i/2%len(changes)]
				if i%2 == 0 {
					s = patchSorted(s, c, c)
				} else {
					s = patchSorted(s, c, nil)
				}
				i++
			}
			if len(s) != n && len(s) != n+1 {
				b.Fatalf("the list holds %d addresses, want %d or %d", len(s), n, n+1)
			}
		})
	}
}
