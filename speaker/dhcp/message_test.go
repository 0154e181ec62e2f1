package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/net/bpf"
)

var cmpAddr = cmp.Comparer(func(a, b netip.Addr) bool { return a == b })
var cmpPrefix = cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })

var (
	testMAC = net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
	srvAddr = netip.MustParseAddr("192.0.2.1")
	vip     = netip.MustParseAddr("192.0.2.100")
)

// rawReply builds a BOOTREPLY by hand: fixed fields, cookie, then opts
// verbatim (the caller adds the end option).
func rawReply(opts ...byte) []byte {
	b := make([]byte, minMsgLen)
	b[0], b[1], b[2] = opReply, 1, 6
	binary.BigEndian.PutUint32(b[4:], 0xdeadbeef)
	copy(b[16:], vip.AsSlice())
	copy(b[28:], testMAC)
	copy(b[fixedLen:], magicCookie[:])
	return append(b, opts...)
}

func TestParseMessage(t *testing.T) {
	overloaded := rawReply(optOverload, 1, 3, optMessageType, 1, byte(msgAck), optClientID, 2, 'a', 'b', optEnd)
	file := overloaded[fileOff : fileOff+fileLen]
	copy(file, []byte{optClientID, 1, 'c', optPad, optLeaseTime, 4, 0, 0, 0, 60, optEnd})
	sname := overloaded[snameOff : snameOff+snameLen]
	copy(sname, []byte{optServerID, 4, 192, 0, 2, 1, optEnd})

	tests := []struct {
		name    string
		in      []byte
		want    *message
		wantErr string
	}{
		{
			name: "offer",
			in:   rawReply(optMessageType, 1, byte(msgOffer), optServerID, 4, 192, 0, 2, 1, optPad, optEnd, 0xde, 0xad),
			want: &message{Op: opReply, Xid: 0xdeadbeef, CIAddr: netip.IPv4Unspecified(), YIAddr: vip,
				SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(), CHAddr: testMAC, Type: msgOffer,
				Options: map[uint8][]byte{optServerID: {192, 0, 2, 1}}},
		},
		{
			name: "overload and split options concatenated",
			in:   overloaded,
			want: &message{Op: opReply, Xid: 0xdeadbeef, CIAddr: netip.IPv4Unspecified(), YIAddr: vip,
				SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(), CHAddr: testMAC, Type: msgAck,
				Options: map[uint8][]byte{optClientID: []byte("abc"), optLeaseTime: {0, 0, 0, 60}, optServerID: {192, 0, 2, 1}}},
		},
		{name: "short", in: rawReply()[:minMsgLen-1], wantErr: "at least"},
		{name: "long", in: rawReply(append([]byte{optMessageType, 1, 2}, make([]byte, maxMsgLen)...)...), wantErr: "at most"},
		{name: "request", in: func() []byte { b := rawReply(optMessageType, 1, 2, optEnd); b[0] = opRequest; return b }(), wantErr: "op 1"},
		{name: "htype", in: func() []byte { b := rawReply(optMessageType, 1, 2, optEnd); b[1] = 6; return b }(), wantErr: "htype"},
		{name: "hlen", in: func() []byte { b := rawReply(optMessageType, 1, 2, optEnd); b[2] = 16; return b }(), wantErr: "hlen"},
		{name: "cookie", in: func() []byte { b := rawReply(optMessageType, 1, 2, optEnd); b[fixedLen] = 0; return b }(), wantErr: "cookie"},
		{name: "no end", in: rawReply(optMessageType, 1, 2), wantErr: "not ended"},
		{name: "truncated option", in: rawReply(optMessageType, 1, 2, optRouter), wantErr: "truncated"},
		{name: "overrun", in: rawReply(optMessageType, 1, 2, optRouter, 8, 1, 2, 3, 4), wantErr: "overruns"},
		{name: "no type", in: rawReply(optEnd), wantErr: "message type"},
		{name: "type twice", in: rawReply(optMessageType, 1, 2, optMessageType, 1, 2, optEnd), wantErr: "message type"},
		{name: "unknown type", in: rawReply(optMessageType, 1, 9, optEnd), wantErr: "unknown message type"},
		{name: "bad overload", in: rawReply(optOverload, 1, 4, optMessageType, 1, 2, optEnd), wantErr: "overload"},
		{name: "overload without end in file", in: rawReply(optOverload, 1, 1, optMessageType, 1, 2, optEnd), wantErr: "file: options not ended"},
		{
			name: "overload in file",
			in: func() []byte {
				b := rawReply(optOverload, 1, 1, optMessageType, 1, 2, optEnd)
				copy(b[fileOff:], []byte{optOverload, 1, 2, optEnd})
				return b
			}(),
			wantErr: "outside the options field",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMessage(tt.in, opReply)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, errMalformed) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpAddr); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	long := bytes.Repeat([]byte{'x'}, 300) // split in two instances
	m := &message{Op: opRequest, Xid: 42, Secs: 3, Flags: flagBroadcast, CIAddr: netip.IPv4Unspecified(),
		YIAddr: netip.IPv4Unspecified(), SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(),
		CHAddr: testMAC, Type: msgRequest,
		Options: map[uint8][]byte{optClientID: {0, 'a'}, optRequestedIP: vip.AsSlice(), 200: long, 201: {}}}
	b, err := m.marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 300 {
		t.Errorf("%d bytes, want the BOOTP minimum of 300", len(b))
	}
	got, err := parseMessage(b, opRequest)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(m, got, cmpAddr); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	m.CHAddr = net.HardwareAddr{1, 2, 3}
	if _, err := m.marshal(); err == nil {
		t.Error("marshal with a 3-byte chaddr: no error")
	}
}

func TestLeaseFrom(t *testing.T) {
	base := func(opts map[uint8][]byte) *message {
		m := &message{Op: opReply, YIAddr: vip, CHAddr: testMAC, Type: msgAck, Options: map[uint8][]byte{
			optServerID: srvAddr.AsSlice(), optLeaseTime: {0, 0, 0, 100},
		}}
		for k, v := range opts {
			if v == nil {
				delete(m.Options, k)
			} else {
				m.Options[k] = v
			}
		}
		return m
	}
	def := Lease{Addr: vip, Server: srvAddr, ServerMAC: testMAC, Duration: 100 * time.Second, Renew: 50 * time.Second, Rebind: 87500 * time.Millisecond}
	tests := []struct {
		name    string
		m       *message
		ack     bool
		want    Lease
		wantErr string
	}{
		{name: "defaults", m: base(nil), ack: true, want: def},
		{
			name: "all options",
			m: base(map[uint8][]byte{optSubnetMask: {255, 255, 255, 0}, optRouter: {192, 0, 2, 254, 192, 0, 2, 253},
				optRenewalTime: {0, 0, 0, 10}, optRebindTime: {0, 0, 0, 20}}),
			ack: true,
			want: Lease{Addr: vip, Mask: netip.MustParsePrefix("192.0.2.0/24"), Router: netip.MustParseAddr("192.0.2.254"),
				Server: srvAddr, ServerMAC: testMAC, Duration: 100 * time.Second, Renew: 10 * time.Second, Rebind: 20 * time.Second},
		},
		{name: "T1 after T2: defaults", m: base(map[uint8][]byte{optRenewalTime: {0, 0, 0, 30}, optRebindTime: {0, 0, 0, 20}}), ack: true, want: def},
		{name: "T2 after lease: defaults", m: base(map[uint8][]byte{optRebindTime: {0, 0, 1, 0}}), ack: true, want: def},
		{name: "bad option lengths ignored", m: base(map[uint8][]byte{optSubnetMask: {255}, optRouter: {1, 2, 3}, optRenewalTime: {1}}), ack: true, want: def},
		{name: "non-contiguous mask ignored", m: base(map[uint8][]byte{optSubnetMask: {255, 0, 255, 0}}), ack: true, want: def},
		{
			name: "infinite",
			m:    base(map[uint8][]byte{optLeaseTime: {0xff, 0xff, 0xff, 0xff}}),
			ack:  true,
			want: Lease{Addr: vip, Server: srvAddr, ServerMAC: testMAC, Duration: Infinite, Renew: Infinite, Rebind: Infinite},
		},
		{name: "offer without lease time", m: base(map[uint8][]byte{optLeaseTime: nil}), want: Lease{Addr: vip, Server: srvAddr, ServerMAC: testMAC}},
		{name: "ack without lease time", m: base(map[uint8][]byte{optLeaseTime: nil}), ack: true, wantErr: "lease time"},
		{name: "no server id", m: base(map[uint8][]byte{optServerID: nil}), ack: true, wantErr: "server identifier"},
		{name: "broadcast server id", m: base(map[uint8][]byte{optServerID: {255, 255, 255, 255}}), ack: true, wantErr: "server identifier"},
		{name: "subnet broadcast", m: func() *message {
			m := base(map[uint8][]byte{optSubnetMask: {255, 255, 255, 0}})
			m.YIAddr = netip.MustParseAddr("192.0.2.255")
			return m
		}(), ack: true, wantErr: "broadcast address"},
	}
	for _, bad := range []string{"0.0.0.0", "255.255.255.255", "224.0.0.1", "127.0.0.1", "169.254.1.1", "240.0.0.1"} {
		m := base(nil)
		m.YIAddr = netip.MustParseAddr(bad)
		tests = append(tests, struct {
			name    string
			m       *message
			ack     bool
			want    Lease
			wantErr string
		}{name: "yiaddr " + bad, m: m, ack: true, wantErr: "offers"})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := leaseFrom(reply{msg: tt.m, mac: testMAC}, tt.ack)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpAddr, cmpPrefix); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSanitizeMessage(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"address in use\x00", "address in use"},
		{"a\x1b[31mb\n", "a?[31mb"},
		{"\xff\xfe", ""},
		{strings.Repeat("z", 500), strings.Repeat("z", maxServerMessage)},
	} {
		if got := sanitizeMessage([]byte(tt.in)); got != tt.want {
			t.Errorf("sanitizeMessage(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestHardwareAddr(t *testing.T) {
	a := HardwareAddr([]byte("svc-a"))
	if len(a) != 6 || a[0]&0x02 == 0 || a[0]&0x01 != 0 {
		t.Errorf("HardwareAddr = %v, want a locally administered unicast MAC", a)
	}
	if b := HardwareAddr([]byte("svc-a")); !bytes.Equal(a, b) {
		t.Errorf("not stable: %v, %v", a, b)
	}
	if b := HardwareAddr([]byte("svc-b")); bytes.Equal(a, b) {
		t.Errorf("same MAC for two clients: %v", a)
	}
}

func TestValidate(t *testing.T) {
	for _, tt := range []struct {
		name string
		r    Request
		ok   bool
	}{
		{"ok", Request{ClientID: []byte{0, 1}, Hostname: "svc-1", Requested: vip}, true},
		{"no client id", Request{}, false},
		{"long client id", Request{ClientID: make([]byte, 256)}, false},
		{"hostname dot", Request{ClientID: []byte{1}, Hostname: "a.b"}, false},
		{"hostname hyphen", Request{ClientID: []byte{1}, Hostname: "-a"}, false},
		{"hostname long", Request{ClientID: []byte{1}, Hostname: strings.Repeat("a", 64)}, false},
		{"requested multicast", Request{ClientID: []byte{1}, Requested: netip.MustParseAddr("224.0.0.1")}, false},
		{"requested IPv6", Request{ClientID: []byte{1}, Requested: netip.MustParseAddr("2001:db8::1")}, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.r.validate(); (err == nil) != tt.ok {
				t.Errorf("validate = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// reverse turns a packet built by buildPacket into one from the server:
// swapped ports, header checksum kept valid.
func reverse(pkt []byte) []byte {
	b := bytes.Clone(pkt)
	b[20], b[21], b[22], b[23] = 0, portServer, 0, portClient
	return b
}

func TestPacket(t *testing.T) {
	payload := rawReply(optMessageType, 1, 2, optEnd)
	src, dst := netip.MustParseAddr("192.0.2.100"), srvAddr
	pkt := buildPacket(src, dst, payload)
	// Both checksums verify (the UDP one over the pseudo-header).
	if c := checksum(0, pkt[:20]); c != 0 {
		t.Errorf("IPv4 header checksum verifies to %#x", c)
	}
	pseudo := append(append(src.AsSlice(), dst.AsSlice()...), 0, protoUDP, pkt[24], pkt[25])
	if c := checksum(0, append(pseudo, pkt[20:]...)); c != 0 {
		t.Errorf("UDP checksum verifies to %#x", c)
	}
	in := reverse(pkt)
	got, from, err := udpPayload(append(in, 0, 0, 0)) // Ethernet padding
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) || from != src {
		t.Errorf("udpPayload: from %v, %d bytes", from, len(got))
	}
	for name, mutate := range map[string]func([]byte) []byte{
		"short":        func(b []byte) []byte { return b[:minPacketLen-1] },
		"long":         func(b []byte) []byte { return append(b, make([]byte, maxPacketLen)...) },
		"version":      func(b []byte) []byte { b[0] = 0x65; return b },
		"checksum":     func(b []byte) []byte { b[8]--; return b },
		"ports":        func(b []byte) []byte { b[23] = 69; return b },
		"udp length":   func(b []byte) []byte { b[24] = 0xff; return b },
		"total length": func(b []byte) []byte { b[2] = 0xff; return b },
	} {
		if _, _, err := udpPayload(mutate(bytes.Clone(in))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestFilter(t *testing.T) {
	prog, err := filter()
	if err != nil {
		t.Fatal(err)
	}
	insns := make([]bpf.Instruction, len(prog))
	for i, r := range prog {
		insns[i] = r.Disassemble()
	}
	vm, err := bpf.NewVM(insns)
	if err != nil {
		t.Fatal(err)
	}
	reply := reverse(buildPacket(srvAddr, broadcastIPv4, rawReply(optMessageType, 1, 2, optEnd)))
	for _, tt := range []struct {
		name   string
		pkt    []byte
		accept bool
	}{
		{"reply", reply, true},
		{"request", buildPacket(netip.IPv4Unspecified(), broadcastIPv4, make([]byte, 300)), false},
		{"tcp", func() []byte { b := bytes.Clone(reply); b[9] = 6; return b }(), false},
		{"fragment", func() []byte { b := bytes.Clone(reply); b[6] = 0x20; return b }(), false},
		{"jumbo", append(bytes.Clone(reply), make([]byte, 1500)...), false},
	} {
		n, err := vm.Run(tt.pkt)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if (n > 0) != tt.accept {
			t.Errorf("%s: filter returned %d, want accept %v", tt.name, n, tt.accept)
		}
	}
}

// FuzzParse: no input makes the decoders panic; what parseMessage accepts
// is bounded and survives a marshal/parse round trip.
func FuzzParse(f *testing.F) {
	f.Add(rawReply(optMessageType, 1, byte(msgOffer), optServerID, 4, 192, 0, 2, 1, optLeaseTime, 4, 0, 0, 0, 8, optEnd))
	f.Add(rawReply(optOverload, 1, 3, optMessageType, 1, byte(msgAck), optEnd))
	f.Add(rawReply(optMessageType, 1, byte(msgNak), optMessage, 3, 'n', 'o', 0, optEnd))
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, _, err := udpPayload(b); err == nil && len(b) > maxPacketLen {
			t.Fatalf("udpPayload accepted %d bytes", len(b))
		}
		m, err := parseMessage(b, opReply)
		if err != nil {
			return
		}
		if len(b) > maxMsgLen || len(m.CHAddr) != 6 || m.Type < msgDiscover || m.Type > msgInform {
			t.Fatalf("accepted %d bytes, chaddr %v, type %v", len(b), m.CHAddr, m.Type)
		}
		_, _ = leaseFrom(reply{msg: m}, true)
		_ = sanitizeMessage(m.Options[optMessage])
		enc, err := m.marshal()
		if err != nil {
			return // options split in more instances may not fit
		}
		m2, err := parseMessage(enc, opReply)
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		if diff := cmp.Diff(m, m2, cmpAddr); diff != "" {
			t.Fatalf("round trip (-want +got):\n%s", diff)
		}
	})
}
