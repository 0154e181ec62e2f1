package layer2

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/bpf"
)

var (
	ourMAC   = net.HardwareAddr{0x02, 0xaa, 0, 0, 0, 1}
	theirMAC = net.HardwareAddr{0x02, 0xbb, 0, 0, 0, 2}
)

func TestParseARPRequest(t *testing.T) {
	req := arpRequestFrame(t, theirMAC, ipB, vip4, ethernet.Broadcast)
	got, ok := parseARPRequest(req, ourMAC)
	if !ok || got.pkt.TargetIP != vip4 || got.pkt.SenderIP != ipB || got.ethSrc.String() != theirMAC.String() {
		t.Fatalf("parseARPRequest(request) = %+v, %t", got, ok)
	}
	if _, ok := parseARPRequest(arpRequestFrame(t, theirMAC, ipB, vip4, ourMAC), ourMAC); !ok {
		t.Error("unicast request to us rejected")
	}
	reply := slices.Clone(req)
	reply[21] = 2
	gratuitous := arpRequestFrame(t, theirMAC, vip4, vip4, ethernet.Broadcast)
	for name, f := range map[string][]byte{
		"own":              arpRequestFrame(t, ourMAC, ipA, vip4, ethernet.Broadcast),
		"other's unicast":  arpRequestFrame(t, theirMAC, ipB, vip4, net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 3}),
		"reply":            reply,
		"gratuitous":       gratuitous,
		"truncated":        req[:30],
		"empty":            nil,
		"not ARP":          append(slices.Clone(req[:12]), append([]byte{0x86, 0xdd}, req[14:]...)...),
		"hardware len 8":   func() []byte { b := slices.Clone(req); b[18] = 8; return b }(),
		"protocol not IP4": func() []byte { b := slices.Clone(req); b[16] = 0x86; b[17] = 0xdd; return b }(),
	} {
		if got, ok := parseARPRequest(f, ourMAC); ok {
			t.Errorf("parseARPRequest(%s) = %+v, want rejected", name, got)
		}
	}
}

func TestParseNS(t *testing.T) {
	ll := netip.MustParseAddr("fe80::2")
	snm, _ := ndp.SolicitedNodeMulticast(vip6)
	check := func(name string, f []byte, want nsRequest) {
		t.Helper()
		got, ok := parseNS(f, ourMAC)
		if !ok || got != want {
			t.Errorf("parseNS(%s) = %+v, %t; want %+v", name, got, ok, want)
		}
	}
	check("multicast", nsFrame(t, theirMAC, ip6B, vip6, nil), nsRequest{src: ip6B, dst: snm, target: vip6})
	check("link-local", nsFrame(t, theirMAC, ll, vip6, nil), nsRequest{src: ll, dst: snm, target: vip6})
	check("unicast", nsFrame(t, theirMAC, ip6B, vip6, ourMAC), nsRequest{src: ip6B, dst: vip6, target: vip6})
	check("DAD", nsFrame(t, theirMAC, netip.IPv6Unspecified(), vip6, nil), nsRequest{src: netip.IPv6Unspecified(), dst: snm, target: vip6})

	good := nsFrame(t, theirMAC, ip6B, vip6, nil)
	mutate := func(f func(b []byte)) []byte { b := slices.Clone(good); f(b); return b }
	dadWithSLLA := ipv6Frame(t, theirMAC, multicastMAC(snm), netip.IPv6Unspecified(), snm, &ndp.NeighborSolicitation{
		TargetAddress: vip6,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: theirMAC}},
	})
	wrongGroup := netip.MustParseAddr("ff02::1:ff00:11")
	for name, f := range map[string][]byte{
		"own":              nsFrame(t, ourMAC, ip6B, vip6, nil),
		"other's unicast":  nsFrame(t, theirMAC, ip6B, vip6, net.HardwareAddr{0x02, 0xcc, 0, 0, 0, 3}),
		"hop limit":        mutate(func(b []byte) { b[ethHeaderLen+7] = 254 }),
		"checksum":         mutate(func(b []byte) { b[icmpOffset+3] ^= 1 }),
		"code":             mutate(func(b []byte) { b[icmpOffset+1] = 1 }),
		"next header":      mutate(func(b []byte) { b[ethHeaderLen+6] = 0 }),
		"version":          mutate(func(b []byte) { b[ethHeaderLen] = 4 << 4 }),
		"payload length":   mutate(func(b []byte) { b[ethHeaderLen+5] += 8 }),
		"truncated":        good[:len(good)-1],
		"short":            good[:20],
		"DAD with SLLA":    dadWithSLLA,
		"wrong group":      ipv6Frame(t, theirMAC, multicastMAC(wrongGroup), ip6B, wrongGroup, &ndp.NeighborSolicitation{TargetAddress: vip6}),
		"multicast target": ipv6Frame(t, theirMAC, multicastMAC(allNodes), ip6B, allNodes, &ndp.NeighborSolicitation{TargetAddress: allNodes}),
		"advertisement": ipv6Frame(t, theirMAC, multicastMAC(allNodes), ip6B, allNodes, &ndp.NeighborAdvertisement{
			TargetAddress: vip6, Override: true,
		}),
	} {
		if got, ok := parseNS(f, ourMAC); ok {
			t.Errorf("parseNS(%s) = %+v, want rejected", name, got)
		}
	}
}

func TestICMPv6Checksum(t *testing.T) {
	for _, m := range []ndp.Message{
		&ndp.NeighborSolicitation{TargetAddress: vip6},
		&ndp.NeighborAdvertisement{TargetAddress: vip6, Override: true, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ourMAC}}},
	} {
		b, err := ndp.MarshalMessageChecksum(m, ip6B, allNodes)
		if err != nil {
			t.Fatal(err)
		}
		if got := icmpv6Checksum(ip6B, allNodes, b); got != 0 {
			t.Errorf("checksum of a valid %T: %#04x, want 0", m, got)
		}
		want := uint16(b[2])<<8 | uint16(b[3])
		b[2], b[3] = 0, 0
		if got := icmpv6Checksum(ip6B, allNodes, b); got != want {
			t.Errorf("checksum of %T: %#04x, want %#04x", m, got, want)
		}
	}
	// Odd length.
	if got := icmpv6Checksum(ip6B, allNodes, []byte{1, 2, 3}); got == 0 {
		t.Error("odd-length checksum 0")
	}
}

func TestFilters(t *testing.T) {
	run := func(prog []bpf.RawInstruction, frame []byte) bool {
		t.Helper()
		insts, ok := bpf.Disassemble(prog)
		if !ok {
			t.Fatal("cannot disassemble filter")
		}
		vm, err := bpf.NewVM(insts)
		if err != nil {
			t.Fatal(err)
		}
		n, err := vm.Run(frame)
		if err != nil {
			t.Fatal(err)
		}
		return n > 0
	}
	req := arpRequestFrame(t, theirMAC, ipB, vip4, ethernet.Broadcast)
	reply := slices.Clone(req)
	reply[21] = 2
	ns := nsFrame(t, theirMAC, ip6B, vip6, nil)
	na := ipv6Frame(t, theirMAC, multicastMAC(allNodes), ip6B, allNodes, &ndp.NeighborAdvertisement{TargetAddress: vip6})
	rs := ipv6Frame(t, theirMAC, multicastMAC(allNodes), ip6B, allNodes, &ndp.RouterSolicitation{})
	rarp := slices.Clone(req)
	rarp[21] = 3
	for _, c := range []struct {
		name  string
		prog  []bpf.RawInstruction
		frame []byte
		want  bool
	}{
		{"ARP request", arpFilter, req, true},
		{"ARP reply", arpFilter, reply, true},
		{"ARP operation 3", arpFilter, rarp, false},
		{"NS to ARP filter", arpFilter, ns, false},
		{"NS", ndpFilter, ns, true},
		{"NA", ndpFilter, na, true},
		{"router solicitation", ndpFilter, rs, false},
		{"ARP to NDP filter", ndpFilter, req, false},
	} {
		if got := run(c.prog, c.frame); got != c.want {
			t.Errorf("%s: accepted %t, want %t", c.name, got, c.want)
		}
	}
}

func TestNewResponder(t *testing.T) {
	if _, err := NewResponder(nil); err == nil {
		t.Error("NewResponder(nil) succeeded")
	}
	if _, err := NewResponder(&net.Interface{Name: "lo", Index: 1}); err == nil {
		t.Error("NewResponder without hardware address succeeded")
	}
	ifi := &net.Interface{Name: "eth0", Index: 2, MTU: 1500, HardwareAddr: slices.Clone(ourMAC)}
	if _, err := NewResponder(ifi, WithGratuitous(-1, time.Second)); err == nil {
		t.Error("negative gratuitous count accepted")
	}
	r, err := NewResponder(ifi)
	if err != nil {
		t.Fatal(err)
	}
	ifi.HardwareAddr[0] = 0xff // the Responder keeps its own copy
	if r.garpCount != DefaultGratuitousCount || r.garpInterval != DefaultGratuitousInterval {
		t.Errorf("defaults: %d rounds %v apart", r.garpCount, r.garpInterval)
	}
	if got := r.Interface().HardwareAddr; got.String() != ourMAC.String() {
		t.Errorf("Interface().HardwareAddr = %s, want %s", got, ourMAC)
	}
	wantAddresses(t, r)
	wantHealthy(t, r)
	for _, a := range []netip.Addr{{}, netip.IPv4Unspecified(), netip.IPv6Unspecified(), allNodes, netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("255.255.255.255")} {
		if err := r.Announce(a); err == nil {
			t.Errorf("Announce(%v) succeeded", a)
		}
	}
	if err := r.Withdraw(vip4); err != nil {
		t.Errorf("Withdraw of an address not announced: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestNormalize(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.10":         "192.0.2.10",
		"::ffff:192.0.2.10":  "192.0.2.10",
		"2001:db8::10":       "2001:db8::10",
		"fe80::10%eth0":      "fe80::10",
		"2001:db8::10%eth0":  "2001:db8::10",
		"::ffff:192.0.2.255": "192.0.2.255",
	} {
		got, err := normalize(netip.MustParseAddr(in))
		if err != nil || got.String() != want {
			t.Errorf("normalize(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
}

// FuzzParse checks that the parsers never panic and only accept what they
// should.
func FuzzParse(f *testing.F) {
	f.Add(nsFrame(f, theirMAC, ip6B, vip6, nil))
	f.Add(nsFrame(f, theirMAC, netip.IPv6Unspecified(), vip6, nil))
	f.Add(arpRequestFrame(f, theirMAC, ipB, vip4, ethernet.Broadcast))
	f.Add(naFrame(f, ip6B, netip.Addr{}, vip6, false, theirMAC))
	f.Fuzz(func(t *testing.T, b []byte) {
		if req, ok := parseARPRequest(b, ourMAC); ok && (!req.pkt.TargetIP.Is4() || req.pkt.TargetIP == req.pkt.SenderIP) {
			t.Errorf("bad ARP request accepted: %+v", req.pkt)
		}
		if req, ok := parseNS(b, ourMAC); ok && (!req.target.Is6() || req.target.IsMulticast()) {
			t.Errorf("bad NS accepted: %+v", req)
		}
		if m, ok := parseARPFrame(b, ourMAC); ok {
			if c, ok := arpClaim(m, ourMAC); ok && (!c.Addr.Is4() || bytes.Equal(c.MAC, ourMAC)) {
				t.Errorf("bad ARP claim: %+v", c)
			}
		}
		if m, ok := parseAdvert(b, ourMAC); ok && (!m.target.Is6() || m.target.IsMulticast() || bytes.Equal(m.tlla, ourMAC)) {
			t.Errorf("bad NA accepted: %+v", m)
		}
	})
}
