package dhcp

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/mdlayher/packet"
)

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
