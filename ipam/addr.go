package ipam

import (
	"encoding/binary"
	"math/big"
	"net/netip"
)

// Family is an IP address family.
type Family int

const (
	// IPv4 is the IPv4 family.
	IPv4 Family = 4
	// IPv6 is the IPv6 family.
	IPv6 Family = 6
)

// String returns "IPv4" or "IPv6", the spelling of Kubernetes' ipFamilies.
func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return "unknown family"
}

// FamilyOf returns the family of a.
func FamilyOf(a netip.Addr) Family {
	if a.Is4() {
		return IPv4
	}
	return IPv6
}

// key is an address as a 128-bit integer: IPv6 addresses as themselves,
// IPv4 addresses in the IPv4-mapped block ::ffff:0:0/96, which pools may not
// contain, so the two families never collide or touch.
type key struct{ hi, lo uint64 }

func keyOf(a netip.Addr) key {
	b := a.As16()
	return key{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

// addr converts k back; f says whether it is an IPv4 address.
func (k key) addr(f Family) netip.Addr {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], k.hi)
	binary.BigEndian.PutUint64(b[8:], k.lo)
	a := netip.AddrFrom16(b)
	if f == IPv4 {
		return a.Unmap()
	}
	return a
}

func (k key) less(o key) bool { return k.hi < o.hi || (k.hi == o.hi && k.lo < o.lo) }

func (k key) next() key {
	if k.lo == ^uint64(0) {
		return key{k.hi + 1, 0}
	}
	return key{k.hi, k.lo + 1}
}

func (k key) prev() key {
	if k.lo == 0 {
		return key{k.hi - 1, ^uint64(0)}
	}
	return key{k.hi, k.lo - 1}
}

// span returns the number of addresses from k to last, inclusive.
func span(first, last key) *big.Int {
	n := new(big.Int).SetUint64(last.hi - first.hi)
	n.Lsh(n, 64)
	if last.lo >= first.lo {
		n.Add(n, new(big.Int).SetUint64(last.lo-first.lo))
	} else {
		n.Sub(n, new(big.Int).SetUint64(first.lo-last.lo))
	}
	return n.Add(n, big.NewInt(1))
}

// buggy reports whether an IPv4 address ends in .0 or .255, addresses that
// some old clients and routers mishandle.
func (k key) buggy() bool {
	last := k.lo & 0xff
	return last == 0 || last == 0xff
}
