package dhcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// BOOTP/DHCPv4 wire constants (RFC 951, RFC 2131, RFC 2132).
const (
	opRequest = 1 // BOOTREQUEST
	opReply   = 2 // BOOTREPLY

	htypeEthernet = 1
	hlenEthernet  = 6

	// flagBroadcast is the BOOTP broadcast flag (RFC 1542): servers must
	// broadcast their replies.
	flagBroadcast = 0x8000

	fixedLen   = 236 // op .. file
	cookieLen  = 4
	minMsgLen  = fixedLen + cookieLen
	snameOff   = 44
	snameLen   = 64
	fileOff    = 108
	fileLen    = 128
	optionsOff = minMsgLen

	// maxMsgLen is the largest DHCP message accepted or sent: a 1500-byte
	// IPv4 packet less its 20-byte header and the 8-byte UDP header.
	maxMsgLen = 1500 - 20 - 8
)

var magicCookie = [cookieLen]byte{99, 130, 83, 99}

// Option codes used by this package.
const (
	optPad          = 0
	optSubnetMask   = 1
	optRouter       = 3
	optHostname     = 12
	optRequestedIP  = 50
	optLeaseTime    = 51
	optOverload     = 52
	optMessageType  = 53
	optServerID     = 54
	optParamRequest = 55
	optMessage      = 56
	optMaxMsgSize   = 57
	optRenewalTime  = 58
	optRebindTime   = 59
	optClientID     = 61
	optEnd          = 255
)

// messageType is the value of option 53.
type messageType uint8

// DHCP message types (RFC 2132 section 9.6).
const (
	msgDiscover messageType = 1
	msgOffer    messageType = 2
	msgRequest  messageType = 3
	msgDecline  messageType = 4
	msgAck      messageType = 5
	msgNak      messageType = 6
	msgRelease  messageType = 7
	msgInform   messageType = 8
)

var messageTypeNames = [...]string{"", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"}

// String returns the RFC name of t, e.g. "OFFER".
func (t messageType) String() string {
	if int(t) < len(messageTypeNames) && t != 0 {
		return messageTypeNames[t]
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// message is a decoded or to-be-encoded BOOTP/DHCP message with an
// Ethernet (htype 1, hlen 6) hardware address.
type message struct {
	Op     uint8
	Xid    uint32
	Secs   uint16
	Flags  uint16
	CIAddr netip.Addr // zero value encodes as 0.0.0.0
	YIAddr netip.Addr
	SIAddr netip.Addr
	GIAddr netip.Addr
	CHAddr net.HardwareAddr // 6 bytes

	Type messageType
	// Options holds every option other than pad, end, overload (52) and
	// message type (53), by code. Repeated instances of a code are
	// concatenated in order (RFC 3396), fields in the order options, file,
	// sname (RFC 2131 section 4.1).
	Options map[uint8][]byte
}

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed DHCP message")

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errMalformed, fmt.Sprintf(format, args...))
}

// parseMessage decodes a BOOTP/DHCP message from b (the UDP payload). It
// requires op to be wantOp, htype 1, hlen 6, the magic cookie, a message
// type option (53) of a known type, well-formed options each ended by an
// end option (255) in every field that holds options, and at most
// maxMsgLen bytes. Option overload (52) is honoured: the file and then the
// sname fields are parsed as further options. parseMessage does not retain
// b.
func parseMessage(b []byte, wantOp uint8) (*message, error) {
	if len(b) < minMsgLen {
		return nil, malformed("%d bytes, want at least %d", len(b), minMsgLen)
	}
	if len(b) > maxMsgLen {
		return nil, malformed("%d bytes, want at most %d", len(b), maxMsgLen)
	}
	if b[0] != wantOp {
		return nil, malformed("op %d, want %d", b[0], wantOp)
	}
	if b[1] != htypeEthernet || b[2] != hlenEthernet {
		return nil, malformed("htype %d hlen %d, want Ethernet (1, 6)", b[1], b[2])
	}
	if !bytes.Equal(b[fixedLen:minMsgLen], magicCookie[:]) {
		return nil, malformed("no DHCP magic cookie")
	}
	m := &message{
		Op:      b[0],
		Xid:     binary.BigEndian.Uint32(b[4:8]),
		Secs:    binary.BigEndian.Uint16(b[8:10]),
		Flags:   binary.BigEndian.Uint16(b[10:12]),
		CIAddr:  netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr:  netip.AddrFrom4([4]byte(b[16:20])),
		SIAddr:  netip.AddrFrom4([4]byte(b[20:24])),
		GIAddr:  netip.AddrFrom4([4]byte(b[24:28])),
		CHAddr:  net.HardwareAddr(bytes.Clone(b[28:34])),
		Options: make(map[uint8][]byte),
	}
	var overload byte
	var typ []byte
	parse := func(field string, opts []byte) error {
		for i := 0; ; {
			if i >= len(opts) {
				return malformed("%s: options not ended by an end option", field)
			}
			code := opts[i]
			switch code {
			case optPad:
				i++
				continue
			case optEnd:
				return nil // what follows is padding, ignored
			}
			if i+1 >= len(opts) {
				return malformed("%s: option %d truncated", field, code)
			}
			n := int(opts[i+1])
			if i+2+n > len(opts) {
				return malformed("%s: option %d length %d overruns the field", field, code, n)
			}
			v := opts[i+2 : i+2+n]
			switch code {
			case optOverload:
				if field != "options" {
					return malformed("%s: option overload outside the options field", field)
				}
				if n != 1 || v[0] < 1 || v[0] > 3 {
					return malformed("option overload: bad value % x", v)
				}
				if overload != 0 && overload != v[0] {
					return malformed("option overload given twice")
				}
				overload = v[0]
			case optMessageType:
				typ = append(typ, v...)
			default:
				// Concatenated as RFC 3396 says; the total is bounded by
				// maxMsgLen.
				prev, ok := m.Options[code]
				if !ok {
					prev = []byte{} // present, even if empty
				}
				m.Options[code] = append(prev, v...)
			}
			i += 2 + n
		}
	}
	if err := parse("options", b[optionsOff:]); err != nil {
		return nil, err
	}
	if overload&1 != 0 {
		if err := parse("file", b[fileOff:fileOff+fileLen]); err != nil {
			return nil, err
		}
	}
	if overload&2 != 0 {
		if err := parse("sname", b[snameOff:snameOff+snameLen]); err != nil {
			return nil, err
		}
	}
	if len(typ) != 1 {
		return nil, malformed("message type option: %d bytes, want 1", len(typ))
	}
	m.Type = messageType(typ[0])
	if m.Type < msgDiscover || m.Type > msgInform {
		return nil, malformed("unknown message type %d", typ[0])
	}
	return m, nil
}

// marshal encodes m. Options are written in ascending code order after the
// message type, each value longer than 255 bytes split into several
// instances (RFC 3396). It fails if the result would exceed maxMsgLen or
// CHAddr is not 6 bytes. The message is padded to the BOOTP minimum of 300
// bytes, which some relays and servers still expect.
func (m *message) marshal() ([]byte, error) {
	if len(m.CHAddr) != hlenEthernet {
		return nil, fmt.Errorf("encode DHCP message: chaddr %v is not an Ethernet address", m.CHAddr)
	}
	b := make([]byte, minMsgLen, 576)
	b[0] = m.Op
	b[1] = htypeEthernet
	b[2] = hlenEthernet
	binary.BigEndian.PutUint32(b[4:8], m.Xid)
	binary.BigEndian.PutUint16(b[8:10], m.Secs)
	binary.BigEndian.PutUint16(b[10:12], m.Flags)
	for i, a := range []netip.Addr{m.CIAddr, m.YIAddr, m.SIAddr, m.GIAddr} {
		if a.IsValid() {
			if !a.Is4() {
				return nil, fmt.Errorf("encode DHCP message: %v is not an IPv4 address", a)
			}
			a4 := a.As4()
			copy(b[12+4*i:], a4[:])
		}
	}
	copy(b[28:34], m.CHAddr)
	copy(b[fixedLen:], magicCookie[:])
	b = append(b, optMessageType, 1, byte(m.Type))
	for code := 1; code < optEnd; code++ {
		v, ok := m.Options[uint8(code)]
		if !ok || code == optMessageType || code == optOverload {
			continue
		}
		if len(v) == 0 {
			b = append(b, byte(code), 0)
			continue
		}
		for len(v) > 0 {
			n := min(len(v), 255)
			b = append(b, byte(code), byte(n))
			b = append(b, v[:n]...)
			v = v[n:]
		}
	}
	b = append(b, optEnd)
	for len(b) < 300 {
		b = append(b, optPad)
	}
	if len(b) > maxMsgLen {
		return nil, fmt.Errorf("encode DHCP message: %d bytes, more than %d", len(b), maxMsgLen)
	}
	return b, nil
}

// addrOption returns the IPv4 address held by option code, if the option
// is present and exactly 4 bytes long.
func (m *message) addrOption(code uint8) (netip.Addr, bool) {
	v, ok := m.Options[code]
	if !ok || len(v) != 4 {
		return netip.Addr{}, false
	}
	return netip.AddrFrom4([4]byte(v)), true
}

// uint32Option returns the value of a 4-byte option.
func (m *message) uint32Option(code uint8) (uint32, bool) {
	v, ok := m.Options[code]
	if !ok || len(v) != 4 {
		return 0, false
	}
	return binary.BigEndian.Uint32(v), true
}

// maxServerMessage bounds the server message (option 56) kept in errors.
const maxServerMessage = 128

// sanitizeMessage makes option 56's text safe to log or put in an Event:
// printable ASCII only (other bytes become '?'), at most maxServerMessage
// bytes.
func sanitizeMessage(b []byte) string {
	if len(b) > maxServerMessage {
		b = b[:maxServerMessage]
	}
	out := make([]byte, len(b))
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			c = '?'
		}
		out[i] = c
	}
	return string(bytes.TrimRight(out, "? "))
}
