package layer2

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

// arpFrame returns an Ethernet frame from ethSrc to ethDst carrying an ARP
// packet.
func arpFrame(t testing.TB, op arp.Operation, sha net.HardwareAddr, spa netip.Addr, tha net.HardwareAddr, tpa netip.Addr, ethSrc, ethDst net.HardwareAddr) []byte {
	t.Helper()
	p, err := arp.NewPacket(op, sha, spa, tha, tpa)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := (&ethernet.Frame{Destination: ethDst, Source: ethSrc, EtherType: ethernet.EtherTypeARP, Payload: pb}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return fb
}

// equateAddrs lets cmp compare netip.Addr values.
var equateAddrs = cmpopts.EquateComparable(netip.Addr{})

// claimPtr returns a pointer to a Claim, for the tables.
func claimPtr(addr netip.Addr, mac net.HardwareAddr, kind ClaimKind) *Claim {
	return &Claim{Addr: addr, MAC: mac, Kind: kind}
}

func TestARPClaim(t *testing.T) {
	zero := make(net.HardwareAddr, 6)
	unspec := netip.IPv4Unspecified()
	greq := arpFrame(t, arp.OperationRequest, theirMAC, vip4, zero, vip4, theirMAC, ethernet.Broadcast)
	mutate := func(f func(b []byte)) []byte { b := slices.Clone(greq); f(b); return b }
	for _, c := range []struct {
		name       string
		frame      []byte
		want       *Claim // nil: no claim
		answerable bool
	}{
		{"gratuitous request", greq, claimPtr(vip4, theirMAC, ClaimARPRequest), false},
		{"gratuitous reply", arpFrame(t, arp.OperationReply, theirMAC, vip4, theirMAC, vip4, theirMAC, ethernet.Broadcast), claimPtr(vip4, theirMAC, ClaimARPReply), false},
		{"request from the address", arpFrame(t, arp.OperationRequest, theirMAC, vip4, zero, ipA, theirMAC, ethernet.Broadcast), claimPtr(vip4, theirMAC, ClaimARPRequest), true},
		{"reply to our probe", arpFrame(t, arp.OperationReply, theirMAC, vip4, ourMAC, unspec, theirMAC, ourMAC), claimPtr(vip4, theirMAC, ClaimARPReply), false},
		{"probe", arpFrame(t, arp.OperationRequest, theirMAC, unspec, zero, vip4, theirMAC, ethernet.Broadcast), claimPtr(vip4, theirMAC, ClaimARPProbe), true},
		{"sender hardware address differs from source", arpFrame(t, arp.OperationReply, staleMAC, vip4, ourMAC, ipA, theirMAC, ourMAC), claimPtr(vip4, staleMAC, ClaimARPReply), false},
		{"reply from 0.0.0.0", arpFrame(t, arp.OperationReply, theirMAC, unspec, ourMAC, vip4, theirMAC, ourMAC), nil, false},
		{"sender hardware address is ours", arpFrame(t, arp.OperationRequest, ourMAC, vip4, zero, vip4, theirMAC, ethernet.Broadcast), nil, false},
		{"sender IP broadcast", arpFrame(t, arp.OperationReply, theirMAC, netip.MustParseAddr("255.255.255.255"), ourMAC, ipA, theirMAC, ourMAC), nil, false},
		{"sender IP multicast", arpFrame(t, arp.OperationReply, theirMAC, netip.MustParseAddr("224.0.0.1"), ourMAC, ipA, theirMAC, ourMAC), nil, false},
		{"probe of 0.0.0.0", arpFrame(t, arp.OperationRequest, theirMAC, unspec, zero, unspec, theirMAC, ethernet.Broadcast), nil, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, ok := parseARPFrame(c.frame, ourMAC)
			if !ok {
				t.Fatal("parseARPFrame rejected the frame")
			}
			if got := m.answerable(); got != c.answerable {
				t.Errorf("answerable() = %t, want %t", got, c.answerable)
			}
			got, ok := arpClaim(m, ourMAC)
			var gotp *Claim
			if ok {
				gotp = &got
			}
			if diff := cmp.Diff(c.want, gotp, equateAddrs); diff != "" {
				t.Errorf("arpClaim (-want +got):\n%s", diff)
			}
		})
	}

	for name, frame := range map[string][]byte{
		"own source":           arpFrame(t, arp.OperationReply, theirMAC, vip4, ourMAC, ipA, ourMAC, ethernet.Broadcast),
		"to another host":      arpFrame(t, arp.OperationReply, theirMAC, vip4, staleMAC, ipB, theirMAC, staleMAC),
		"operation 3":          mutate(func(b []byte) { b[21] = 3 }),
		"hardware type 6":      mutate(func(b []byte) { b[15] = 6 }),
		"hardware length 8":    mutate(func(b []byte) { b[18] = 8 }),
		"protocol length 16":   mutate(func(b []byte) { b[19] = 16 }),
		"protocol not IPv4":    mutate(func(b []byte) { b[16], b[17] = 0x86, 0xdd }),
		"not ARP":              mutate(func(b []byte) { b[12], b[13] = 0x86, 0xdd }),
		"truncated":            greq[:30],
		"Ethernet header only": greq[:14],
		"empty":                nil,
	} {
		t.Run("reject "+name, func(t *testing.T) {
			if m, ok := parseARPFrame(frame, ourMAC); ok {
				t.Errorf("parseARPFrame accepted %+v", m.pkt)
			}
		})
	}
}

// naFrame returns a frame carrying a Neighbor Advertisement of target from
// theirMAC/src to dst (all nodes if invalid), with the target link-layer
// address option tlla unless nil.
func naFrame(t testing.TB, src, dst, target netip.Addr, solicited bool, tlla net.HardwareAddr) []byte {
	t.Helper()
	if !dst.IsValid() {
		dst = allNodes
	}
	ethDst := ourMAC
	if dst.IsMulticast() {
		ethDst = multicastMAC(dst)
	}
	na := &ndp.NeighborAdvertisement{TargetAddress: target, Solicited: solicited, Override: true}
	if tlla != nil {
		na.Options = []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: tlla}}
	}
	return ipv6Frame(t, theirMAC, ethDst, src, dst, na)
}

func TestParseAdvert(t *testing.T) {
	good := naFrame(t, ip6B, netip.Addr{}, vip6, false, theirMAC)
	// mutate changes a copy of good, then sets its checksum right, so that
	// the change itself is what the parser meets.
	mutate := func(f func(b []byte)) []byte {
		b := slices.Clone(good)
		f(b)
		if len(b) > icmpOffset+4 {
			b[icmpOffset+2], b[icmpOffset+3] = 0, 0
			sum := icmpv6Checksum(ip6B, allNodes, b[icmpOffset:])
			b[icmpOffset+2], b[icmpOffset+3] = byte(sum>>8), byte(sum)
		}
		return b
	}
	for _, c := range []struct {
		name  string
		frame []byte
		want  *Claim // nil: rejected
	}{
		{"unsolicited to all nodes", good, claimPtr(vip6, theirMAC, ClaimNA)},
		{"from link-local", naFrame(t, netip.MustParseAddr("fe80::b"), netip.Addr{}, vip6, false, theirMAC), claimPtr(vip6, theirMAC, ClaimNA)},
		{"target link-layer address differs from source", naFrame(t, ip6B, netip.Addr{}, vip6, false, staleMAC), claimPtr(vip6, staleMAC, ClaimNA)},
		{"no target link-layer address", naFrame(t, ip6B, netip.Addr{}, vip6, false, nil), claimPtr(vip6, theirMAC, ClaimNA)},
		{"solicited, unicast to us", naFrame(t, ip6B, ip6A, vip6, true, theirMAC), claimPtr(vip6, theirMAC, ClaimNA)},
		{"solicited to all nodes", naFrame(t, ip6B, netip.Addr{}, vip6, true, theirMAC), nil},
		{"target link-layer address is ours", naFrame(t, ip6B, netip.Addr{}, vip6, false, ourMAC), nil},
		{"own source", ipv6Frame(t, ourMAC, multicastMAC(allNodes), ip6A, allNodes, &ndp.NeighborAdvertisement{TargetAddress: vip6}), nil},
		{"from ::", naFrame(t, netip.IPv6Unspecified(), netip.Addr{}, vip6, false, theirMAC), nil},
		{"from multicast", naFrame(t, allNodes, netip.Addr{}, vip6, false, theirMAC), nil},
		{"multicast target", naFrame(t, ip6B, netip.Addr{}, allNodes, false, theirMAC), nil},
		{"unspecified target", mutate(func(b []byte) { clear(b[icmpOffset+8 : icmpOffset+24]) }), nil},
		{"IPv4-mapped target", mutate(func(b []byte) {
			copy(b[icmpOffset+8:icmpOffset+24], netip.MustParseAddr("::ffff:192.0.2.10").AsSlice())
		}), nil},
		{"to another host", ipv6Frame(t, theirMAC, staleMAC, ip6B, ip6A, &ndp.NeighborAdvertisement{TargetAddress: vip6}), nil},
		{"hop limit 254", mutate(func(b []byte) { b[ethHeaderLen+7] = 254 }), nil},
		{"bad checksum", func() []byte { b := slices.Clone(good); b[icmpOffset+3] ^= 1; return b }(), nil},
		{"mutate keeps it valid", mutate(func([]byte) {}), claimPtr(vip6, theirMAC, ClaimNA)},
		{"code 1", mutate(func(b []byte) { b[icmpOffset+1] = 1 }), nil},
		{"next header 0", mutate(func(b []byte) { b[ethHeaderLen+6] = 0 }), nil},
		{"IP version 4", mutate(func(b []byte) { b[ethHeaderLen] = 4 << 4 }), nil},
		{"payload length too long", mutate(func(b []byte) { b[ethHeaderLen+5] += 8 }), nil},
		{"payload length 16", func() []byte {
			b := slices.Clone(good[:icmpOffset+16])
			b[ethHeaderLen+4], b[ethHeaderLen+5] = 0, 16
			b[icmpOffset+2], b[icmpOffset+3] = 0, 0
			sum := icmpv6Checksum(ip6B, allNodes, b[icmpOffset:])
			b[icmpOffset+2], b[icmpOffset+3] = byte(sum>>8), byte(sum)
			return b
		}(), nil},
		{"option truncated", mutate(func(b []byte) { b[icmpOffset+25] = 2 }), nil},
		{"option length 0", mutate(func(b []byte) { b[icmpOffset+25] = 0 }), nil},
		{"truncated", good[:len(good)-1], nil},
		{"short", good[:icmpOffset+4], nil},
		{"empty", nil, nil},
		{"solicitation", nsFrame(t, theirMAC, ip6B, vip6, nil), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got *Claim
			if m, ok := parseAdvert(c.frame, ourMAC); ok {
				cl := naClaim(m)
				got = &cl
			}
			if diff := cmp.Diff(c.want, got, equateAddrs); diff != "" {
				t.Errorf("parseAdvert (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNSClaim(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		want  *Claim // nil: no claim
	}{
		{"from the address", nsFrame(t, theirMAC, vip6, ip6A, nil), claimPtr(vip6, theirMAC, ClaimNS)},
		{"from the address, no source link-layer address", ipv6Frame(t, theirMAC, ourMAC, vip6, ip6A, &ndp.NeighborSolicitation{TargetAddress: ip6A}), claimPtr(vip6, theirMAC, ClaimNS)},
		{"source link-layer address differs from source", ipv6Frame(t, theirMAC, ourMAC, vip6, ip6A, &ndp.NeighborSolicitation{
			TargetAddress: ip6A, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: staleMAC}},
		}), claimPtr(vip6, staleMAC, ClaimNS)},
		{"DAD", nsFrame(t, theirMAC, netip.IPv6Unspecified(), vip6, nil), claimPtr(vip6, theirMAC, ClaimDAD)},
		{"source link-layer address is ours", ipv6Frame(t, theirMAC, ourMAC, vip6, ip6A, &ndp.NeighborSolicitation{
			TargetAddress: ip6A, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ourMAC}},
		}), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m, ok := parseNSFrame(c.frame, ourMAC)
			if !ok {
				t.Fatal("parseNSFrame rejected the frame")
			}
			var gotp *Claim
			if got, ok := nsClaim(m, ourMAC); ok {
				gotp = &got
			}
			if diff := cmp.Diff(c.want, gotp, equateAddrs); diff != "" {
				t.Errorf("nsClaim (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDADFrame(t *testing.T) {
	frame, err := dadFrame(theirMAC, vip6)
	if err != nil {
		t.Fatal(err)
	}
	// What we send is what the parser accepts from another host as DAD.
	m, ok := parseNSFrame(frame, ourMAC)
	if !ok {
		t.Fatalf("parseNSFrame rejected our DAD probe %x", frame)
	}
	snm, _ := ndp.SolicitedNodeMulticast(vip6)
	want := nsMsg{nsRequest: nsRequest{src: netip.IPv6Unspecified(), dst: snm, target: vip6}, ethSrc: theirMAC}
	if diff := cmp.Diff(want, m, cmp.AllowUnexported(nsMsg{}, nsRequest{}), equateAddrs); diff != "" {
		t.Errorf("DAD probe (-want +got):\n%s", diff)
	}
	if got := net.HardwareAddr(frame[0:6]); got.String() != multicastMAC(snm).String() {
		t.Errorf("DAD probe sent to %s, want %s", got, multicastMAC(snm))
	}
	if _, ok := parseNSFrame(frame, theirMAC); ok {
		t.Error("our own DAD probe accepted")
	}
}

func TestClaimQueue(t *testing.T) {
	t0 := time.Now()
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	q := newClaimQueue(func(Claim) {})
	// One address: queued at 0, 100 and 250 ms; coalesced at 50 and 99.
	for _, c := range []struct {
		ms   int
		want bool
	}{{0, true}, {50, false}, {99, false}, {100, true}, {250, true}} {
		if got, _ := q.push(Claim{Addr: vip4, At: at(c.ms)}); got != c.want {
			t.Errorf("push at %d ms: queued %t, want %t", c.ms, got, c.want)
		}
	}
	// Another address is not coalesced with it.
	if got, _ := q.push(Claim{Addr: vip6, At: at(260)}); !got {
		t.Error("claim of another address coalesced")
	}
	if diff := cmp.Diff(ClaimStats{Coalesced: 2}, ClaimStats{Coalesced: q.coalesced.Load(), Dropped: q.dropped.Load()}); diff != "" {
		t.Errorf("stats (-want +got):\n%s", diff)
	}
	// Full: dropped, counted, logged once.
	logs := 0
	for i := range claimQueueLen + 10 {
		_, logDrop := q.push(Claim{Addr: netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), At: at(1000)})
		if logDrop {
			logs++
		}
	}
	if got, want := q.dropped.Load(), uint64(10+4); got != want { // 4 claims were queued before
		t.Errorf("dropped %d, want %d", got, want)
	}
	if logs != 1 {
		t.Errorf("drops logged %d times, want 1", logs)
	}
	// The table is swept: stale entries go once it has doubled.
	for len(q.ch) > 0 {
		<-q.ch
	}
	for i := range 10 * claimSweepMin {
		q.push(Claim{Addr: netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), At: at(2000 + 200*i)})
		for len(q.ch) > 0 {
			<-q.ch
		}
	}
	if n := q.tableLen(); n > claimSweepMin {
		t.Errorf("coalescing table holds %d entries, want at most %d", n, claimSweepMin)
	}
}
