// Package dhcp is a DHCPv4 client that leases addresses for "virtual
// clients": a speaker leases a Service's VIP from the LAN's DHCP server on
// behalf of the Service, not for the node it runs on.
//
// A virtual client is identified by its client identifier (option 61),
// stable per Service, and by a hardware address (chaddr) derived from it
// (see HardwareAddr), so that the server sees the same client whichever
// node performs the exchange. Every message sets the BOOTP broadcast flag,
// so every reply is broadcast on the LAN and reaches whichever node asks,
// though the leased address is not an address of that node.
//
// The Client sends and receives through an AF_PACKET socket (see Listen)
// and never binds UDP port 68, so the node's own DHCP client may run on the
// same interface. One Client serves many concurrent exchanges on one
// interface; replies are told apart by their transaction id (xid).
//
// Everything read from the LAN is treated as hostile: packets and DHCP
// messages are parsed strictly and bounded, and malformed ones dropped.
package dhcp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

// Request identifies a virtual client.
type Request struct {
	// ClientID is the value of option 61, sent as-is (1 to 255 bytes;
	// the caller builds it, e.g. type 0 followed by a Service's UID).
	ClientID []byte
	// Requested is optional. In Acquire it is the address asked for in
	// the DISCOVER (option 50): an OFFER of another address fails with a
	// *NotRequestedError. In Renew it is the address to renew (required).
	Requested netip.Addr
	// Hostname is optional, sent as option 12; it must be an RFC 1123
	// label (letters, digits and hyphens, not starting or ending with a
	// hyphen, at most 63 bytes).
	Hostname string
}

// Infinite is the Duration (and, unless the server gives them, the Renew
// and Rebind times) of a lease whose lease time option is 0xffffffff: the
// lease never expires.
const Infinite = time.Duration(math.MaxInt64)

// Lease is an address leased by a server.
type Lease struct {
	// Addr is the leased address (yiaddr).
	Addr netip.Addr
	// Mask is Addr's subnet from option 1 (masked), invalid if the server
	// sent no (valid) subnet mask.
	Mask netip.Prefix
	// Router is the first router of option 3, if any.
	Router netip.Addr
	// Server is the server identifier (option 54).
	Server netip.Addr
	// ServerMAC is the Ethernet source address of the ACK, used to send a
	// RELEASE to the server directly.
	ServerMAC net.HardwareAddr
	// Duration is the lease time (option 51); Infinite for 0xffffffff.
	Duration time.Duration
	// Renew (T1, option 58) defaults to Duration/2, Rebind (T2, option 59)
	// to Duration*7/8; values the server gives that are not ordered
	// Renew <= Rebind <= Duration are replaced by the defaults.
	Renew  time.Duration
	Rebind time.Duration
}

// Errors returned by the Client; test with errors.Is.
var (
	// ErrNAK is wrapped by *NAKError: the server refused the request.
	ErrNAK = errors.New("dhcp: server sent DHCPNAK")
	// ErrNoAnswer: no OFFER or ACK before the context ended or the
	// retransmissions gave up.
	ErrNoAnswer = errors.New("dhcp: no answer from a DHCP server")
	// ErrNotRequested is wrapped by *NotRequestedError: Acquire with
	// Request.Requested set was offered another address.
	ErrNotRequested = errors.New("dhcp: server offered another address than the one requested")
	// ErrBusy: the Client already runs its maximum number of exchanges.
	ErrBusy = errors.New("dhcp: too many exchanges in progress")
	// ErrClosed: the Client is closed.
	ErrClosed = errors.New("dhcp: client closed")
)

// NAKError is a DHCPNAK. It wraps ErrNAK.
type NAKError struct {
	// Server is the server identifier of the NAK, or its IP source if it
	// has none.
	Server netip.Addr
	// Message is the server's message (option 56), printable ASCII only,
	// at most 128 bytes; empty if none.
	Message string
}

// Error implements error.
func (e *NAKError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("dhcp: server %v sent DHCPNAK", e.Server)
	}
	return fmt.Sprintf("dhcp: server %v sent DHCPNAK: %q", e.Server, e.Message)
}

// Unwrap returns ErrNAK.
func (e *NAKError) Unwrap() error { return ErrNAK }

// NotRequestedError is an OFFER of another address than the requested
// one, which the Client did not request. It wraps ErrNotRequested.
type NotRequestedError struct {
	Requested netip.Addr
	Offered   netip.Addr
	Server    netip.Addr
}

// Error implements error.
func (e *NotRequestedError) Error() string {
	return fmt.Sprintf("dhcp: server %v offered %v, not the requested %v", e.Server, e.Offered, e.Requested)
}

// Unwrap returns ErrNotRequested.
func (e *NotRequestedError) Unwrap() error { return ErrNotRequested }

// Option configures a Client.
type Option func(*Client)

// WithMaxExchanges bounds the number of concurrent exchanges (default
// 256); beyond it, calls fail with ErrBusy.
func WithMaxExchanges(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.maxExchanges = n
		}
	}
}

// WithRetransmit sets the retransmission schedule: the first wait is
// initial, each next one doubles up to maxWait, and a message is sent at
// most attempts times (0: until the context ends) before ErrNoAnswer.
// The default is 1 s doubling up to 64 s (RFC 2131's maximum), for as long
// as the context lives: give every call a deadline.
func WithRetransmit(initial, maxWait time.Duration, attempts int) Option {
	return func(c *Client) {
		if initial > 0 {
			c.initialWait = initial
		}
		if maxWait >= c.initialWait {
			c.maxWait = maxWait
		}
		if attempts >= 0 {
			c.attempts = attempts
		}
	}
}

// Client performs DHCP exchanges on one interface. It is safe for
// concurrent use.
type Client struct {
	ifi  *net.Interface
	conn net.PacketConn

	maxExchanges int
	initialWait  time.Duration
	maxWait      time.Duration
	attempts     int

	mu        sync.Mutex
	exchanges map[uint32]*exchange
	closed    bool
	done      chan struct{} // closed when the reader ends
	readErr   error         // why the reader ended, under mu
	closeOnce sync.Once
}

// exchange is one transaction in progress.
type exchange struct {
	chaddr   net.HardwareAddr
	clientID []byte
	replies  chan reply
}

// reply is a decoded server message and the Ethernet address it came from.
type reply struct {
	msg *message
	src netip.Addr
	mac net.HardwareAddr
}

// New returns a Client sending and receiving IPv4 packets (from the IPv4
// header on, addressed by *packet.Addr) through conn on ifi, as the socket
// opened by Listen does; it is the seam for tests. The Client owns conn
// and starts a reader goroutine, which Close ends.
func New(ifi *net.Interface, conn net.PacketConn, opts ...Option) *Client {
	c := &Client{
		ifi:          ifi,
		conn:         conn,
		maxExchanges: 256,
		initialWait:  time.Second,
		maxWait:      64 * time.Second,
		attempts:     0,
		exchanges:    make(map[uint32]*exchange),
		done:         make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	go c.read()
	return c
}

// Close closes the socket and waits for the reader to end; exchanges in
// progress fail with ErrClosed.
func (c *Client) Close() error {
	var err error
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		err = c.conn.Close()
		<-c.done
	})
	return err
}

// read delivers replies to their exchanges until the socket fails.
func (c *Client) read() {
	defer close(c.done)
	buf := make([]byte, maxPacketLen+1)
	for {
		n, addr, err := c.conn.ReadFrom(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			c.mu.Lock()
			c.readErr = err
			c.closed = true
			c.mu.Unlock()
			return
		}
		c.handle(buf[:n], addr)
	}
}

// handle parses one packet and hands it to its exchange; anything unknown
// or malformed is dropped.
func (c *Client) handle(b []byte, addr net.Addr) {
	if len(b) > maxPacketLen {
		return
	}
	payload, src, err := udpPayload(b)
	if err != nil {
		return
	}
	m, err := parseMessage(payload, opReply)
	if err != nil {
		return
	}
	var mac net.HardwareAddr
	if pa, ok := addr.(*packet.Addr); ok && len(pa.HardwareAddr) == 6 {
		mac = append(net.HardwareAddr(nil), pa.HardwareAddr...)
	}
	c.mu.Lock()
	ex := c.exchanges[m.Xid]
	c.mu.Unlock()
	if ex == nil || string(m.CHAddr) != string(ex.chaddr) {
		return
	}
	if id, ok := m.Options[optClientID]; ok && string(id) != string(ex.clientID) {
		return
	}
	select {
	case ex.replies <- reply{msg: m, src: src, mac: mac}:
	default: // the exchange is not keeping up: drop
	}
}

// HardwareAddr returns the hardware address (chaddr) used for clientID: a
// locally administered unicast MAC made of the first 6 bytes of the
// SHA-256 of clientID, so that the server sees the same address whichever
// node asks. It is never sent as an Ethernet source address (frames carry
// the node's own MAC).
func HardwareAddr(clientID []byte) net.HardwareAddr {
	h := sha256.Sum256(clientID)
	mac := net.HardwareAddr(h[:6])
	mac[0] = (mac[0] | 0x02) &^ 0x01
	return mac
}

// validHostname reports whether s is an RFC 1123 label.
func validHostname(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !('a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' || ch == '-') {
			return false
		}
	}
	return true
}

func (r Request) validate() error {
	if len(r.ClientID) == 0 || len(r.ClientID) > 255 {
		return fmt.Errorf("dhcp: client identifier of %d bytes, want 1 to 255", len(r.ClientID))
	}
	if r.Hostname != "" && !validHostname(r.Hostname) {
		return fmt.Errorf("dhcp: invalid hostname %q", r.Hostname)
	}
	if r.Requested.IsValid() && !validLeaseAddr(r.Requested) {
		return fmt.Errorf("dhcp: requested address %v is not a unicast IPv4 address", r.Requested)
	}
	return nil
}

// validLeaseAddr reports whether a may be leased: IPv4, not unspecified,
// limited broadcast, multicast, loopback, link-local or class E.
func validLeaseAddr(a netip.Addr) bool {
	if !a.Is4() || a.IsUnspecified() || a == broadcastIPv4 || a.IsMulticast() || a.IsLoopback() ||
		a.IsLinkLocalUnicast() {
		return false
	}
	return a.As4()[0] < 240
}

// begin registers a new exchange with a fresh random xid.
func (c *Client) begin(r Request) (uint32, *exchange, error) {
	ex := &exchange{
		chaddr:   HardwareAddr(r.ClientID),
		clientID: append([]byte(nil), r.ClientID...),
		replies:  make(chan reply, 16),
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		if c.readErr != nil {
			return 0, nil, fmt.Errorf("%w: %v", ErrClosed, c.readErr)
		}
		return 0, nil, ErrClosed
	}
	if len(c.exchanges) >= c.maxExchanges {
		return 0, nil, ErrBusy
	}
	for {
		var b [4]byte
		if _, err := rand.Read(b[:]); err != nil {
			return 0, nil, fmt.Errorf("dhcp: random xid: %w", err)
		}
		xid := binary.BigEndian.Uint32(b[:])
		if _, taken := c.exchanges[xid]; !taken {
			c.exchanges[xid] = ex
			return xid, ex, nil
		}
	}
}

func (c *Client) end(xid uint32) {
	c.mu.Lock()
	delete(c.exchanges, xid)
	c.mu.Unlock()
}

// newMessage returns a BOOTREQUEST of type t for r, with the broadcast flag,
// the client identifier, the hostname and, except for RELEASE and DECLINE,
// a parameter request list and maximum message size.
func newMessage(t messageType, xid uint32, r Request) *message {
	m := &message{
		Op:     opRequest,
		Xid:    xid,
		Flags:  flagBroadcast,
		CHAddr: HardwareAddr(r.ClientID),
		Type:   t,
		Options: map[uint8][]byte{
			optClientID: r.ClientID,
		},
	}
	if r.Hostname != "" && t != msgRelease && t != msgDecline {
		m.Options[optHostname] = []byte(r.Hostname)
	}
	if t == msgDiscover || t == msgRequest {
		m.Options[optParamRequest] = []byte{optSubnetMask, optRouter, optLeaseTime, optServerID, optRenewalTime, optRebindTime}
		m.Options[optMaxMsgSize] = binary.BigEndian.AppendUint16(nil, maxMsgLen+ipv4HeaderLen+udpHeaderLen)
	}
	return m
}

func addrBytes(a netip.Addr) []byte {
	b := a.As4()
	return b[:]
}

// send encodes m in a packet from src to dst and writes it to mac.
func (c *Client) send(m *message, src, dst netip.Addr, mac net.HardwareAddr) error {
	payload, err := m.marshal()
	if err != nil {
		return fmt.Errorf("dhcp: %v: %w", m.Type, err)
	}
	pkt := buildPacket(src, dst, payload)
	if _, err := c.conn.WriteTo(pkt, &packet.Addr{HardwareAddr: mac}); err != nil {
		return fmt.Errorf("dhcp: send %v on %s: %w", m.Type, c.ifiName(), err)
	}
	return nil
}

func (c *Client) ifiName() string {
	if c.ifi == nil {
		return "?"
	}
	return c.ifi.Name
}

// transact broadcasts m, retransmitting it on the schedule, until accept
// returns done or an error for a reply, the context ends or the attempts
// are used up (ErrNoAnswer).
func (c *Client) transact(ctx context.Context, ex *exchange, m *message, accept func(reply) (bool, error)) error {
	wait := c.initialWait
	start := time.Now()
	for attempt := 1; ; attempt++ {
		m.Secs = uint16(min(time.Since(start)/time.Second, math.MaxUint16))
		if err := c.send(m, netip.IPv4Unspecified(), broadcastIPv4, broadcastMAC); err != nil {
			return err
		}
		timer := time.NewTimer(wait)
	waitReply:
		for {
			select {
			case <-ctx.Done():
				timer.Stop()
				return fmt.Errorf("%w: %v after %v: %w", ErrNoAnswer, m.Type, time.Since(start).Round(time.Millisecond), context.Cause(ctx))
			case <-c.done:
				timer.Stop()
				return ErrClosed
			case <-timer.C:
				break waitReply
			case rep := <-ex.replies:
				ok, err := accept(rep)
				if err != nil || ok {
					timer.Stop()
					return err
				}
			}
		}
		if c.attempts > 0 && attempt >= c.attempts {
			return fmt.Errorf("%w: %v sent %d times", ErrNoAnswer, m.Type, attempt)
		}
		wait = min(2*wait, c.maxWait)
	}
}

// Acquire leases an address for r: DISCOVER, the first acceptable OFFER,
// REQUEST, ACK. With r.Requested set, an OFFER of another address ends the
// exchange with a *NotRequestedError (nothing is requested). A NAK gives a
// *NAKError, no answer ErrNoAnswer.
func (c *Client) Acquire(ctx context.Context, r Request) (Lease, error) {
	if err := r.validate(); err != nil {
		return Lease{}, err
	}
	xid, ex, err := c.begin(r)
	if err != nil {
		return Lease{}, err
	}
	defer c.end(xid)

	disc := newMessage(msgDiscover, xid, r)
	if r.Requested.IsValid() {
		disc.Options[optRequestedIP] = addrBytes(r.Requested)
	}
	var offer Lease
	err = c.transact(ctx, ex, disc, func(rep reply) (bool, error) {
		if rep.msg.Type != msgOffer {
			return false, nil
		}
		l, err := leaseFrom(rep, false)
		if err != nil {
			return false, nil // a bad offer: wait for another
		}
		if r.Requested.IsValid() && l.Addr != r.Requested {
			return true, &NotRequestedError{Requested: r.Requested, Offered: l.Addr, Server: l.Server}
		}
		offer = l
		return true, nil
	})
	if err != nil {
		return Lease{}, err
	}

	req := newMessage(msgRequest, xid, r)
	req.Options[optRequestedIP] = addrBytes(offer.Addr)
	req.Options[optServerID] = addrBytes(offer.Server)
	return c.request(ctx, ex, req, offer.Addr, offer.Server)
}

// Renew extends the lease of r.Requested, INIT-REBOOT style: a broadcast
// REQUEST with option 50 = r.Requested, ciaddr 0 and no server identifier,
// so the reply is broadcast whichever node sends it. An ACK gives the
// extended lease; a NAK a *NAKError (the address is no longer the
// client's), no answer ErrNoAnswer.
func (c *Client) Renew(ctx context.Context, r Request) (Lease, error) {
	if err := r.validate(); err != nil {
		return Lease{}, err
	}
	if !r.Requested.IsValid() {
		return Lease{}, errors.New("dhcp: renew: no address requested")
	}
	xid, ex, err := c.begin(r)
	if err != nil {
		return Lease{}, err
	}
	defer c.end(xid)
	req := newMessage(msgRequest, xid, r)
	req.Options[optRequestedIP] = addrBytes(r.Requested)
	return c.request(ctx, ex, req, r.Requested, netip.Addr{})
}

// request sends REQUEST req until an ACK for addr (from server, if valid)
// or a NAK.
func (c *Client) request(ctx context.Context, ex *exchange, req *message, addr, server netip.Addr) (Lease, error) {
	var lease Lease
	err := c.transact(ctx, ex, req, func(rep reply) (bool, error) {
		switch rep.msg.Type {
		case msgNak:
			sid, ok := rep.msg.addrOption(optServerID)
			if !ok {
				sid = rep.src
			}
			if server.IsValid() && sid != server {
				return false, nil // another server's opinion
			}
			return true, &NAKError{Server: sid, Message: sanitizeMessage(rep.msg.Options[optMessage])}
		case msgAck:
			l, err := leaseFrom(rep, true)
			if err != nil || l.Addr != addr || (server.IsValid() && l.Server != server) {
				return false, nil
			}
			lease = l
			return true, nil
		}
		return false, nil
	})
	if err != nil {
		return Lease{}, err
	}
	return lease, nil
}

// leaseFrom validates an OFFER or ACK and makes a Lease of it. The lease
// time is required in an ACK.
func leaseFrom(rep reply, ack bool) (Lease, error) {
	m := rep.msg
	if !validLeaseAddr(m.YIAddr) {
		return Lease{}, fmt.Errorf("dhcp: %v offers %v", m.Type, m.YIAddr)
	}
	l := Lease{Addr: m.YIAddr, ServerMAC: rep.mac}
	sid, ok := m.addrOption(optServerID)
	if !ok || !sid.Is4() || sid.IsUnspecified() || sid.IsMulticast() || sid == broadcastIPv4 {
		return Lease{}, fmt.Errorf("dhcp: %v without a valid server identifier", m.Type)
	}
	l.Server = sid
	if mask, ok := m.addrOption(optSubnetMask); ok {
		if bits, ok := maskBits(mask); ok {
			p := netip.PrefixFrom(m.YIAddr, bits).Masked()
			if bits <= 30 && (m.YIAddr == p.Addr() || m.YIAddr == lastAddr(p)) {
				return Lease{}, fmt.Errorf("dhcp: %v offers %v, the network or broadcast address of %v", m.Type, m.YIAddr, p)
			}
			l.Mask = p
		}
	}
	if v := m.Options[optRouter]; len(v) >= 4 && len(v)%4 == 0 {
		l.Router = netip.AddrFrom4([4]byte(v[:4]))
	}
	secs, ok := m.uint32Option(optLeaseTime)
	if !ok {
		if ack {
			return Lease{}, fmt.Errorf("dhcp: ACK without a lease time")
		}
	}
	l.Duration = seconds(secs)
	l.Renew, l.Rebind = l.Duration/2, l.Duration/8*7
	if l.Duration == Infinite {
		l.Renew, l.Rebind = Infinite, Infinite
	}
	t1, ok1 := m.uint32Option(optRenewalTime)
	t2, ok2 := m.uint32Option(optRebindTime)
	renew, rebind := l.Renew, l.Rebind
	if ok1 {
		renew = seconds(t1)
	}
	if ok2 {
		rebind = seconds(t2)
	}
	if renew <= rebind && rebind <= l.Duration {
		l.Renew, l.Rebind = renew, rebind
	}
	return l, nil
}

func seconds(s uint32) time.Duration {
	if s == math.MaxUint32 {
		return Infinite
	}
	return time.Duration(s) * time.Second
}

// maskBits returns the prefix length of a contiguous IPv4 netmask.
func maskBits(m netip.Addr) (int, bool) {
	b := m.As4()
	ones, bits := net.IPMask(b[:]).Size()
	if bits == 0 {
		return 0, false
	}
	return ones, true
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Addr().As4()
	v := binary.BigEndian.Uint32(a[:]) | (1<<(32-p.Bits()) - 1)
	binary.BigEndian.PutUint32(a[:], v)
	return netip.AddrFrom4(a)
}

// Release sends a DHCPRELEASE of l (ciaddr l.Addr, server identifier
// l.Server), unicast to l.Server at l.ServerMAC (broadcast MAC if nil),
// from l.Addr. No reply is expected: the server may not get it.
func (c *Client) Release(ctx context.Context, r Request, l Lease) error {
	if err := r.validate(); err != nil {
		return err
	}
	if !validLeaseAddr(l.Addr) || !l.Server.Is4() {
		return fmt.Errorf("dhcp: release: lease without address or server")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dhcp: release %v: %w", l.Addr, err)
	}
	xid, _, err := c.begin(r)
	if err != nil {
		return err
	}
	defer c.end(xid)
	m := newMessage(msgRelease, xid, r)
	m.CIAddr = l.Addr
	m.Options[optServerID] = addrBytes(l.Server)
	mac := l.ServerMAC
	if len(mac) != 6 {
		mac = broadcastMAC
	}
	return c.send(m, l.Addr, l.Server, mac)
}

// Decline sends a DHCPDECLINE of l (option 50 l.Addr, server identifier
// l.Server), broadcast, e.g. after finding the address in use. No reply is
// expected.
func (c *Client) Decline(ctx context.Context, r Request, l Lease) error {
	if err := r.validate(); err != nil {
		return err
	}
	if !validLeaseAddr(l.Addr) || !l.Server.Is4() {
		return fmt.Errorf("dhcp: decline: lease without address or server")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("dhcp: decline %v: %w", l.Addr, err)
	}
	xid, _, err := c.begin(r)
	if err != nil {
		return err
	}
	defer c.end(xid)
	m := newMessage(msgDecline, xid, r)
	m.Options[optRequestedIP] = addrBytes(l.Addr)
	m.Options[optServerID] = addrBytes(l.Server)
	return c.send(m, netip.IPv4Unspecified(), broadcastIPv4, broadcastMAC)
}
