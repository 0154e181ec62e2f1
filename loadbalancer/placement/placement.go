// Package placement chooses which node announces a VIP. The choice is
// stable (the current owner keeps a VIP while it stays eligible) and
// otherwise made by rendezvous hashing, so VIPs spread evenly over nodes and
// a node joining or leaving moves only the VIPs it must.
package placement

import (
	"hash/fnv"
	"net/netip"
	"slices"
)

// Choose returns the node that should announce vip: current if it is
// among eligible, else the eligible node with the highest rendezvous score.
// It returns "" when no node is eligible.
func Choose(vip netip.Addr, current string, eligible []string) string {
	if current != "" && slices.Contains(eligible, current) {
		return current
	}
	best, bestScore := "", uint64(0)
	for _, n := range eligible {
		s := Score(vip, n)
		if best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// Score is the rendezvous weight of node for vip.
func Score(vip netip.Addr, node string) uint64 {
	h := fnv.New64a()
	b := vip.As16()
	h.Write(b[:])
	h.Write([]byte{0})
	h.Write([]byte(node))
	return mix(h.Sum64())
}

// mix is a 64-bit finalizer (from SplitMix64) that spreads FNV's output,
// whose high bits vary little between close inputs.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
