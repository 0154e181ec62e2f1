package speaker

import (
	"fmt"
	"net/netip"
	"strings"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// WithAllowedPrefixes limits what the agent announces to addresses inside
// prefixes (the speaker's --allowed-cidrs, set by the cluster's admin on
// the DaemonSet): a VIP outside them, or one whose BGP advertisement
// (aggregation) would cover addresses outside them, is refused whatever a
// CCM says. None: no limit.
func WithAllowedPrefixes(prefixes []netip.Prefix) Option {
	return func(a *Agent) { a.allowed = prefixes }
}

// ParsePrefixes parses --allowed-cidrs: CIDRs such as 192.0.2.0/24 or
// 2001:db8::/64 (host bits must be zero).
func ParsePrefixes(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("allowed CIDR %q: %w", c, err)
		}
		if p != p.Masked() {
			return nil, fmt.Errorf("allowed CIDR %q has host bits set; did you mean %s?", c, p.Masked())
		}
		out = append(out, p)
	}
	return out, nil
}

// refuseOutside says why addr, advertised as advs say, is outside the
// allowed prefixes; nil when it is inside (or there is no limit).
func (a *Agent) refuseOutside(addr netip.Addr, advs []*speakerv1.BGPAdvertisement) error {
	if len(a.allowed) == 0 {
		return nil
	}
	covered := func(p netip.Prefix) bool {
		for _, allowed := range a.allowed {
			if allowed.Bits() <= p.Bits() && allowed.Contains(p.Addr()) {
				return true
			}
		}
		return false
	}
	if !covered(netip.PrefixFrom(addr, addr.BitLen())) {
		return fmt.Errorf("%s is outside this node's --allowed-cidrs %v; it announces nothing else, whatever a CCM says", addr, a.allowed)
	}
	for _, adv := range advs {
		l := int(adv.GetPrefixLength())
		if l == 0 || l >= addr.BitLen() {
			continue
		}
		p, err := addr.Prefix(l)
		if err == nil && !covered(p) {
			return fmt.Errorf("%s would be advertised to %s as %s, which reaches outside this node's --allowed-cidrs %v", addr, adv.GetPeer(), p, a.allowed)
		}
	}
	return nil
}
