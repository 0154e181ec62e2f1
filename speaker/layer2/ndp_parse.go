package layer2

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// nsRequest is a received Neighbor Solicitation.
type nsRequest struct {
	src, dst netip.Addr // IPv6 source and destination
	target   netip.Addr
}

// icmpv6Msg is a received ICMPv6 message sent directly over IPv6 in an
// Ethernet frame.
type icmpv6Msg struct {
	ethSrc   net.HardwareAddr
	src, dst netip.Addr // IPv6 source and destination
	msg      []byte     // the ICMPv6 message
}

// parseNDPFrame parses an Ethernet frame received on an interface whose
// address is hw. It reports false for anything but a valid NDP message (RFC
// 4861, sections 7.1.1 and 7.1.2: hop limit 255, valid checksum, code 0, at
// least 24 bytes) of ICMPv6 type typ from another host, addressed to hw or
// multicast.
func parseNDPFrame(frame []byte, hw net.HardwareAddr, typ ipv6.ICMPType) (icmpv6Msg, bool) {
	if len(frame) < icmpOffset+nsMinLen {
		return icmpv6Msg{}, false
	}
	dstMAC, srcMAC := frame[0:6], frame[6:12]
	if bytes.Equal(srcMAC, hw) || !(dstMAC[0]&1 == 1 || bytes.Equal(dstMAC, hw)) {
		return icmpv6Msg{}, false
	}
	ip := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 || ip[0]>>4 != 6 ||
		ip[6] != unix.IPPROTO_ICMPV6 || ip[7] != ndp.HopLimit {
		return icmpv6Msg{}, false
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen < nsMinLen || len(ip) < ipv6HeaderLen+plen {
		return icmpv6Msg{}, false
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	msg := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if msg[0] != byte(typ) || msg[1] != 0 || icmpv6Checksum(src, dst, msg) != 0 {
		return icmpv6Msg{}, false
	}
	return icmpv6Msg{ethSrc: net.HardwareAddr(srcMAC), src: src, dst: dst, msg: msg}, true
}

// nsMsg is a received Neighbor Solicitation with what identifies its sender.
type nsMsg struct {
	nsRequest
	ethSrc net.HardwareAddr
	slla   net.HardwareAddr // source link-layer address option, if any
}

// parseNS parses an Ethernet frame received on an interface whose address is
// hw. It reports false for anything but a valid (RFC 4861, section 7.1.1)
// Neighbor Solicitation from another host, addressed to hw or multicast.
func parseNS(frame []byte, hw net.HardwareAddr) (nsRequest, bool) {
	m, ok := parseNSFrame(frame, hw)
	return m.nsRequest, ok
}

// parseNSFrame is parseNS, also returning the sender's addresses.
func parseNSFrame(frame []byte, hw net.HardwareAddr) (nsMsg, bool) {
	f, ok := parseNDPFrame(frame, hw, ipv6.ICMPTypeNeighborSolicitation)
	if !ok {
		return nsMsg{}, false
	}
	m, err := ndp.ParseMessage(f.msg)
	if err != nil {
		return nsMsg{}, false
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || !ns.TargetAddress.Is6() || ns.TargetAddress.Is4In6() || ns.TargetAddress.IsMulticast() {
		return nsMsg{}, false
	}
	target := ns.TargetAddress.WithZone("")
	snm, err := ndp.SolicitedNodeMulticast(target)
	if err != nil || (f.dst != snm && f.dst != target) {
		return nsMsg{}, false
	}
	slla := linkLayerAddr(ns.Options, ndp.Source)
	if f.src.IsUnspecified() {
		// Duplicate address detection: must go to the solicited-node group
		// and carry no source link-layer address.
		if f.dst != snm || slla != nil {
			return nsMsg{}, false
		}
	}
	if f.src.IsMulticast() {
		return nsMsg{}, false
	}
	return nsMsg{
		nsRequest: nsRequest{src: f.src, dst: f.dst, target: target},
		ethSrc:    f.ethSrc,
		slla:      slla,
	}, true
}

// linkLayerAddr returns the first link-layer address option of direction d
// among opts, or nil.
func linkLayerAddr(opts []ndp.Option, d ndp.Direction) net.HardwareAddr {
	for _, o := range opts {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == d {
			return lla.Addr
		}
	}
	return nil
}

// nsClaim returns the claim that m makes, if any, on a host whose address is
// hw (At is left to the caller): a duplicate address detection solicitation
// (source ::) claims its target, any other its source. A solicitation whose
// source link-layer address is hw is not a claim.
func nsClaim(m nsMsg, hw net.HardwareAddr) (Claim, bool) {
	if m.slla != nil && bytes.Equal(m.slla, hw) {
		return Claim{}, false
	}
	if m.src.IsUnspecified() {
		return Claim{Addr: m.target, MAC: m.ethSrc, Kind: ClaimDAD}, true
	}
	c := Claim{Addr: m.src.WithZone(""), MAC: m.ethSrc, Kind: ClaimNS}
	if m.slla != nil {
		c.MAC = m.slla
	}
	return c, true
}

// naMsg is a received Neighbor Advertisement.
type naMsg struct {
	ethSrc   net.HardwareAddr
	src, dst netip.Addr // IPv6 source and destination
	target   netip.Addr
	tlla     net.HardwareAddr // target link-layer address option, if any
}

// parseAdvert parses an Ethernet frame received on an interface whose
// address is hw. It reports false for anything but a valid (RFC 4861,
// section 7.1.2) Neighbor Advertisement of a unicast target from another
// host (Ethernet source and target link-layer address, when present, other
// than hw), sent from a unicast address to hw or multicast.
func parseAdvert(frame []byte, hw net.HardwareAddr) (naMsg, bool) {
	f, ok := parseNDPFrame(frame, hw, ipv6.ICMPTypeNeighborAdvertisement)
	if !ok || f.src.IsUnspecified() || f.src.IsMulticast() {
		return naMsg{}, false
	}
	m, err := ndp.ParseMessage(f.msg)
	if err != nil {
		return naMsg{}, false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		return naMsg{}, false
	}
	target := na.TargetAddress.WithZone("")
	if !target.Is6() || target.Is4In6() || target.IsMulticast() || target.IsUnspecified() {
		return naMsg{}, false
	}
	if f.dst.IsMulticast() && na.Solicited {
		return naMsg{}, false
	}
	tlla := linkLayerAddr(na.Options, ndp.Target)
	if tlla != nil && bytes.Equal(tlla, hw) {
		return naMsg{}, false
	}
	return naMsg{ethSrc: f.ethSrc, src: f.src, dst: f.dst, target: target, tlla: tlla}, true
}

// naClaim returns the claim that m makes (At is left to the caller): its
// target is at its target link-layer address, or else at its sender.
func naClaim(m naMsg) Claim {
	c := Claim{Addr: m.target, MAC: m.ethSrc, Kind: ClaimNA}
	if m.tlla != nil {
		c.MAC = m.tlla
	}
	return c
}

// icmpv6Checksum returns the ICMPv6 checksum of msg sent from src to dst: the
// value to store in a message whose checksum field is zero, or 0 for a
// message with a valid checksum.
func icmpv6Checksum(src, dst netip.Addr, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for len(b) >= 2 {
			sum += uint32(binary.BigEndian.Uint16(b))
			b = b[2:]
		}
		if len(b) == 1 {
			sum += uint32(b[0]) << 8
		}
	}
	s, d := src.As16(), dst.As16()
	add(s[:])
	add(d[:])
	var l [8]byte
	binary.BigEndian.PutUint32(l[:4], uint32(len(msg)))
	l[7] = unix.IPPROTO_ICMPV6
	add(l[:])
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}
