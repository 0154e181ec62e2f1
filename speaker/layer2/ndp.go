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

// nsFilter accepts Ethernet frames carrying an ICMPv6 Neighbor Solicitation
// (directly after the IPv6 header, as RFC 4861 messages are) only.
var nsFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_IPV6, SkipTrue: 5},
	bpf.LoadAbsolute{Off: ethHeaderLen + 6, Size: 1}, // Next Header
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.IPPROTO_ICMPV6, SkipTrue: 3},
	bpf.LoadAbsolute{Off: icmpOffset, Size: 1}, // ICMPv6 type
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(ipv6.ICMPTypeNeighborSolicitation), SkipTrue: 1},
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
	// pc receives Neighbor Solicitations, multicast and unicast.
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
	// Receive nothing on c: solicitations are read from pc. Failing to set
	// the filter only costs some memory.
	var f ipv6.ICMPFilter
	f.SetAll(true)
	_ = c.SetICMPFilter(&f)

	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_IPV6, &packet.Config{Filter: nsFilter})
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("open Neighbor Solicitation socket: %w", err)
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

// parseNS parses an Ethernet frame received on an interface whose address is
// hw. It reports false for anything but a valid (RFC 4861, section 7.1.1)
// Neighbor Solicitation from another host, addressed to hw or multicast.
func parseNS(frame []byte, hw net.HardwareAddr) (nsRequest, bool) {
	if len(frame) < icmpOffset+nsMinLen {
		return nsRequest{}, false
	}
	dstMAC, srcMAC := frame[0:6], frame[6:12]
	if bytes.Equal(srcMAC, hw) || !(dstMAC[0]&1 == 1 || bytes.Equal(dstMAC, hw)) {
		return nsRequest{}, false
	}
	ip := frame[ethHeaderLen:]
	if binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 || ip[0]>>4 != 6 ||
		ip[6] != unix.IPPROTO_ICMPV6 || ip[7] != ndp.HopLimit {
		return nsRequest{}, false
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if plen < nsMinLen || len(ip) < ipv6HeaderLen+plen {
		return nsRequest{}, false
	}
	src := netip.AddrFrom16([16]byte(ip[8:24]))
	dst := netip.AddrFrom16([16]byte(ip[24:40]))
	msg := ip[ipv6HeaderLen : ipv6HeaderLen+plen]
	if msg[0] != byte(ipv6.ICMPTypeNeighborSolicitation) || msg[1] != 0 ||
		icmpv6Checksum(src, dst, msg) != 0 {
		return nsRequest{}, false
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return nsRequest{}, false
	}
	ns, ok := m.(*ndp.NeighborSolicitation)
	if !ok || !ns.TargetAddress.Is6() || ns.TargetAddress.Is4In6() || ns.TargetAddress.IsMulticast() {
		return nsRequest{}, false
	}
	target := ns.TargetAddress.WithZone("")
	snm, err := ndp.SolicitedNodeMulticast(target)
	if err != nil || (dst != snm && dst != target) {
		return nsRequest{}, false
	}
	if src.IsUnspecified() {
		// Duplicate address detection: must go to the solicited-node group
		// and carry no source link-layer address.
		if dst != snm {
			return nsRequest{}, false
		}
		for _, o := range ns.Options {
			if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Source {
				return nsRequest{}, false
			}
		}
	}
	if src.IsMulticast() {
		return nsRequest{}, false
	}
	return nsRequest{src: src, dst: dst, target: target}, true
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

// ndpLoop answers the Neighbor Solicitations received on c until the
// Responder is closed.
func (r *Responder) ndpLoop(c *ndpConn) {
	r.readLoop(c.pc, max(r.ifi.MTU, 1500)+ethHeaderLen, opReadNDP, "Neighbor Solicitations", func(frame []byte) {
		if req, ok := parseNS(frame, c.hw); ok {
			r.answerNS(c, req)
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
