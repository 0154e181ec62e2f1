package layer2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Offsets in an Ethernet frame carrying an IPv6 packet without extension
// headers.
const (
	ethHeaderLen  = 14
	ipv6HeaderLen = 40
	icmpOffset    = ethHeaderLen + ipv6HeaderLen
	// nsMinLen is the length of a Neighbor Solicitation without options.
	nsMinLen = 24
)

// ndpFilter accepts Ethernet frames carrying an ICMPv6 Neighbor Solicitation
// or Neighbor Advertisement (directly after the IPv6 header, as RFC 4861
// messages are) only: solicitations are answered, and both may claim an
// address.
var ndpFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 6},
	bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1}, // Next Header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_ICMPV6, SkipTrue: 4},
	bpf.LoadAbsolute{Off: icmpOffset, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(ipv6.ICMPTypeNeighborSolicitation), SkipTrue: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv6.ICMPTypeNeighborAdvertisement), SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
})

// allNodes is the link-local all-nodes multicast address.
var allNodes = netip.MustParseAddr("ff02::1")

// ndpConn holds the NDP sockets of a Responder.
type ndpConn struct {
	// c sends Neighbor Advertisements and holds the solicited-node multicast
	// group memberships; it receives nothing.
	c *ndp.Conn
	// pc receives Neighbor Solicitations, multicast and unicast, and
	// Neighbor Advertisements; it sends duplicate address detection probes
	// (from ::, which c cannot send).
	pc *packet.Conn
	hw net.HardwareAddr
	// groups counts the announced addresses of each solicited-node group
	// joined (addresses with the same low 24 bits share a group). Guarded by
	// the Responder's mutex.
	groups map[netip.Addr]int
}

// openNDP opens the NDP sockets on ifi.
func openNDP(ifi *net.Interface) (*ndpConn, error) {
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		// No usable link-local address (yet): let the kernel choose the
		// source address of each advertisement.
		var err2 error
		c, _, err2 = ndp.Listen(ifi, ndp.Unspecified)
		if err2 != nil {
			return nil, fmt.Errorf("open NDP socket: %w", errors.Join(err, err2))
		}
	}
	// Receive nothing on c: NDP messages are read from pc. Failing to set
	// the filter only costs some memory.
	var f ipv6.ICMPFilter
	f.SetAll(true)
	_ = c.SetICMPFilter(&f)

	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: ndpFilter})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("open NDP packet socket: %w", err)
	}
	ignoreOutgoing(pc)
	return &ndpConn{c: c, pc: pc, hw: ifi.HardwareAddr, groups: make(map[netip.Addr]int)}, nil
}

func (c *ndpConn) close() error {
	return errors.Join(c.pc.Close(), c.c.Close())
}

// join joins the solicited-node multicast group of vip, if not joined yet.
func (c *ndpConn) join(vip netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return fmt.Errorf("solicited-node multicast group of %s: %w", vip, err)
	}
	if c.groups[g] == 0 {
		if err := c.c.JoinGroup(g); err != nil {
			return fmt.Errorf("join multicast group %s: %w", g, err)
		}
	}
	c.groups[g]++
	return nil
}

// leave leaves the solicited-node multicast group of vip, unless another
// announced address needs it.
func (c *ndpConn) leave(vip netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return fmt.Errorf("solicited-node multicast group of %s: %w", vip, err)
	}
	n, ok := c.groups[g]
	if !ok {
		return nil
	}
	if n > 1 {
		c.groups[g] = n - 1
		return nil
	}
	delete(c.groups, g)
	if err := c.c.LeaveGroup(g); err != nil {
		return fmt.Errorf("leave multicast group %s: %w", g, err)
	}
	return nil
}

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

// multicastMAC returns the Ethernet address of IPv6 multicast group g.
func multicastMAC(g netip.Addr) net.HardwareAddr {
	b := g.As16()
	return net.HardwareAddr{0x33, 0x33, b[12], b[13], b[14], b[15]}
}

// icmpv6Frame returns an Ethernet frame from mac to ethDst carrying the
// ICMPv6 message msg (checksum already set) from src to dst, with NDP's hop
// limit.
func icmpv6Frame(mac, ethDst net.HardwareAddr, src, dst netip.Addr, msg []byte) []byte {
	b := make([]byte, icmpOffset, icmpOffset+len(msg))
	copy(b[0:6], ethDst)
	copy(b[6:12], mac)
	binary.BigEndian.PutUint16(b[12:14], unix.ETH_P_IPV6)
	ip := b[ethHeaderLen:]
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:6], uint16(len(msg)))
	ip[6] = unix.IPPROTO_ICMPV6
	ip[7] = ndp.HopLimit
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	return append(b, msg...)
}

// dadFrame returns the Ethernet frame of a duplicate address detection probe
// for target from hw (RFC 4862, section 5.4.2): a Neighbor Solicitation from
// :: to the solicited-node group of target, without a source link-layer
// address option.
func dadFrame(hw net.HardwareAddr, target netip.Addr) ([]byte, error) {
	snm, err := ndp.SolicitedNodeMulticast(target)
	if err != nil {
		return nil, fmt.Errorf("solicited-node multicast group of %s: %w", target, err)
	}
	msg, err := ndp.MarshalMessageChecksum(&ndp.NeighborSolicitation{TargetAddress: target}, netip.IPv6Unspecified(), snm)
	if err != nil {
		return nil, fmt.Errorf("build Neighbor Solicitation for %s: %w", target, err)
	}
	return icmpv6Frame(hw, multicastMAC(snm), netip.IPv6Unspecified(), snm, msg), nil
}

// dad sends a duplicate address detection probe for target, through the
// packet socket (the ICMPv6 socket cannot send from ::).
func (c *ndpConn) dad(target netip.Addr) error {
	frame, err := dadFrame(c.hw, target)
	if err != nil {
		return err
	}
	if err := c.pc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	if _, err := c.pc.WriteTo(frame, &packet.Addr{HardwareAddr: frame[0:6]}); err != nil {
		return fmt.Errorf("send duplicate address detection probe for %s: %w", target, err)
	}
	return nil
}

// advertise sends a Neighbor Advertisement for vip, at c.hw, to dst.
func (c *ndpConn) advertise(vip, dst netip.Addr, solicited bool) error {
	na := &ndp.NeighborAdvertisement{
		Solicited:     solicited,
		Override:      true,
		TargetAddress: vip,
		Options: []ndp.Option{
			&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: c.hw},
		},
	}
	if err := c.c.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	return c.c.WriteTo(na, nil, dst)
}

// reply answers req: its target is at c.hw. A solicitation from the
// unspecified address (duplicate address detection) is answered to all nodes.
func (c *ndpConn) reply(req nsRequest) error {
	var err error
	if req.src.IsUnspecified() {
		err = c.advertise(req.target, allNodes, false)
	} else {
		err = c.advertise(req.target, req.src, true)
	}
	if err != nil {
		return fmt.Errorf("send Neighbor Advertisement for %s to %s: %w", req.target, req.src, err)
	}
	return nil
}

// unsolicited sends an unsolicited Neighbor Advertisement for vip to all
// nodes.
func (c *ndpConn) unsolicited(vip netip.Addr) error {
	if err := c.advertise(vip, allNodes, false); err != nil {
		return fmt.Errorf("send unsolicited Neighbor Advertisement for %s: %w", vip, err)
	}
	return nil
}

// ndpLoop answers the Neighbor Solicitations received on c and reports the
// claims they and the Neighbor Advertisements make, until the Responder is
// closed.
func (r *Responder) ndpLoop(c *ndpConn) {
	r.readLoop(c.pc, max(r.ifi.MTU, 1500)+ethHeaderLen, opReadNDP, "NDP", func(frame []byte) {
		if len(frame) <= icmpOffset {
			return
		}
		switch ipv6.ICMPType(frame[icmpOffset]) {
		case ipv6.ICMPTypeNeighborSolicitation:
			m, ok := parseNSFrame(frame, c.hw)
			if !ok {
				return
			}
			r.answerNS(c, m.nsRequest)
			if cl, ok := nsClaim(m, c.hw); ok {
				cl.At = time.Now()
				r.claimed(cl)
			}
		case ipv6.ICMPTypeNeighborAdvertisement:
			if m, ok := parseAdvert(frame, c.hw); ok {
				cl := naClaim(m)
				cl.At = time.Now()
				r.claimed(cl)
			}
		}
	})
}

// answerNS replies to req if its target is announced.
func (r *Responder) answerNS(c *ndpConn, req nsRequest) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.announcedLocked(req.target) {
		return
	}
	err := c.reply(req)
	r.health.set(opWriteNDP, err)
	if err != nil {
		r.log.Error(err, "Answering Neighbor Solicitation failed", "address", req.target)
		return
	}
	r.log.V(1).Info("Answered Neighbor Solicitation", "address", req.target, "requester", req.src)
}
