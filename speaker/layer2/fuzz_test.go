package layer2

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// FuzzParseARPRequest: no frame makes the parser panic, and what it
// accepts is an IPv4 ARP request from another host that is not an
// announcement, addressed to us or broadcast.
func FuzzParseARPRequest(f *testing.F) {
	f.Add(arpRequestFrame(f, theirMAC, ipB, vip4, ethernet.Broadcast))
	f.Add(arpRequestFrame(f, theirMAC, ipB, vip4, ourMAC))
	f.Add(arpRequestFrame(f, ourMAC, ipA, vip4, ethernet.Broadcast))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, ok := parseARPRequest(frame, ourMAC)
		if !ok {
			return
		}
		p := req.pkt
		if !p.TargetIP.Is4() || !p.SenderIP.Is4() || p.SenderIP == p.TargetIP || bytes.Equal(req.ethSrc, ourMAC) {
			t.Fatalf("accepted %x as a request: %+v", frame, p)
		}
		dst := frame[0:6]
		if dst[0]&1 == 0 && !bytes.Equal(dst, ourMAC) {
			t.Fatalf("accepted a frame to another host: %x", frame)
		}
	})
}

// FuzzParseNS feeds the Neighbor Solicitation parser whole frames, and
// ICMPv6 messages wrapped in a frame with the right lengths and checksum
// (fixed up, so that mutations reach ndp's message parser rather than
// stopping at the checksum). Nothing may panic, and what it accepts is a
// solicitation of a unicast IPv6 target sent to that target or its
// solicited-node group, from a source that is not multicast.
func FuzzParseNS(f *testing.F) {
	frame := nsFrame(f, theirMAC, netip.MustParseAddr("2001:db8::b"), vip6, nil)
	f.Add(frame, false)
	f.Add(frame[icmpOffset:], true)
	f.Add(nsFrame(f, theirMAC, netip.IPv6Unspecified(), vip6, nil)[icmpOffset:], true)
	f.Add(nsFrame(f, theirMAC, netip.MustParseAddr("2001:db8::b"), vip6, ourMAC), false)
	f.Fuzz(func(t *testing.T, data []byte, fixUp bool) {
		if fixUp {
			data = wrapICMPv6(data)
		}
		ns, ok := parseNS(data, ourMAC)
		if !ok {
			return
		}
		snm, err := ndp.SolicitedNodeMulticast(ns.target)
		switch {
		case !ns.target.Is6() || ns.target.Is4In6() || ns.target.IsMulticast():
			t.Fatalf("accepted target %s", ns.target)
		case err != nil || (ns.dst != snm && ns.dst != ns.target):
			t.Fatalf("accepted a solicitation of %s sent to %s", ns.target, ns.dst)
		case ns.src.IsMulticast():
			t.Fatalf("accepted a multicast source %s", ns.src)
		}
	})
}

// wrapICMPv6 puts msg in an Ethernet and IPv6 frame to the solicited-node
// group of the target it would carry, from 2001:db8::b (or from :: when
// msg's first byte is odd), with its checksum set.
func wrapICMPv6(msg []byte) []byte {
	if len(msg) < 4 || len(msg) > 1400 {
		return nil
	}
	msg = bytes.Clone(msg)
	src := netip.MustParseAddr("2001:db8::b")
	if msg[0]&1 == 1 {
		src = netip.IPv6Unspecified()
	}
	msg[0] = 135 // Neighbor Solicitation
	dst := vip6
	if len(msg) >= 24 {
		if target := netip.AddrFrom16([16]byte(msg[8:24])); target.Is6() {
			if snm, err := ndp.SolicitedNodeMulticast(target); err == nil {
				dst = snm
			}
		}
	}
	msg[2], msg[3] = 0, 0
	binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(src, dst, msg))
	return icmpv6Frame(theirMAC, multicastMAC(dst), src, dst, msg)
}
