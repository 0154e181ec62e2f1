package simspeakers

import (
	"fmt"
	"net/netip"
)

// nodeAddrs returns n node addresses: taken in order from prefixes, each
// without its network address (and, for IPv4, its broadcast address), or,
// when prefixes is empty, first and the addresses that follow it.
func nodeAddrs(first netip.Addr, prefixes []netip.Prefix, n int) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, n)
	if len(prefixes) == 0 {
		for a := first; len(out) < n; a = a.Next() {
			if !a.IsValid() {
				return nil, fmt.Errorf("simspeakers: no address for node %d after %s", len(out), first)
			}
			out = append(out, a)
		}
		return out, nil
	}
	for _, p := range prefixes {
		p = p.Masked()
		for a := p.Addr().Next(); len(out) < n && a.IsValid() && p.Contains(a); a = a.Next() {
			if a.Is4() && !p.Contains(a.Next()) && p.Bits() < 31 {
				break // the broadcast address
			}
			out = append(out, a)
		}
		if len(out) == n {
			return out, nil
		}
	}
	return nil, fmt.Errorf("simspeakers: %d nodes do not fit in %v (%d addresses)", n, prefixes, len(out))
}
