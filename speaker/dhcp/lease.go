package dhcp

import (
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"
)

// Infinite is the Duration (and, unless the server gives them, the Renew
// and Rebind times) of a lease whose lease time option is 0xffffffff: the
// lease never expires.
const Infinite = time.Duration(math.MaxInt64)

// Lease is an address leased by a server.
type Lease struct {
	// Addr is the leased address (yiaddr).
	Addr netip.Addr
	// Mask is Addr's subnet from option 1 (masked), invalid if the server
	// sent no (valid) subnet mask.
	Mask netip.Prefix
	// Router is the first router of option 3, if any.
	Router netip.Addr
	// Server is the server identifier (option 54).
	Server netip.Addr
	// ServerMAC is the Ethernet source address of the ACK, used to send a
	// RELEASE to the server directly.
	ServerMAC net.HardwareAddr
	// Duration is the lease time (option 51); Infinite for 0xffffffff.
	Duration time.Duration
	// Renew (T1, option 58) defaults to Duration/2, Rebind (T2, option 59)
	// to Duration*7/8; values the server gives that are not ordered
	// Renew <= Rebind <= Duration are replaced by the defaults.
	Renew  time.Duration
	Rebind time.Duration
}

// validLeaseAddr reports whether a may be leased: IPv4, not unspecified,
// limited broadcast, multicast, loopback, link-local or class E.
func validLeaseAddr(a netip.Addr) bool {
	if !a.Is4() || a.IsUnspecified() || a == broadcastIPv4 || a.IsMulticast() || a.IsLoopback() ||
		a.IsLinkLocalUnicast() {
		return false
	}
	return a.As4()[0] < 240
}

// leaseFrom validates an OFFER or ACK and makes a Lease of it. The lease
// time is required in an ACK.
func leaseFrom(rep reply, ack bool) (Lease, error) {
	m := rep.msg
	if !validLeaseAddr(m.YIAddr) {
		return Lease{}, fmt.Errorf("dhcp: %v offers %v", m.Type, m.YIAddr)
	}
	l := Lease{Addr: m.YIAddr, ServerMAC: rep.mac}
	sid, ok := m.addrOption(optServerID)
	if !ok || !sid.Is4() || sid.IsUnspecified() || sid.IsMulticast() || sid == broadcastIPv4 {
		return Lease{}, fmt.Errorf("dhcp: %v without a valid server identifier", m.Type)
	}
	l.Server = sid
	if mask, ok := m.addrOption(optSubnetMask); ok {
		if bits, ok := maskBits(mask); ok {
			p := netip.PrefixFrom(m.YIAddr, bits).Masked()
			if bits <= 30 && (m.YIAddr == p.Addr() || m.YIAddr == lastAddr(p)) {
				return Lease{}, fmt.Errorf("dhcp: %v offers %v, the network or broadcast address of %v", m.Type, m.YIAddr, p)
			}
			l.Mask = p
		}
	}
	if v := m.Options[optRouter]; len(v) >= 4 && len(v)%4 == 0 {
		l.Router = netip.AddrFrom4([4]byte(v[:4]))
	}
	secs, ok := m.uint32Option(optLeaseTime)
	if !ok {
		if ack {
			return Lease{}, fmt.Errorf("dhcp: ACK without a lease time")
		}
	}
	l.Duration = seconds(secs)
	l.Renew, l.Rebind = l.Duration/2, l.Duration/8*7
	if l.Duration == Infinite {
		l.Renew, l.Rebind = Infinite, Infinite
	}
	t1, ok1 := m.uint32Option(optRenewalTime)
	t2, ok2 := m.uint32Option(optRebindTime)
	renew, rebind := l.Renew, l.Rebind
	if ok1 {
		renew = seconds(t1)
	}
	if ok2 {
		rebind = seconds(t2)
	}
	if renew <= rebind && rebind <= l.Duration {
		l.Renew, l.Rebind = renew, rebind
	}
	return l, nil
}

func seconds(s uint32) time.Duration {
	if s == math.MaxUint32 {
		return Infinite
	}
	return time.Duration(s) * time.Second
}

// maskBits returns the prefix length of a contiguous IPv4 netmask.
func maskBits(m netip.Addr) (int, bool) {
	b := m.As4()
	ones, bits := net.IPMask(b[:]).Size()
	if bits == 0 {
		return 0, false
	}
	return ones, true
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}
