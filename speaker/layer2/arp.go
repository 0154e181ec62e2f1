package layer2

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
)

// arpFilter accepts Ethernet frames carrying ARP requests and replies only
// (requests are answered; both may claim an address).
var arpFilter = mustAssemble([]bpf.Instruction{
	bpf.LoadAbsolute{Off: 12, Size: 2}, // EtherType
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: unix.ETH_P_ARP, SkipTrue: 4},
	bpf.LoadAbsolute{Off: 14 + 6, Size: 2}, // ARP operation
	bpf.JumpIf{Cond: bpf.JumpEqual, Val: uint32(arp.OperationRequest), SkipTrue: 1},
	bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: uint32(arp.OperationReply), SkipTrue: 1},
	bpf.RetConstant{Val: 0xffff},
	bpf.RetConstant{Val: 0},
})

// mustAssemble assembles a BPF program known to be valid.
func mustAssemble(prog []bpf.Instruction) []bpf.RawInstruction {
	raw, err := bpf.Assemble(prog)
	if err != nil {
		panic(fmt.Sprintf("layer2: assemble BPF filter: %v", err))
	}
	return raw
}

// arpConn is the ARP socket of a Responder: a raw AF_PACKET socket, which
// needs no IPv4 address on the interface (unlike arp.Dial).
type arpConn struct {
	pc *packet.Conn
	hw net.HardwareAddr
}

// openARP opens the ARP socket on ifi.
func openARP(ifi *net.Interface) (*arpConn, error) {
	pc, err := packet.Listen(ifi, packet.Raw, unix.ETH_P_ARP, &packet.Config{Filter: arpFilter})
	if err != nil {
		return nil, fmt.Errorf("open ARP socket: %w", err)
	}
	ignoreOutgoing(pc)
	return &arpConn{pc: pc, hw: ifi.HardwareAddr}, nil
}

// ignoreOutgoing asks the kernel not to loop the frames sent on the interface
// back to pc (Linux 4.20 and later). It is only an optimization: frames sent
// by this host are ignored anyway.
func ignoreOutgoing(pc *packet.Conn) {
	rc, err := pc.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SetsockoptInt(int(fd), unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1)
	})
}

func (c *arpConn) close() error { return c.pc.Close() }

// arpMsg is a received ARP request or reply.
type arpMsg struct {
	ethSrc net.HardwareAddr // source of the Ethernet frame
	pkt    *arp.Packet
}

// parseARPFrame parses an Ethernet frame received on an interface whose
// address is hw. It reports false for anything but an ARP request or reply
// for IPv4 over Ethernet from another host (Ethernet source), addressed to hw
// or broadcast (or multicast).
func parseARPFrame(frame []byte, hw net.HardwareAddr) (arpMsg, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil {
		return arpMsg{}, false
	}
	if f.EtherType != ethernet.EtherTypeARP || bytes.Equal(f.Source, hw) ||
		!(f.Destination[0]&1 == 1 || bytes.Equal(f.Destination, hw)) {
		return arpMsg{}, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return arpMsg{}, false
	}
	if (p.Operation != arp.OperationRequest && p.Operation != arp.OperationReply) || p.HardwareType != 1 ||
		p.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		p.HardwareAddrLength != 6 || p.IPLength != 4 ||
		!p.TargetIP.Is4() || !p.SenderIP.Is4() {
		return arpMsg{}, false
	}
	return arpMsg{ethSrc: f.Source, pkt: &p}, true
}

// parseARPRequest parses an Ethernet frame received on an interface whose
// address is hw. It reports false for anything but an ARP request for an IPv4
// address from another host, addressed to hw or broadcast, that is not itself
// an announcement (sender IP == target IP): the requests to answer if their
// target is announced. An ARP probe (sender IP 0.0.0.0) is one: the owner of
// an address defends it (RFC 5227).
func parseARPRequest(frame []byte, hw net.HardwareAddr) (arpMsg, bool) {
	m, ok := parseARPFrame(frame, hw)
	if !ok || !m.answerable() {
		return arpMsg{}, false
	}
	return m, true
}

// answerable reports whether m is a request to answer if its target is
// announced.
func (m arpMsg) answerable() bool {
	return m.pkt.Operation == arp.OperationRequest && m.pkt.SenderIP != m.pkt.TargetIP
}

// arpClaim returns the claim that m makes, if any, on a host whose address is
// hw (At is left to the caller): an ARP probe (sender IP 0.0.0.0) claims its
// target IP, any other request or reply its sender IP. Messages whose sender
// hardware address is hw are not claims.
func arpClaim(m arpMsg, hw net.HardwareAddr) (Claim, bool) {
	p := m.pkt
	if bytes.Equal(p.SenderHardwareAddr, hw) {
		return Claim{}, false
	}
	c := Claim{Addr: p.SenderIP, MAC: p.SenderHardwareAddr}
	switch {
	case p.SenderIP.IsUnspecified() && p.Operation == arp.OperationRequest:
		c.Addr, c.Kind = p.TargetIP, ClaimARPProbe
	case p.SenderIP.IsUnspecified():
		return Claim{}, false
	case p.Operation == arp.OperationRequest:
		c.Kind = ClaimARPRequest
	default:
		c.Kind = ClaimARPReply
	}
	if _, err := normalize(c.Addr); err != nil {
		return Claim{}, false
	}
	return c, true
}

// reply answers req: vip is at c.hw.
func (c *arpConn) reply(req arpMsg) error {
	p, err := arp.NewPacket(arp.OperationReply, c.hw, req.pkt.TargetIP, req.pkt.SenderHardwareAddr, req.pkt.SenderIP)
	if err != nil {
		return fmt.Errorf("build ARP reply: %w", err)
	}
	if err := c.write(p, req.ethSrc); err != nil {
		return fmt.Errorf("send ARP reply for %s to %s: %w", req.pkt.TargetIP, req.pkt.SenderIP, err)
	}
	return nil
}

// gratuitous broadcasts one round of gratuitous ARP for vip: an ARP
// announcement (RFC 5227: a request with sender and target IP set to vip) and
// a gratuitous reply (target hardware address = sender's, which Linux needs to
// treat a reply as gratuitous), since equipment differs in what it honors.
func (c *arpConn) gratuitous(vip netip.Addr) error {
	req, err := arp.NewPacket(arp.OperationRequest, c.hw, vip, make(net.HardwareAddr, 6), vip)
	if err != nil {
		return fmt.Errorf("build gratuitous ARP request: %w", err)
	}
	rep, err := arp.NewPacket(arp.OperationReply, c.hw, vip, c.hw, vip)
	if err != nil {
		return fmt.Errorf("build gratuitous ARP reply: %w", err)
	}
	for _, p := range []*arp.Packet{req, rep} {
		if err := c.write(p, ethernet.Broadcast); err != nil {
			return fmt.Errorf("send gratuitous ARP for %s: %w", vip, err)
		}
	}
	return nil
}

// probe broadcasts an ARP probe for addr (RFC 5227, section 2.1.1): a
// request from c.hw with sender IP 0.0.0.0 and target hardware address zero.
func (c *arpConn) probe(addr netip.Addr) error {
	p, err := arp.NewPacket(arp.OperationRequest, c.hw, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), addr)
	if err != nil {
		return fmt.Errorf("build ARP probe: %w", err)
	}
	if err := c.write(p, ethernet.Broadcast); err != nil {
		return fmt.Errorf("send ARP probe for %s: %w", addr, err)
	}
	return nil
}

// write sends p in an Ethernet frame to dst.
func (c *arpConn) write(p *arp.Packet, dst net.HardwareAddr) error {
	pb, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	f := ethernet.Frame{
		Destination: dst,
		Source:      c.hw,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     pb,
	}
	fb, err := f.MarshalBinary()
	if err != nil {
		return err
	}
	if err := c.pc.SetWriteDeadline(time.Now().Add(writeTimeout)); err != nil {
		return err
	}
	_, err = c.pc.WriteTo(fb, &packet.Addr{HardwareAddr: dst})
	return err
}

// arpLoop answers the ARP requests received on c and reports the claims
// they and the replies make, until the Responder is closed.
func (r *Responder) arpLoop(c *arpConn) {
	r.readLoop(c.pc, 2048, opReadARP, "ARP", func(frame []byte) {
		m, ok := parseARPFrame(frame, c.hw)
		if !ok {
			return
		}
		if m.answerable() {
			r.answerARP(c, m)
		}
		if cl, ok := arpClaim(m, c.hw); ok {
			cl.At = time.Now()
			r.claimed(cl)
		}
	})
}

// answerARP replies to req if its target is announced.
func (r *Responder) answerARP(c *arpConn, req arpMsg) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if !r.announcedLocked(req.pkt.TargetIP) {
		return
	}
	err := c.reply(req)
	r.health.set(opWriteARP, err)
	if err != nil {
		r.log.Error(err, "Answering ARP request failed", "address", req.pkt.TargetIP)
		return
	}
	r.log.V(1).Info("Answered ARP request", "address", req.pkt.TargetIP,
		"requester", req.pkt.SenderIP, "requesterMAC", req.pkt.SenderHardwareAddr)
}
