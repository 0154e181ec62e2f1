package cpvip

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"time"
)

// The election message on the wire (big endian):
//
//	magic    4  "ILCP"
//	version  1  1
//	flags    1  bit 0: apiserver ready, bit 1: holding; other bits 0
//	epoch    8  the holder's term (a non-holder: the highest it saw)
//	time     8  sender's clock, unix ns, strictly increasing per sender
//	vip      1+n  length (4 or 16) and address
//	node IP  1+n  length (4 or 16) and address
//	node     1+n  length (1-253) and name
//	mac      32 HMAC-SHA256 of everything before it
//
// The size is exact: nothing may follow the HMAC.
const (
	messageMagic   = "ILCP"
	messageVersion = 1
	macSize        = sha256.Size
	// MaxMessageSize bounds a message; longer datagrams are dropped
	// unread. The largest valid message is 342 bytes.
	MaxMessageSize = 512
	// MaxFutureSkew is how far a message's timestamp may be from the
	// receiver's clock, either way.
	MaxFutureSkew = 10 * time.Second

	flagReady   = 1 << 0
	flagHolding = 1 << 1
	flagsKnown  = flagReady | flagHolding
)

// nodeNameRE is what a Kubernetes node name may be (a DNS subdomain).
var nodeNameRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)

// Message is one control-plane speaker's election message.
type Message struct {
	VIP    netip.Addr
	Node   string
	NodeIP netip.Addr
	// Ready says whether the sender's kube-apiserver is ready.
	Ready bool
	// Holding says whether the sender holds the VIP.
	Holding bool
	// Epoch is the holder's term: a holder sends the epoch it took the VIP
	// with, any other speaker the highest it has seen.
	Epoch uint64
	// Time is the sender's clock when it sent the message.
	Time time.Time
}

// Reason is why a received datagram was dropped: a label of the rejected
// messages counter.
type Reason string

// The reasons a datagram is dropped.
const (
	ReasonSize      Reason = "size"      // over MaxMessageSize
	ReasonMalformed Reason = "malformed" // fails the strict parse
	ReasonSignature Reason = "signature" // no key verifies its HMAC
	ReasonVIP       Reason = "vip"       // about another VIP
	ReasonReplay    Reason = "replay"    // timestamp not after the last accepted from the node
	ReasonClock     Reason = "clock"     // timestamp too far from the receiver's clock
	ReasonPeers     Reason = "peers"     // too many distinct senders
	ReasonRate      Reason = "rate"      // over the receive rate bound
	ReasonNoKey     Reason = "no-key"    // no election key loaded yet
)

// RejectError is a dropped datagram's error; Reason says why.
type RejectError struct {
	Reason Reason
	Err    error
}

func (e *RejectError) Error() string { return fmt.Sprintf("message rejected (%s): %v", e.Reason, e.Err) }
func (e *RejectError) Unwrap() error { return e.Err }

func reject(r Reason, format string, args ...any) error {
	return &RejectError{Reason: r, Err: fmt.Errorf(format, args...)}
}

// ReasonOf returns the Reason of a RejectError in err's chain, or "".
func ReasonOf(err error) Reason {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

// Marshal encodes m and signs it with key.
func (m Message) Marshal(key Key) ([]byte, error) {
	if !nodeNameRE.MatchString(m.Node) {
		return nil, fmt.Errorf("node name %q is not a DNS subdomain", m.Node)
	}
	if err := checkUnicast(m.VIP); err != nil {
		return nil, fmt.Errorf("VIP: %w", err)
	}
	if err := checkUnicast(m.NodeIP); err != nil {
		return nil, fmt.Errorf("node IP: %w", err)
	}
	b := make([]byte, 0, MaxMessageSize)
	b = append(b, messageMagic...)
	b = append(b, messageVersion)
	var flags byte
	if m.Ready {
		flags |= flagReady
	}
	if m.Holding {
		flags |= flagHolding
	}
	b = append(b, flags)
	b = binary.BigEndian.AppendUint64(b, m.Epoch)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Time.UnixNano()))
	b = appendAddr(b, m.VIP)
	b = appendAddr(b, m.NodeIP)
	b = append(b, byte(len(m.Node)))
	b = append(b, m.Node...)
	return append(b, key.sign(b)...), nil
}

func appendAddr(b []byte, a netip.Addr) []byte {
	a = a.Unmap()
	b = append(b, byte(a.BitLen()/8))
	return append(b, a.AsSlice()...)
}

func checkUnicast(a netip.Addr) error {
	if !a.IsValid() || a.Is4In6() || a.IsUnspecified() || a.IsMulticast() || a.IsLoopback() {
		return fmt.Errorf("%s is not a unicast address", a)
	}
	return nil
}

// Parse decodes b strictly and checks its HMAC against keys (any one of
// them may verify it). It does not check the VIP or the timestamp: see
// Verifier. Every error is a *RejectError.
func Parse(b []byte, keys []Key) (Message, error) {
	var m Message
	if len(b) > MaxMessageSize {
		return m, reject(ReasonSize, "%d bytes", len(b))
	}
	if len(keys) == 0 {
		return m, reject(ReasonNoKey, "no election key")
	}
	r := reader{b: b}
	if string(r.next(4)) != messageMagic {
		return m, reject(ReasonMalformed, "bad magic")
	}
	if v := r.byte(); v != messageVersion {
		return m, reject(ReasonMalformed, "version %d", v)
	}
	flags := r.byte()
	if flags&^flagsKnown != 0 {
		return m, reject(ReasonMalformed, "unknown flags %#x", flags)
	}
	m.Ready, m.Holding = flags&flagReady != 0, flags&flagHolding != 0
	m.Epoch = binary.BigEndian.Uint64(r.next(8))
	ts := binary.BigEndian.Uint64(r.next(8))
	m.VIP = r.addr()
	m.NodeIP = r.addr()
	m.Node = string(r.next(int(r.byte())))
	body := r.off
	mac := r.next(macSize)
	if r.bad {
		return Message{}, reject(ReasonMalformed, "truncated")
	}
	if r.off != len(b) {
		return Message{}, reject(ReasonMalformed, "%d trailing bytes", len(b)-r.off)
	}
	if ts == 0 || ts > 1<<63-1 {
		return Message{}, reject(ReasonMalformed, "timestamp %d", ts)
	}
	m.Time = time.Unix(0, int64(ts))
	if err := checkUnicast(m.VIP); err != nil {
		return Message{}, reject(ReasonMalformed, "VIP: %v", err)
	}
	if err := checkUnicast(m.NodeIP); err != nil {
		return Message{}, reject(ReasonMalformed, "node IP: %v", err)
	}
	if !nodeNameRE.MatchString(m.Node) {
		return Message{}, reject(ReasonMalformed, "bad node name")
	}
	for _, k := range keys {
		if hmac.Equal(mac, k.sign(b[:body])) {
			return m, nil
		}
	}
	return Message{}, reject(ReasonSignature, "from %s (%s): no key verifies it", m.Node, m.NodeIP)
}

// reader reads fields off a byte slice; past the end it returns zeros and
// sets bad.
type reader struct {
	b   []byte
	off int
	bad bool
}

func (r *reader) next(n int) []byte {
	if r.bad || n < 0 || len(r.b)-r.off < n {
		r.bad = true
		return make([]byte, n)
	}
	s := r.b[r.off : r.off+n]
	r.off += n
	return s
}

func (r *reader) byte() byte { return r.next(1)[0] }

func (r *reader) addr() netip.Addr {
	n := int(r.byte())
	if n != 4 && n != 16 {
		r.bad = true
		return netip.Addr{}
	}
	a, _ := netip.AddrFromSlice(r.next(n))
	return a
}

// Verifier checks received messages: strict parse, HMAC, VIP and
// freshness (the timestamp must be after the last accepted from the same
// node and within MaxFutureSkew of the receiver's clock). It remembers at
// most MaxPeers senders. It is not safe for concurrent use.
type Verifier struct {
	vip  netip.Addr
	last map[string]time.Time
}

// MaxPeers bounds the senders a Verifier remembers: control planes have a
// handful of nodes.
const MaxPeers = 64

// NewVerifier returns a Verifier for messages about vip.
func NewVerifier(vip netip.Addr) *Verifier {
	return &Verifier{vip: vip.Unmap(), last: map[string]time.Time{}}
}

// Verify parses b, checks it, and on success records its timestamp.
// Every error is a *RejectError.
func (v *Verifier) Verify(b []byte, keys []Key, now time.Time) (Message, error) {
	m, err := Parse(b, keys)
	if err != nil {
		return m, err
	}
	if m.VIP != v.vip {
		return Message{}, reject(ReasonVIP, "from %s: VIP %s, not %s", m.Node, m.VIP, v.vip)
	}
	if d := m.Time.Sub(now); d > MaxFutureSkew || d < -MaxFutureSkew {
		return Message{}, reject(ReasonClock, "from %s: timestamp %s off the local clock", m.Node, d.Round(time.Millisecond))
	}
	last, seen := v.last[m.Node]
	if seen && !m.Time.After(last) {
		return Message{}, reject(ReasonReplay, "from %s: timestamp %s not after the last accepted %s", m.Node, m.Time.Format(time.RFC3339Nano), last.Format(time.RFC3339Nano))
	}
	if !seen && len(v.last) >= MaxPeers {
		v.forgetStale(now)
		if len(v.last) >= MaxPeers {
			return Message{}, reject(ReasonPeers, "from %s: already %d senders", m.Node, len(v.last))
		}
	}
	v.last[m.Node] = m.Time
	return m, nil
}

// forgetStale drops senders whose last timestamp is older than the skew
// bound: any replay of theirs is rejected by the clock rule anyway.
func (v *Verifier) forgetStale(now time.Time) {
	for n, t := range v.last {
		if now.Sub(t) > MaxFutureSkew {
			delete(v.last, n)
		}
	}
}
