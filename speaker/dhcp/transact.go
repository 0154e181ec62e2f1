package dhcp

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"math"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/packet"
)

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
