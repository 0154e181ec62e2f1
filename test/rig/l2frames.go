package rig

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

// AnsweringMACs asks the LAN from the client's namespace who has vip: one
// ARP request (IPv4) or Neighbor Solicitation (IPv6) sent on a raw socket,
// so the client's neighbour table is neither used nor needed, and returns
// every distinct hardware address that answered within window, sorted.
// Several answers mean several hosts claim the address; none, that nobody
// does.
func (r *L2) AnsweringMACs(ctx context.Context, vip netip.Addr, window time.Duration) ([]net.HardwareAddr, error) {
	src := ClientIPv4
	if vip.Is6() {
		src = ClientIPv6
	}
	return AnsweringMACs(ctx, r.Client, src, vip, window)
}

// AnsweringMACs sends one ARP request or Neighbor Solicitation for vip from
// h's LAN interface (with src as the sender's address) and collects the
// hardware addresses of the answers that arrive within window.
func AnsweringMACs(ctx context.Context, h *netrig.Host, src, vip netip.Addr, window time.Duration) ([]net.HardwareAddr, error) {
	proto := unix.ETH_P_ARP
	if vip.Is6() {
		proto = unix.ETH_P_IPV6
	}
	pc, err := openRaw(h, proto)
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	var (
		frame []byte
		dst   net.HardwareAddr
	)
	if vip.Is4() {
		frame, dst, err = arpRequest(h.MAC, src, vip)
	} else {
		frame, dst, err = neighborSolicitation(h.MAC, src, vip)
	}
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(window)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if _, err := pc.WriteTo(frame, &packet.Addr{HardwareAddr: dst}); err != nil {
		return nil, fmt.Errorf("asking who has %s from %s: %w", vip, h.Name, err)
	}
	var macs []net.HardwareAddr
	buf := make([]byte, 2048)
	for {
		if err := pc.SetReadDeadline(deadline); err != nil {
			return nil, err
		}
		n, _, err := pc.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading answers for %s in %s: %w", vip, h.Name, err)
		}
		mac, ok := answerFrom(buf[:n], h.MAC, src, vip)
		if ok && !slices.ContainsFunc(macs, func(m net.HardwareAddr) bool { return m.String() == mac.String() }) {
			macs = append(macs, mac)
		}
	}
	slices.SortFunc(macs, func(a, b net.HardwareAddr) int { return slices.Compare(a, b) })
	return macs, nil
}

// openRaw opens an AF_PACKET socket for EtherType proto on h's LAN
// interface, inside h's namespace.
func openRaw(h *netrig.Host, proto int) (*packet.Conn, error) {
	var pc *packet.Conn
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Interface)
		if err != nil {
			return err
		}
		pc, err = packet.Listen(ifi, packet.Raw, proto, nil)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("raw socket in %s: %w", h.Name, err)
	}
	return pc, nil
}

// arpRequest is a broadcast "who has vip, tell src" from mac.
func arpRequest(mac net.HardwareAddr, src, vip netip.Addr) ([]byte, net.HardwareAddr, error) {
	p, err := arp.NewPacket(arp.OperationRequest, mac, src, ethernet.Broadcast, vip)
	if err != nil {
		return nil, nil, err
	}
	return arpFrame(p, mac, ethernet.Broadcast)
}

func arpFrame(p *arp.Packet, from, to net.HardwareAddr) ([]byte, net.HardwareAddr, error) {
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, nil, err
	}
	f, err := (&ethernet.Frame{Destination: to, Source: from, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	return f, to, err
}

// neighborSolicitation is a multicast NS for vip from src (mac), with the
// source link-layer address option, as a host resolving vip sends it.
func neighborSolicitation(mac net.HardwareAddr, src, vip netip.Addr) ([]byte, net.HardwareAddr, error) {
	group, err := ndp.SolicitedNodeMulticast(vip)
	if err != nil {
		return nil, nil, err
	}
	m := &ndp.NeighborSolicitation{TargetAddress: vip, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}}
	return icmpv6Frame(m, mac, src, group)
}

// icmpv6Frame wraps an NDP message in IPv6 (hop limit 255, as NDP wants)
// and Ethernet, to dst's multicast or the given group's MAC.
func icmpv6Frame(m ndp.Message, mac net.HardwareAddr, src, dst netip.Addr) ([]byte, net.HardwareAddr, error) {
	msg, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		return nil, nil, err
	}
	ip := make([]byte, 40, 40+len(msg))
	ip[0] = 6 << 4
	binary.BigEndian.PutUint16(ip[4:], uint16(len(msg)))
	ip[6] = unix.IPPROTO_ICMPV6
	ip[7] = 255
	s, d := src.As16(), dst.As16()
	copy(ip[8:24], s[:])
	copy(ip[24:40], d[:])
	to := net.HardwareAddr{0x33, 0x33, d[12], d[13], d[14], d[15]}
	f, err := (&ethernet.Frame{Destination: to, Source: mac, EtherType: ethernet.EtherTypeIPv6, Payload: append(ip, msg...)}).MarshalBinary()
	return f, to, err
}

// answerFrom returns the sender of frame when it answers our question
// "who has vip" asked from (self, src): an ARP reply from vip to src, or a
// solicited Neighbor Advertisement for vip.
func answerFrom(frame []byte, self net.HardwareAddr, src, vip netip.Addr) (net.HardwareAddr, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.Source.String() == self.String() {
		return nil, false
	}
	switch f.EtherType {
	case ethernet.EtherTypeARP:
		var p arp.Packet
		if err := p.UnmarshalBinary(f.Payload); err != nil {
			return nil, false
		}
		if p.Operation != arp.OperationReply || p.SenderIP != vip || p.TargetIP != src {
			return nil, false
		}
		return f.Source, true
	case ethernet.EtherTypeIPv6:
		b := f.Payload
		if len(b) < 40 || b[0]>>4 != 6 || b[6] != unix.IPPROTO_ICMPV6 || b[7] != 255 {
			return nil, false
		}
		m, err := ndp.ParseMessage(b[40:])
		if err != nil {
			return nil, false
		}
		na, ok := m.(*ndp.NeighborAdvertisement)
		if !ok || !na.Solicited || na.TargetAddress != vip {
			return nil, false
		}
		return f.Source, true
	}
	return nil, false
}

// SendGratuitous sends one gratuitous announcement of addr from h, as a
// host does when it starts using an address (arping -U): an ARP request
// with sender and target address addr (IPv4), or an unsolicited Neighbor
// Advertisement with the override flag to all nodes (IPv6).
func SendGratuitous(h *netrig.Host, addr netip.Addr) error {
	var (
		frame []byte
		dst   net.HardwareAddr
		err   error
		proto = unix.ETH_P_ARP
	)
	if addr.Is4() {
		var p *arp.Packet
		if p, err = arp.NewPacket(arp.OperationRequest, h.MAC, addr, ethernet.Broadcast, addr); err == nil {
			frame, dst, err = arpFrame(p, h.MAC, ethernet.Broadcast)
		}
	} else {
		proto = unix.ETH_P_IPV6
		na := &ndp.NeighborAdvertisement{Override: true, TargetAddress: addr,
			Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: h.MAC}}}
		frame, dst, err = icmpv6Frame(na, h.MAC, addr, netip.MustParseAddr("ff02::1"))
	}
	if err != nil {
		return fmt.Errorf("gratuitous announcement of %s: %w", addr, err)
	}
	pc, err := openRaw(h, proto)
	if err != nil {
		return err
	}
	defer pc.Close()
	if _, err := pc.WriteTo(frame, &packet.Addr{HardwareAddr: dst}); err != nil {
		return fmt.Errorf("gratuitous announcement of %s from %s: %w", addr, h.Name, err)
	}
	return nil
}
