package bfd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// State is a BFD session state; the values are those of the wire (RFC 5880
// §4.1).
type State uint8

// The session states.
const (
	AdminDown State = 0
	Down      State = 1
	Init      State = 2
	Up        State = 3
)

// String returns the RFC name of the state.
func (s State) String() string {
	switch s {
	case AdminDown:
		return "AdminDown"
	case Down:
		return "Down"
	case Init:
		return "Init"
	case Up:
		return "Up"
	}
	return fmt.Sprintf("State(%d)", uint8(s))
}

// Diag is a BFD diagnostic code (RFC 5880 §4.1): why a system last left Up.
type Diag uint8

// The diagnostic codes of RFC 5880 §4.1.
const (
	DiagNone                Diag = 0
	DiagDetectionExpired    Diag = 1
	DiagEchoFailed          Diag = 2
	DiagNeighborDown        Diag = 3
	DiagForwardingReset     Diag = 4
	DiagPathDown            Diag = 5
	DiagConcatenatedPath    Diag = 6
	DiagAdminDown           Diag = 7
	DiagReverseConcatenated Diag = 8
)

var diagNames = [...]string{
	DiagNone:                "none",
	DiagDetectionExpired:    "control detection time expired",
	DiagEchoFailed:          "echo function failed",
	DiagNeighborDown:        "neighbor signaled session down",
	DiagForwardingReset:     "forwarding plane reset",
	DiagPathDown:            "path down",
	DiagConcatenatedPath:    "concatenated path down",
	DiagAdminDown:           "administratively down",
	DiagReverseConcatenated: "reverse concatenated path down",
}

// String returns the diagnostic in plain words.
func (d Diag) String() string {
	if int(d) < len(diagNames) {
		return diagNames[d]
	}
	return fmt.Sprintf("diagnostic %d", uint8(d))
}

// Wire sizes and bits of the mandatory section of a Control packet.
const (
	headerLen     = 24
	authHeaderMin = 2 // Auth Type and Auth Len of an authentication section
	version       = 1

	bitPoll      = 0x20
	bitFinal     = 0x10
	bitCPI       = 0x08
	bitAuth      = 0x04
	bitDemand    = 0x02
	bitMultipont = 0x01
)

// Reception errors of RFC 5880 §6.8.6, in the order the checks are made.
var (
	errShort       = errors.New("packet shorter than a BFD Control packet")
	errVersion     = errors.New("unsupported BFD version")
	errLength      = errors.New("bad length field")
	errDetectMult  = errors.New("detect multiplier is zero")
	errMultipoint  = errors.New("multipoint bit set")
	errMyDiscr     = errors.New("my discriminator is zero")
	errYourDiscr   = errors.New("your discriminator is zero while the state is neither Down nor AdminDown")
	errAuthBit     = errors.New("authentication present (not supported)")
	errUnknownPeer = errors.New("no session for this packet")
)

// packet is a decoded BFD Control packet (RFC 5880 §4.1) without its
// authentication section.
type packet struct {
	Version                 uint8
	Diag                    Diag
	State                   State
	Poll                    bool
	Final                   bool
	ControlPlaneIndependent bool
	AuthPresent             bool
	Demand                  bool
	Multipoint              bool
	DetectMult              uint8
	Length                  uint8
	MyDiscr                 uint32
	YourDiscr               uint32
	DesiredMinTx            time.Duration
	RequiredMinRx           time.Duration
	RequiredMinEchoRx       time.Duration
}

// appendPacket appends the wire form of p to b. Version and Length are set
// by it (1 and 24); authentication is never sent.
func appendPacket(b []byte, p *packet) []byte {
	flags := byte(p.State&3) << 6
	for _, f := range []struct {
		on  bool
		bit byte
	}{
		{p.Poll, bitPoll}, {p.Final, bitFinal}, {p.ControlPlaneIndependent, bitCPI},
		{p.Demand, bitDemand}, {p.Multipoint, bitMultipont},
	} {
		if f.on {
			flags |= f.bit
		}
	}
	b = append(b, version<<5|byte(p.Diag&0x1f), flags, p.DetectMult, headerLen)
	b = binary.BigEndian.AppendUint32(b, p.MyDiscr)
	b = binary.BigEndian.AppendUint32(b, p.YourDiscr)
	b = binary.BigEndian.AppendUint32(b, toMicros(p.DesiredMinTx))
	b = binary.BigEndian.AppendUint32(b, toMicros(p.RequiredMinRx))
	b = binary.BigEndian.AppendUint32(b, toMicros(p.RequiredMinEchoRx))
	return b
}

// parsePacket decodes b and applies the packet checks of RFC 5880 §6.8.6 that
// do not need a session: version, length, detect multiplier, multipoint bit
// and discriminators. The A bit is decoded but checked by the caller after
// session selection, as the RFC orders it.
func parsePacket(b []byte) (*packet, error) {
	if len(b) < headerLen {
		return nil, fmt.Errorf("%w: %d bytes", errShort, len(b))
	}
	p := &packet{
		Version:                 b[0] >> 5,
		Diag:                    Diag(b[0] & 0x1f),
		State:                   State(b[1] >> 6),
		Poll:                    b[1]&bitPoll != 0,
		Final:                   b[1]&bitFinal != 0,
		ControlPlaneIndependent: b[1]&bitCPI != 0,
		AuthPresent:             b[1]&bitAuth != 0,
		Demand:                  b[1]&bitDemand != 0,
		Multipoint:              b[1]&bitMultipont != 0,
		DetectMult:              b[2],
		Length:                  b[3],
		MyDiscr:                 binary.BigEndian.Uint32(b[4:]),
		YourDiscr:               binary.BigEndian.Uint32(b[8:]),
		DesiredMinTx:            fromMicros(binary.BigEndian.Uint32(b[12:])),
		RequiredMinRx:           fromMicros(binary.BigEndian.Uint32(b[16:])),
		RequiredMinEchoRx:       fromMicros(binary.BigEndian.Uint32(b[20:])),
	}
	minLen := headerLen
	if p.AuthPresent {
		minLen += authHeaderMin
	}
	switch {
	case p.Version != version:
		return nil, fmt.Errorf("%w: %d", errVersion, p.Version)
	case int(p.Length) < minLen || int(p.Length) > len(b):
		return nil, fmt.Errorf("%w: %d (packet of %d bytes)", errLength, p.Length, len(b))
	case p.DetectMult == 0:
		return nil, errDetectMult
	case p.Multipoint:
		return nil, errMultipoint
	case p.MyDiscr == 0:
		return nil, errMyDiscr
	case p.YourDiscr == 0 && p.State != Down && p.State != AdminDown:
		return nil, fmt.Errorf("%w (state %s)", errYourDiscr, p.State)
	}
	return p, nil
}

// toMicros converts d to the microseconds of the wire, saturating.
func toMicros(d time.Duration) uint32 {
	us := d.Microseconds()
	switch {
	case us < 0:
		return 0
	case us > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(us)
}

// fromMicros converts microseconds of the wire to a Duration.
func fromMicros(us uint32) time.Duration {
	return time.Duration(us) * time.Microsecond
}
