package layer2

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
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
		m, _ := parseNSFrame(data, ourMAC)
		c, ok := nsClaim(m, ourMAC)
		switch {
		case !ok:
			if m.slla == nil || !bytes.Equal(m.slla, ourMAC) {
				t.Fatalf("no claim from %+v", m)
			}
		case bytes.Equal(c.MAC, ourMAC) || len(c.MAC) != 6:
			t.Fatalf("claim by MAC %s", c.MAC)
		case ns.src.IsUnspecified() && (c.Kind != ClaimDAD || c.Addr != ns.target):
			t.Fatalf("DAD claim %+v", c)
		case !ns.src.IsUnspecified() && (c.Kind != ClaimNS || c.Addr != ns.src):
			t.Fatalf("NS claim %+v", c)
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

// FuzzParseARPFrame: no frame makes the ARP parser or arpClaim panic; what
// the parser accepts is an IPv4-over-Ethernet request or reply from another
// host, addressed to us or to a group; and a claim is of a unicast IPv4
// address, by a hardware address that is not ours, of the kind the packet
// says.
func FuzzParseARPFrame(f *testing.F) {
	zero := make([]byte, 6)
	f.Add(arpRequestFrame(f, theirMAC, ipB, vip4, ethernet.Broadcast))
	f.Add(arpFrame(f, arp.OperationReply, theirMAC, vip4, ourMAC, netip.IPv4Unspecified(), theirMAC, ourMAC))
	f.Add(arpFrame(f, arp.OperationRequest, theirMAC, netip.IPv4Unspecified(), zero, vip4, theirMAC, ethernet.Broadcast))
	f.Add(arpFrame(f, arp.OperationReply, theirMAC, vip4, theirMAC, vip4, theirMAC, ethernet.Broadcast))
	f.Add(arpFrame(f, arp.OperationRequest, ourMAC, vip4, zero, vip4, theirMAC, ethernet.Broadcast))
	f.Fuzz(func(t *testing.T, frame []byte) {
		m, ok := parseARPFrame(frame, ourMAC)
		if !ok {
			return
		}
		p := m.pkt
		switch {
		case p.Operation != arp.OperationRequest && p.Operation != arp.OperationReply:
			t.Fatalf("accepted operation %d", p.Operation)
		case !p.SenderIP.Is4() || !p.TargetIP.Is4() || len(p.SenderHardwareAddr) != 6:
			t.Fatalf("accepted %+v", p)
		case bytes.Equal(m.ethSrc, ourMAC):
			t.Fatalf("accepted our own frame %x", frame)
		case frame[0]&1 == 0 && !bytes.Equal(frame[0:6], ourMAC):
			t.Fatalf("accepted a frame to another host: %x", frame)
		}
		if m.answerable() != (p.Operation == arp.OperationRequest && p.SenderIP != p.TargetIP) {
			t.Fatalf("answerable() = %t for %+v", m.answerable(), p)
		}
		c, ok := arpClaim(m, ourMAC)
		if !ok {
			return
		}
		if _, err := normalize(c.Addr); err != nil || !c.Addr.Is4() {
			t.Fatalf("claim of %s: %v", c.Addr, err)
		}
		if bytes.Equal(c.MAC, ourMAC) {
			t.Fatalf("claim by our own MAC: %+v", p)
		}
		var want ClaimKind
		switch {
		case p.SenderIP.IsUnspecified():
			want = ClaimARPProbe
		case p.Operation == arp.OperationRequest:
			want = ClaimARPRequest
		default:
			want = ClaimARPReply
		}
		if c.Kind != want {
			t.Fatalf("claim kind %s, want %s, for %+v", c.Kind, want, p)
		}
	})
}

// FuzzParseAdvert feeds the Neighbor Advertisement parser whole frames, and
// ICMPv6 messages wrapped in a valid frame (see wrapNA). Nothing may panic;
// what it accepts is an advertisement of a unicast IPv6 target from a
// unicast source, not solicited if sent to a group, from another host.
func FuzzParseAdvert(f *testing.F) {
	na := naFrame(f, ip6B, netip.Addr{}, vip6, false, theirMAC)
	f.Add(na, false)
	f.Add(na[icmpOffset:], true)
	f.Add(naFrame(f, ip6B, ip6A, vip6, true, nil)[icmpOffset:], true)
	f.Add(naFrame(f, ip6B, ip6A, vip6, true, ourMAC), false)
	f.Fuzz(func(t *testing.T, data []byte, fixUp bool) {
		if fixUp {
			data = wrapNA(data)
		}
		m, ok := parseAdvert(data, ourMAC)
		if !ok {
			return
		}
		switch {
		case !m.target.Is6() || m.target.Is4In6() || m.target.IsMulticast() || m.target.IsUnspecified():
			t.Fatalf("accepted target %s", m.target)
		case m.src.IsMulticast() || m.src.IsUnspecified():
			t.Fatalf("accepted source %s", m.src)
		case bytes.Equal(m.ethSrc, ourMAC) || bytes.Equal(m.tlla, ourMAC):
			t.Fatalf("accepted an advertisement of ours: %x", data)
		case m.tlla != nil && len(m.tlla) != 6:
			t.Fatalf("accepted target link-layer address %x", m.tlla)
		case data[ethHeaderLen+7] != 255:
			t.Fatalf("accepted hop limit %d", data[ethHeaderLen+7])
		}
		if c := naClaim(m); c.Addr != m.target || c.Kind != ClaimNA || len(c.MAC) != 6 {
			t.Fatalf("claim %+v of %+v", c, m)
		}
	})
}

// wrapNA puts msg, as a Neighbor Advertisement, in an Ethernet and IPv6
// frame from 2001:db8::b to all nodes (or to us, when msg's second byte is
// odd), with its checksum set.
func wrapNA(msg []byte) []byte {
	if len(msg) < 4 || len(msg) > 1400 {
		return nil
	}
	msg = bytes.Clone(msg)
	dst, ethDst := allNodes, multicastMAC(allNodes)
	if msg[1]&1 == 1 {
		dst, ethDst = ip6A, ourMAC
	}
	msg[0], msg[1] = 136, 0 // Neighbor Advertisement, code 0
	msg[2], msg[3] = 0, 0
	binary.BigEndian.PutUint16(msg[2:4], icmpv6Checksum(ip6B, dst, msg))
	return icmpv6Frame(theirMAC, ethDst, ip6B, dst, msg)
}
