package layer2

import (
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
