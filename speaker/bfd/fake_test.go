package bfd

import (
	"net"
	"net/netip"
	"sync"
)

// fakeSwitch connects fakeNets in memory: a packet written to an address and
// port is delivered to the listener bound there, with TTL 255.
type fakeSwitch struct {
	mu        sync.Mutex
	listeners map[netip.AddrPort]*fakeConn
	nextPort  uint16
}

func newFakeSwitch() *fakeSwitch {
	return &fakeSwitch{listeners: map[netip.AddrPort]*fakeConn{}, nextPort: srcPortMin}
}

// fakeNet is the Net of one host with address addr on a fakeSwitch.
type fakeNet struct {
	sw   *fakeSwitch
	addr netip.Addr
}

func (n *fakeNet) Listen(family int, port int) (PacketConn, error) {
	c := newFakeConn(n.sw, netip.AddrPortFrom(n.addr, uint16(port)), netip.AddrPort{})
	n.sw.mu.Lock()
	defer n.sw.mu.Unlock()
	n.sw.listeners[c.local] = c
	return c, nil
}

func (n *fakeNet) Dial(local netip.Addr, peer netip.AddrPort) (PacketConn, error) {
	if !local.IsValid() {
		local = n.addr
	}
	n.sw.mu.Lock()
	port := n.sw.nextPort
	n.sw.nextPort++
	n.sw.mu.Unlock()
	return newFakeConn(n.sw, netip.AddrPortFrom(local, port), peer), nil
}

type fakePacket struct {
	b []byte
	m Meta
}

type fakeConn struct {
	sw          *fakeSwitch
	local, peer netip.AddrPort
	in          chan fakePacket
	closed      chan struct{}
	once        sync.Once
}

func newFakeConn(sw *fakeSwitch, local, peer netip.AddrPort) *fakeConn {
	return &fakeConn{sw: sw, local: local, peer: peer, in: make(chan fakePacket, 1024), closed: make(chan struct{})}
}

func (c *fakeConn) ReadPacket(b []byte) (int, Meta, error) {
	select {
	case p := <-c.in:
		return copy(b, p.b), p.m, nil
	case <-c.closed:
		return 0, Meta{}, net.ErrClosed
	}
}

func (c *fakeConn) WritePacket(b []byte) error {
	select {
	case <-c.closed:
		return net.ErrClosed
	default:
	}
	c.sw.mu.Lock()
	dst := c.sw.listeners[c.peer]
	c.sw.mu.Unlock()
	if dst == nil {
		return nil // lost
	}
	select {
	case dst.in <- fakePacket{b: append([]byte(nil), b...), m: Meta{Src: c.local, Dst: c.peer.Addr(), TTL: 255}}:
	default: // queue full: lost
	}
	return nil
}

func (c *fakeConn) LocalAddr() netip.AddrPort { return c.local }

func (c *fakeConn) Close() error {
	c.once.Do(func() {
		close(c.closed)
		c.sw.mu.Lock()
		if c.sw.listeners[c.local] == c {
			delete(c.sw.listeners, c.local)
		}
		c.sw.mu.Unlock()
	})
	return nil
}
