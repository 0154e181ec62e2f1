package ipam

// Overlapping pools. An address that lies in several pools may be handed
// out only to a subject that every one of them allows: a pool open to all
// that overlaps a restricted pool must not open the restricted pool's
// addresses to everyone. Addresses held already are kept whatever the
// pools say (Refusals reports them).

// refuser returns the first pool (by priority) that contains k and refuses
// s, nil when every pool containing k allows s.
func (a *Allocator) refuser(k key, f Family, s Subject) *poolState {
	for _, ps := range a.sorted {
		if ps.contains(k, f) && ps.refusal(s) != nil {
			return ps
		}
	}
	return nil
}

// barred returns the pools overlapping ps that refuse s: their addresses
// are not handed out to s from ps.
func (ps *poolState) barred(s Subject) []*poolState {
	var out []*poolState
	for _, o := range ps.overlaps {
		if o.Leased || o.refusal(s) != nil {
			out = append(out, o)
		}
	}
	return out
}

// lowestFreeOutside returns the pool's lowest free address of family f
// that lies in none of the barred pools. Without barred pools it costs
// what lowestFree does; with them, O(log n) for each stretch of the pool
// between barred ranges.
func (ps *poolState) lowestFreeOutside(f Family, barred []*poolState) (key, bool) {
	if len(barred) == 0 {
		return ps.lowestFree(f)
	}
	var out []Range
	for _, o := range barred {
		out = append(out, o.Ranges...)
	}
	out = mergeRanges(out)
	for _, r := range ps.Ranges {
		if r.Family() != f {
			continue
		}
		from, last := keyOf(r.First), keyOf(r.Last)
		open := true // [from, last] is still to search
		for _, b := range out {
			bf, bl := keyOf(b.First), keyOf(b.Last)
			if bl.less(from) {
				continue
			}
			if last.less(bf) {
				break
			}
			if from.less(bf) {
				if k, ok := ps.firstFree(f, from, bf.prev()); ok {
					return k, true
				}
			}
			if !bl.less(last) {
				open = false // the rest of r is barred
				break
			}
			from = bl.next()
		}
		if open {
			if k, ok := ps.firstFree(f, from, last); ok {
				return k, true
			}
		}
	}
	return key{}, false
}

// firstFree returns the pool's lowest free address of family f in
// [from, to].
func (ps *poolState) firstFree(f Family, from, to key) (key, bool) {
	fs := &ps.fam[famIndex(f)]
	var k key
	found := false
	fs.free.DescendLessOrEqual(interval{first: from}, func(iv interval) bool {
		if !iv.last.less(from) {
			// from lies in iv; free intervals span the addresses a pool
			// avoids but end on an allocatable one.
			k, found = from, true
			for ps.avoids(f) && k.buggy() {
				k = k.next()
			}
		}
		return false
	})
	if !found {
		fs.free.AscendGreaterOrEqual(interval{first: from}, func(iv interval) bool {
			k, found = iv.first, true
			return false
		})
	}
	return k, found && !to.less(k)
}

// rangesOverlap reports whether two sorted, merged range lists share an
// address.
func rangesOverlap(x, y []Range) bool {
	i, j := 0, 0
	for i < len(x) && j < len(y) {
		switch {
		case keyOf(x[i].Last).less(keyOf(y[j].First)):
			i++
		case keyOf(y[j].Last).less(keyOf(x[i].First)):
			j++
		default:
			return true
		}
	}
	return false
}

// linkOverlaps records, for each pool, the other pools it shares addresses
// with; a.mu is held.
func (a *Allocator) linkOverlaps() {
	for _, ps := range a.sorted {
		ps.overlaps = ps.overlaps[:0]
		for _, o := range a.sorted {
			if o != ps && rangesOverlap(ps.Ranges, o.Ranges) {
				ps.overlaps = append(ps.overlaps, o)
			}
		}
	}
}
