package speakers

import (
	"iter"
	"net/netip"
	"slices"
)

// Every node advertises every BGP VIP, so each BGP VIP created or
// deleted changes the VIPs every speaker announces (State.Announcing).
// Kept as one sorted list, never changed in place because View shares
// it, each such change copied every node's whole list: at 1,000 nodes of
// 1,500 BGP VIPs, 36 MB per BGP change, and the CCM spent most of its
// time collecting garbage. An AddrSet keeps the list in chunks that are
// never changed once built: a patch copies the index of chunks and the
// chunks it changes, and shares the others with the set it came from.

// Chunk sizes of an AddrSet: a chunk holds at most maxChunk addresses,
// and at least minChunk unless it is the set's only one. NewAddrSet and
// a split make chunks of about buildChunk, so that most patches copy a
// chunk without splitting it.
const (
	maxChunk   = 128
	buildChunk = maxChunk / 2
	minChunk   = maxChunk / 4
)

// AddrSet is an immutable sorted set of addresses. Its value may be
// copied, shared and read concurrently: nothing changes it once built;
// Patch returns a new set that shares the unchanged chunks. The zero
// value is the empty set.
type AddrSet struct {
	// chunks are sorted, non-empty and never modified; every address of
	// one precedes every address of the next.
	chunks [][]netip.Addr
	n      int
}

// NewAddrSet returns the set of sorted, which must be sorted and free of
// duplicates. It copies sorted, a chunk at a time: each chunk is its own
// allocation, freed once no set holds it (chunks cut from one list would
// keep all of it alive while any one of them is, up to twice the set's
// memory once patches replace the others).
func NewAddrSet(sorted []netip.Addr) AddrSet {
	n := len(sorted)
	if n == 0 {
		return AddrSet{}
	}
	k := (n + buildChunk - 1) / buildChunk
	chunks := make([][]netip.Addr, k)
	for i := range k {
		lo, hi := i*n/k, (i+1)*n/k
		chunks[i] = slices.Clone(sorted[lo:hi])
	}
	return AddrSet{chunks: chunks, n: n}
}

// Len is the number of addresses in the set.
func (s AddrSet) Len() int { return s.n }

// Holds reports whether the set holds a, in O(log Len).
func (s AddrSet) Holds(a netip.Addr) bool {
	if s.n == 0 {
		return false
	}
	return Holds(s.chunks[chunkOf(s.chunks, a)], a)
}

// All yields the set's addresses in order.
func (s AddrSet) All() iter.Seq[netip.Addr] {
	return func(yield func(netip.Addr) bool) {
		for _, c := range s.chunks {
			for _, a := range c {
				if !yield(a) {
					return
				}
			}
		}
	}
}

// Slice returns the set's addresses in a new sorted list; nil for the
// empty set. It copies every address: for tests and rare callers.
func (s AddrSet) Slice() []netip.Addr {
	if s.n == 0 {
		return nil
	}
	out := make([]netip.Addr, 0, s.n)
	for _, c := range s.chunks {
		out = append(out, c...)
	}
	return out
}

// Patch returns the set without the addresses of remove and with those
// of add (both sorted and free of duplicates; add ⊆ remove, as
// patchSorted's, though an address of add alone is added too): s itself, sharing everything and allocating nothing,
// when that changes no membership. Otherwise it copies the index of
// chunks and the chunks whose addresses change, and shares the others
// with s: O(chunks + changed addresses × maxChunk), where a sorted list
// costs O(Len). A chunk that grows past maxChunk is split, one left
// empty is dropped, and one left smaller than minChunk is merged with its
// neighbour (or the two share their addresses evenly).
func (s AddrSet) Patch(remove, add []netip.Addr) AddrSet {
	chunks := s.chunks
	if len(chunks) == 0 {
		chunks = [][]netip.Addr{nil} // one empty chunk that add fills
	}
	var p patcher
	done := 0 // chunks before done are in p.out when it is set
	r, d := 0, 0
	for r < len(remove) || d < len(add) {
		// The first address left decides the chunk.
		var a netip.Addr
		if d == len(add) || r < len(remove) && remove[r].Less(add[d]) {
			a = remove[r]
		} else {
			a = add[d]
		}
		// Chunk j takes the addresses below the next chunk's first.
		j := chunkOf(chunks, a)
		rEnd, dEnd := len(remove), len(add)
		if j+1 < len(chunks) {
			next := chunks[j+1][0]
			rEnd = r + lowerBound(remove[r:], next)
			dEnd = d + lowerBound(add[d:], next)
		}
		if c, ok := patchChunk(chunks[j], remove[r:rEnd], add[d:dEnd]); ok {
			if p.out == nil {
				p.out = make([][]netip.Addr, 0, len(chunks)+len(add)/buildChunk+1)
				p.n = s.n
			}
			for _, u := range chunks[done:j] {
				p.push(u)
			}
			p.n += len(c) - len(chunks[j])
			p.push(c)
			done = j + 1
		}
		r, d = rEnd, dEnd
	}
	if p.out == nil {
		return s
	}
	for _, u := range chunks[done:] {
		p.push(u)
	}
	if p.n == 0 {
		return AddrSet{}
	}
	return AddrSet{chunks: p.out, n: p.n}
}

// patcher builds the chunks of a patched set.
type patcher struct {
	out [][]netip.Addr
	n   int
}

// push appends chunk c (which may be empty: then nothing) to p.out. A
// chunk smaller than minChunk is merged with the one before it, so that
// such a chunk can only be the set's first, until the next push, or its
// only one; a chunk larger than maxChunk is split into chunks of
// buildChunk to buildChunk×1.5 addresses.
func (p *patcher) push(c []netip.Addr) {
	if len(c) == 0 {
		return
	}
	if last := len(p.out) - 1; last >= 0 && (len(c) < minChunk || len(p.out[last]) < minChunk) {
		c = slices.Concat(p.out[last], c)
		p.out = p.out[:last]
	}
	if len(c) <= maxChunk {
		p.out = append(p.out, c)
		return
	}
	k := len(c) / buildChunk // ≥ 2: each part holds len/k addresses, in [buildChunk, buildChunk×1.5)
	for i := range k {
		lo, hi := i*len(c)/k, (i+1)*len(c)/k
		p.out = append(p.out, slices.Clone(c[lo:hi])) // each its own allocation (see NewAddrSet)
	}
}

// patchChunk returns c without the addresses of remove and with those of
// add (all sorted), in a new list, and true; or nil and false when that
// changes nothing.
func patchChunk(c, remove, add []netip.Addr) ([]netip.Addr, bool) {
	changed := false
	for _, a := range remove {
		if Holds(c, a) && !Holds(add, a) {
			changed = true
			break
		}
	}
	for i := 0; i < len(add) && !changed; i++ {
		changed = !Holds(c, add[i])
	}
	if !changed {
		return nil, false
	}
	out := make([]netip.Addr, 0, len(c)+len(add))
	i, j := 0, 0 // next of remove, of add
	for _, b := range c {
		for i < len(remove) && remove[i].Less(b) {
			i++
		}
		if i < len(remove) && remove[i] == b {
			continue // add puts it back if it names it
		}
		for j < len(add) && add[j].Less(b) {
			out = append(out, add[j])
			j++
		}
		if j < len(add) && add[j] == b {
			j++ // kept once
		}
		out = append(out, b)
	}
	return append(out, add[j:]...), true
}

// chunkOf is the index of the chunk where a is, or would be: the last
// whose first address is not after a, or the first. chunks is not empty;
// only the first may be empty.
func chunkOf(chunks [][]netip.Addr, a netip.Addr) int {
	lo, hi := 1, len(chunks)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if a.Less(chunks[mid][0]) {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return lo - 1
}

// lowerBound is the number of addresses of sorted before a.
func lowerBound(sorted []netip.Addr, a netip.Addr) int {
	i, _ := slices.BinarySearchFunc(sorted, a, netip.Addr.Compare)
	return i
}
