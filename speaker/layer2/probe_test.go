package layer2

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

// prober sends hand-made ARP / NDP frames from namespace B and reads what
// comes back, through a raw AF_PACKET socket (B's kernel is not involved).
type prober struct {
	pc  *packet.Conn
	mac net.HardwareAddr
	buf []byte
}

// newProber opens a prober for EtherType proto on B's veth end.
func newProber(t *testing.T, tn *testNet, proto int) *prober {
	t.Helper()
	var pc *packet.Conn
	err := netrig.Do(tn.b, func() error {
		var err error
		pc, err = packet.Listen(tn.ifiB, packet.Raw, proto, nil)
		return err
	})
	if err != nil {
		t.Fatalf("open prober: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return &prober{pc: pc, mac: tn.ifiB.HardwareAddr, buf: make([]byte, 2048)}
}

// send sends a raw Ethernet frame.
func (p *prober) send(t *testing.T, frame []byte) {
	t.Helper()
	if _, err := p.pc.WriteTo(frame, &packet.Addr{HardwareAddr: frame[0:6]}); err != nil {
		t.Fatalf("send frame: %v", err)
	}
}

// drain discards the frames already received.
func (p *prober) drain() {
	for {
		_ = p.pc.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, _, err := p.pc.ReadFrom(p.buf); err != nil {
			return
		}
	}
}

// read calls match on every frame received until it returns true (then read
// returns true) or the timeout expires (then false).
func (p *prober) read(t *testing.T, timeout time.Duration, match func(frame []byte) bool) bool {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_ = p.pc.SetReadDeadline(deadline)
		n, _, err := p.pc.ReadFrom(p.buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false
			}
			t.Fatalf("read frame: %v", err)
		}
		if match(p.buf[:n]) {
			return true
		}
	}
}

// arpRequestFrame returns an ARP request from mac/ip for target, sent to
// ethDst.
func arpRequestFrame(t testing.TB, mac net.HardwareAddr, ip, target netip.Addr, ethDst net.HardwareAddr) []byte {
	t.Helper()
	p, err := arp.NewPacket(arp.OperationRequest, mac, ip, make(net.HardwareAddr, 6), target)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	f := ethernet.Frame{Destination: ethDst, Source: mac, EtherType: ethernet.EtherTypeARP, Payload: pb}
	fb, err := f.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// parseARP parses an Ethernet frame carrying ARP.
func parseARP(frame []byte) (*ethernet.Frame, *arp.Packet, bool) {
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return nil, nil, false
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return nil, nil, false
	}
	return &f, &p, true
}

// arpResolve sends an ARP request for target from B (to ethDst, broadcast if
// nil) and returns the hardware address in the reply, or nil if there is none
// within timeout.
func (p *prober) arpResolve(t *testing.T, src, target netip.Addr, ethDst net.HardwareAddr, timeout time.Duration) net.HardwareAddr {
	t.Helper()
	if ethDst == nil {
		ethDst = ethernet.Broadcast
	}
	p.drain()
	p.send(t, arpRequestFrame(t, p.mac, src, target, ethDst))
	var got net.HardwareAddr
	p.read(t, timeout, func(frame []byte) bool {
		f, a, ok := parseARP(frame)
		if !ok || a.Operation != arp.OperationReply || a.SenderIP != target {
			return false
		}
		if a.TargetIP == a.SenderIP && bytes.Equal(f.Destination, ethernet.Broadcast) {
			return false // a gratuitous announcement still going out (p.drain ran before it), not the answer
		}
		if !bytes.Equal(f.Destination, p.mac) || !bytes.Equal(a.TargetHardwareAddr, p.mac) || a.TargetIP != src {
			t.Errorf("ARP reply for %s not addressed to the requester: %+v (frame to %s)", target, a, f.Destination)
		}
		if !bytes.Equal(f.Source, a.SenderHardwareAddr) {
			t.Errorf("ARP reply for %s: frame from %s, sender hardware address %s", target, f.Source, a.SenderHardwareAddr)
		}
		got = a.SenderHardwareAddr
		return true
	})
	return got
}

// garp is a received gratuitous ARP.
type garp struct {
	at time.Time
	op arp.Operation
}

// gratuitousARPs collects the gratuitous ARPs for vip from mac received
// during d.
func (p *prober) gratuitousARPs(t *testing.T, vip netip.Addr, mac net.HardwareAddr, d time.Duration) []garp {
	t.Helper()
	var out []garp
	p.read(t, d, func(frame []byte) bool {
		f, a, ok := parseARP(frame)
		if !ok || a.SenderIP != vip || a.TargetIP != vip || !bytes.Equal(a.SenderHardwareAddr, mac) {
			return false
		}
		if !bytes.Equal(f.Destination, ethernet.Broadcast) {
			t.Errorf("gratuitous ARP sent to %s, want broadcast", f.Destination)
		}
		if a.Operation == arp.OperationReply && !bytes.Equal(a.TargetHardwareAddr, mac) {
			t.Errorf("gratuitous ARP reply with target hardware address %s, want %s", a.TargetHardwareAddr, mac)
		}
		out = append(out, garp{at: time.Now(), op: a.Operation})
		return false
	})
	return out
}

// nsFrame returns an Ethernet frame carrying a Neighbor Solicitation for
// target from mac/src. It is sent to the solicited-node group of target,
// unless unicastTo is set (then to target at unicastTo). A source link-layer
// address option is included unless src is unspecified.
func nsFrame(t testing.TB, mac net.HardwareAddr, src, target netip.Addr, unicastTo net.HardwareAddr) []byte {
	t.Helper()
	ns := &ndp.NeighborSolicitation{TargetAddress: target}
	if !src.IsUnspecified() {
		ns.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	dst, ethDst := target, unicastTo
	if unicastTo == nil {
		var err error
		if dst, err = ndp.SolicitedNodeMulticast(target); err != nil {
			t.Fatal(err)
		}
		ethDst = multicastMAC(dst)
	}
	return ipv6Frame(t, mac, ethDst, src, dst, ns)
}

// ipv6Frame returns an Ethernet frame carrying NDP message m.
func ipv6Frame(t testing.TB, mac, ethDst net.HardwareAddr, src, dst netip.Addr, m ndp.Message) []byte {
	t.Helper()
	msg, err := ndp.MarshalMessageChecksum(m, src, dst)
	if err != nil {
		t.Fatal(err)
	}
	return icmpv6Frame(mac, ethDst, src, dst, msg)
}

// advert is a received Neighbor Advertisement.
type advert struct {
	ethSrc, ethDst net.HardwareAddr
	src, dst       netip.Addr
	na             *ndp.NeighborAdvertisement
}

// tlla returns the target link-layer address option of the advertisement.
func (a *advert) tlla() net.HardwareAddr {
	for _, o := range a.na.Options {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
			return lla.Addr
		}
	}
	return nil
}

// parseNA parses an Ethernet frame carrying a Neighbor Advertisement.
func parseNA(frame []byte) (*advert, bool) {
	if len(frame) < icmpOffset+nsMinLen || binary.BigEndian.Uint16(frame[12:14]) != unix.ETH_P_IPV6 {
		return nil, false
	}
	ip := frame[ethHeaderLen:]
	if ip[6] != unix.IPPROTO_ICMPV6 || frame[icmpOffset] != byte(ipv6.ICMPTypeNeighborAdvertisement) {
		return nil, false
	}
	plen := int(binary.BigEndian.Uint16(ip[4:6]))
	if len(ip) < ipv6HeaderLen+plen {
		return nil, false
	}
	m, err := ndp.ParseMessage(ip[ipv6HeaderLen : ipv6HeaderLen+plen])
	if err != nil {
		return nil, false
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok {
		return nil, false
	}
	return &advert{
		ethDst: net.HardwareAddr(frame[0:6]),
		ethSrc: net.HardwareAddr(frame[6:12]),
		src:    netip.AddrFrom16([16]byte(ip[8:24])),
		dst:    netip.AddrFrom16([16]byte(ip[24:40])),
		na:     na,
	}, true
}

// solicit sends frame (a Neighbor Solicitation for target) and returns the
// first Neighbor Advertisement for target from another host received within
// timeout, or nil.
func (p *prober) solicit(t *testing.T, frame []byte, target netip.Addr, timeout time.Duration) *advert {
	t.Helper()
	p.drain()
	p.send(t, frame)
	return p.advertisement(t, target, timeout)
}

// advertisement returns the first Neighbor Advertisement for target from
// another host received within timeout, or nil.
func (p *prober) advertisement(t *testing.T, target netip.Addr, timeout time.Duration) *advert {
	t.Helper()
	var got *advert
	p.read(t, timeout, func(frame []byte) bool {
		a, ok := parseNA(frame)
		if !ok || bytes.Equal(a.ethSrc, p.mac) || a.na.TargetAddress != target {
			return false
		}
		got = a
		return true
	})
	return got
}
