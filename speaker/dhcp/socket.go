package dhcp

import (
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"

	"github.com/mdlayher/packet"
	"golang.org/x/net/bpf"
)

const (
	etherTypeIPv4 = 0x0800
	protoUDP      = 17
	portServer    = 67
	portClient    = 68

	ipv4HeaderLen = 20
	udpHeaderLen  = 8

	// maxPacketLen is the largest IPv4 packet read: larger ones (jumbo
	// frames) are dropped.
	maxPacketLen = 1500
	// minPacketLen is the smallest IPv4 packet that can hold a DHCP
	// message.
	minPacketLen = ipv4HeaderLen + udpHeaderLen + minMsgLen
)

var (
	broadcastMAC  = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	broadcastIPv4 = netip.AddrFrom4([4]byte{255, 255, 255, 255})
)

// filter is the classic BPF program of the packet socket, which sees
// packets from the IPv4 header on (a Datagram socket): it accepts only
// unfragmented UDP to port 68, of at most maxPacketLen bytes.
func filter() ([]bpf.RawInstruction, error) {
	const accept, drop = 0xffff, 0
	return bpf.Assemble([]bpf.Instruction{
		// Protocol: UDP.
		bpf.LoadAbsolute{Off: 9, Size: 1},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: protoUDP, SkipTrue: 8},
		// Not a fragment: MF flag and fragment offset zero.
		bpf.LoadAbsolute{Off: 6, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpBitsSet, Val: 0x3fff, SkipTrue: 6},
		// Not too long.
		bpf.LoadExtension{Num: bpf.ExtLen},
		bpf.JumpIf{Cond: bpf.JumpGreaterThan, Val: maxPacketLen, SkipTrue: 4},
		// X = IPv4 header length; destination port at X+2.
		bpf.LoadMemShift{Off: 0},
		bpf.LoadIndirect{Off: 2, Size: 2},
		bpf.JumpIf{Cond: bpf.JumpNotEqual, Val: portClient, SkipTrue: 1},
		bpf.RetConstant{Val: accept},
		bpf.RetConstant{Val: drop},
	})
}

// Listen opens an AF_PACKET socket of type Datagram for IPv4 on ifi, with a
// BPF filter that passes only UDP to port 68, and returns a Client using
// it. It binds no UDP port, so a DHCP client of the node itself may run on
// the same interface. It needs CAP_NET_RAW. The socket belongs to the
// network namespace of the calling thread.
func Listen(ifi *net.Interface, opts ...Option) (*Client, error) {
	f, err := filter()
	if err != nil {
		return nil, fmt.Errorf("dhcp: assemble BPF filter: %w", err)
	}
	conn, err := packet.Listen(ifi, packet.Datagram, etherTypeIPv4, &packet.Config{Filter: f})
	if err != nil {
		return nil, fmt.Errorf("dhcp: open packet socket on %s: %w", ifi.Name, err)
	}
	return New(ifi, conn, opts...), nil
}

// checksum is the Internet checksum (RFC 1071) of b, added to the partial
// sum initial.
func checksum(initial uint32, b []byte) uint16 {
	sum := initial
	for len(b) >= 2 {
		sum += uint32(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		sum += uint32(b[0]) << 8
	}
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return ^uint16(sum)
}

// buildPacket wraps payload in UDP (src port 68, dst port 67) and IPv4
// headers from src to dst, with both checksums, TTL 64 and no options.
func buildPacket(src, dst netip.Addr, payload []byte) []byte {
	total := ipv4HeaderLen + udpHeaderLen + len(payload)
	b := make([]byte, total)
	ip := b[:ipv4HeaderLen]
	ip[0] = 0x45 // version 4, IHL 5
	ip[1] = 0x10 // DSCP/ToS: low delay, as ISC dhclient
	binary.BigEndian.PutUint16(ip[2:4], uint16(total))
	ip[8] = 64
	ip[9] = protoUDP
	s, d := src.As4(), dst.As4()
	copy(ip[12:16], s[:])
	copy(ip[16:20], d[:])
	binary.BigEndian.PutUint16(ip[10:12], checksum(0, ip))

	udp := b[ipv4HeaderLen:]
	binary.BigEndian.PutUint16(udp[0:2], portClient)
	binary.BigEndian.PutUint16(udp[2:4], portServer)
	binary.BigEndian.PutUint16(udp[4:6], uint16(udpHeaderLen+len(payload)))
	copy(udp[udpHeaderLen:], payload)
	// Pseudo-header: addresses, protocol, UDP length.
	pseudo := uint32(binary.BigEndian.Uint16(s[0:2])) + uint32(binary.BigEndian.Uint16(s[2:4])) +
		uint32(binary.BigEndian.Uint16(d[0:2])) + uint32(binary.BigEndian.Uint16(d[2:4])) +
		protoUDP + uint32(udpHeaderLen+len(payload))
	c := checksum(pseudo, udp)
	if c == 0 {
		c = 0xffff // 0 means "no checksum" in UDP over IPv4
	}
	binary.BigEndian.PutUint16(udp[6:8], c)
	return b
}

// udpPayload checks an IPv4 packet read from the socket (version, header
// length and checksum, total length, no fragment, UDP from port 67 to port
// 68, UDP length) and returns its UDP payload and source address. It does
// not check the UDP checksum: packets from a local or virtual sender may
// carry a partial one (checksum offload), which the kernel would have
// completed on a real wire.
func udpPayload(b []byte) ([]byte, netip.Addr, error) {
	if len(b) < minPacketLen || len(b) > maxPacketLen {
		return nil, netip.Addr{}, fmt.Errorf("packet of %d bytes, want %d to %d", len(b), minPacketLen, maxPacketLen)
	}
	if b[0]>>4 != 4 {
		return nil, netip.Addr{}, fmt.Errorf("IP version %d", b[0]>>4)
	}
	ihl := int(b[0]&0x0f) * 4
	if ihl < ipv4HeaderLen || ihl+udpHeaderLen > len(b) {
		return nil, netip.Addr{}, fmt.Errorf("IPv4 header length %d", ihl)
	}
	if checksum(0, b[:ihl]) != 0 {
		return nil, netip.Addr{}, fmt.Errorf("bad IPv4 header checksum")
	}
	total := int(binary.BigEndian.Uint16(b[2:4]))
	if total < ihl+udpHeaderLen || total > len(b) {
		return nil, netip.Addr{}, fmt.Errorf("IPv4 total length %d of a %d-byte packet", total, len(b))
	}
	b = b[:total] // drop Ethernet padding
	if binary.BigEndian.Uint16(b[6:8])&0x3fff != 0 {
		return nil, netip.Addr{}, fmt.Errorf("IPv4 fragment")
	}
	if b[9] != protoUDP {
		return nil, netip.Addr{}, fmt.Errorf("IP protocol %d", b[9])
	}
	src := netip.AddrFrom4([4]byte(b[12:16]))
	udp := b[ihl:]
	if sp, dp := binary.BigEndian.Uint16(udp[0:2]), binary.BigEndian.Uint16(udp[2:4]); sp != portServer || dp != portClient {
		return nil, netip.Addr{}, fmt.Errorf("UDP ports %d -> %d", sp, dp)
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:6]))
	if ulen < udpHeaderLen || ulen > len(udp) {
		return nil, netip.Addr{}, fmt.Errorf("UDP length %d of %d bytes", ulen, len(udp))
	}
	return udp[udpHeaderLen:ulen], src, nil
}
