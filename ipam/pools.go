package ipam

import (
	"cmp"
	"fmt"
	"math/big"
	"slices"

	"github.com/google/btree"
)

func famIndex(f Family) int {
	if f == IPv4 {
		return 0
	}
	return 1
}

func lessInterval(a, b interval) bool { return a.first.less(b.first) }

// SetPool adds a pool or replaces the one with the same name. Addresses held
// already stay held, whether or not the new ranges contain them.
func (a *Allocator) SetPool(p Pool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := &poolState{Pool: p}
	ps.Ranges = slices.Clone(p.Ranges)
	for i := range ps.fam {
		ps.fam[i] = famState{free: btree.NewG(16, lessInterval), total: new(big.Int)}
	}
	for _, r := range ps.Ranges {
		fs := &ps.fam[famIndex(r.Family())]
		first, last := keyOf(r.First), keyOf(r.Last)
		n := span(first, last)
		if ps.avoids(r.Family()) {
			n.Sub(n, new(big.Int).SetUint64(buggyIn(first, last)))
		}
		fs.total.Add(fs.total, n)
		if iv, ok := ps.trim(interval{first, last}, r.Family()); ok {
			fs.free.ReplaceOrInsert(iv)
		}
	}
	for k, h := range a.holdings {
		if ps.allocatable(k, h.family) {
			ps.take(k, h.family)
		}
	}
	a.pools[p.Name] = ps
	a.sortPools()
}

// DeletePool removes a pool. Addresses held from it stay held.
func (a *Allocator) DeletePool(name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.pools, name)
	a.sortPools()
}

func (ps *poolState) avoids(f Family) bool { return ps.AvoidBuggyIPs && f == IPv4 }

func (ps *poolState) contains(k key, f Family) bool {
	i, found := slices.BinarySearchFunc(ps.Ranges, k, func(r Range, k key) int {
		return keyCompare(keyOf(r.First), k)
	})
	if found {
		return true
	}
	if i == 0 {
		return false
	}
	r := ps.Ranges[i-1]
	return r.Family() == f && !keyOf(r.Last).less(k)
}

func (ps *poolState) allocatable(k key, f Family) bool {
	return ps.contains(k, f) && !(ps.avoids(f) && k.buggy())
}

// refusal returns why s may not use the pool, nil when it may.
func (ps *poolState) refusal(s Subject) error {
	if ps.Refuses == nil {
		return nil
	}
	return ps.Refuses(s)
}

func (ps *poolState) has(f Family) bool { return ps.fam[famIndex(f)].total.Sign() > 0 }

// trim narrows iv so that it starts and ends on an allocatable address.
func (ps *poolState) trim(iv interval, f Family) (interval, bool) {
	if ps.avoids(f) {
		for iv.first.buggy() && !iv.last.less(iv.first) {
			iv.first = iv.first.next()
		}
		for iv.last.buggy() && !iv.last.less(iv.first) {
			iv.last = iv.last.prev()
		}
	}
	return iv, !iv.last.less(iv.first)
}

// take marks an allocatable address of the pool as used.
func (ps *poolState) take(k key, f Family) {
	fs := &ps.fam[famIndex(f)]
	fs.inUse++
	var iv interval
	found := false
	fs.free.DescendLessOrEqual(interval{first: k}, func(x interval) bool {
		iv, found = x, true
		return false
	})
	if !found || iv.last.less(k) {
		return
	}
	fs.free.Delete(iv)
	if k != iv.first {
		if left, ok := ps.trim(interval{iv.first, k.prev()}, f); ok {
			fs.free.ReplaceOrInsert(left)
		}
	}
	if k != iv.last {
		if right, ok := ps.trim(interval{k.next(), iv.last}, f); ok {
			fs.free.ReplaceOrInsert(right)
		}
	}
}

// give returns an allocatable address of the pool to the free set, merged
// with its free neighbours.
func (ps *poolState) give(k key, f Family) {
	fs := &ps.fam[famIndex(f)]
	fs.inUse--
	iv := interval{k, k}
	var pred, succ interval
	var hasPred, hasSucc bool
	fs.free.DescendLessOrEqual(interval{first: k}, func(x interval) bool {
		pred, hasPred = x, ps.nextAllocatable(x.last, f) == k
		return false
	})
	fs.free.AscendGreaterOrEqual(interval{first: k}, func(x interval) bool {
		succ, hasSucc = x, x.first == ps.nextAllocatable(k, f)
		return false
	})
	if hasPred {
		fs.free.Delete(pred)
		iv.first = pred.first
	}
	if hasSucc {
		fs.free.Delete(succ)
		iv.last = succ.last
	}
	fs.free.ReplaceOrInsert(iv)
}

// nextAllocatable returns the address after k, skipping the buggy ones a
// pool avoids: free intervals may span those (they never start or end on
// one), so that freed space merges back into one interval.
func (ps *poolState) nextAllocatable(k key, f Family) key {
	k = k.next()
	for ps.avoids(f) && k.buggy() {
		k = k.next()
	}
	return k
}

// lowestFree returns the pool's lowest free address of family f.
func (ps *poolState) lowestFree(f Family) (key, bool) {
	iv, ok := ps.fam[famIndex(f)].free.Min()
	return iv.first, ok
}

func (ps *poolState) usage(f Family) string {
	fs := ps.fam[famIndex(f)]
	return fmt.Sprintf("pool %q: %d of %s %s addresses in use", ps.Name, fs.inUse, fs.total, f)
}

// sortPools refreshes the pools in priority order (highest first), then
// by name.
func (a *Allocator) sortPools() {
	a.sorted = a.sorted[:0]
	for _, ps := range a.pools {
		a.sorted = append(a.sorted, ps)
	}
	slices.SortFunc(a.sorted, func(x, y *poolState) int {
		if c := cmp.Compare(y.Priority, x.Priority); c != 0 {
			return c
		}
		return cmp.Compare(x.Name, y.Name)
	})
	a.linkOverlaps()
}

// poolOf returns the name of the first pool (by priority) that contains a.
func (a *Allocator) poolOf(k key, f Family) string {
	for _, ps := range a.sorted {
		if ps.contains(k, f) {
			return ps.Name
		}
	}
	return ""
}
