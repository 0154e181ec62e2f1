package bfd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// Net opens the sockets of a Server; the default uses the kernel.
type Net interface {
	// Listen opens the receive socket for a family (4 or 6) on port (3784
	// or 4784), reporting each packet's TTL/hop limit and destination
	// address.
	Listen(family int, port int) (PacketConn, error)
	// Dial opens a session's send socket from local (invalid: kernel's
	// choice) and a source port in 49152–65535, sending with TTL 255 to
	// peer.
	Dial(local netip.Addr, peer netip.AddrPort) (PacketConn, error)
}

// PacketConn is a socket opened by a Net.
type PacketConn interface {
	// ReadPacket reads one packet into b.
	ReadPacket(b []byte) (n int, m Meta, err error)
	// WritePacket sends b; Dial'ed conns send to their peer.
	WritePacket(b []byte) error
	// LocalAddr is the address the socket is bound to.
	LocalAddr() netip.AddrPort
	// Close closes the socket.
	Close() error
}

// Meta describes a received packet.
type Meta struct {
	Src netip.AddrPort
	Dst netip.Addr
	TTL int // TTL or hop limit
}

// Source ports of RFC 5881 §4.
const (
	srcPortMin  = 49152
	srcPortMax  = 65535
	dialRetries = 64
)

// kernelNet is the Net of UDP sockets.
type kernelNet struct {
	// reuseAddr sets SO_REUSEADDR on listeners, for tests that bind a
	// fake peer to a specific address of the same port. Not in
	// production: another BFD daemon on the node bound to the wildcard
	// would then silently take some of the packets, where without it
	// the Server's bind fails and says so.
	reuseAddr bool
}

// Listen opens 0.0.0.0:port ("udp4") or [::]:port ("udp6", IPv6 only) and
// asks for the TTL/hop limit and destination address of every packet.
func (k kernelNet) Listen(family int, port int) (PacketConn, error) {
	var lc net.ListenConfig
	if k.reuseAddr {
		lc.Control = func(_, _ string, c syscall.RawConn) error {
			var serr error
			if err := c.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
			}); err != nil {
				return err
			}
			return serr
		}
	}
	switch family {
	case 4:
		c, err := lc.ListenPacket(context.Background(), "udp4", fmt.Sprintf("0.0.0.0:%d", port))
		if err != nil {
			return nil, err
		}
		p := ipv4.NewPacketConn(c)
		if err := p.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true); err != nil {
			c.Close()
			return nil, fmt.Errorf("ask for TTL and destination: %w", err)
		}
		return &listener4{c: c.(*net.UDPConn), p: p}, nil
	case 6:
		c, err := lc.ListenPacket(context.Background(), "udp6", fmt.Sprintf("[::]:%d", port))
		if err != nil {
			return nil, err
		}
		p := ipv6.NewPacketConn(c)
		if err := p.SetControlMessage(ipv6.FlagHopLimit|ipv6.FlagDst, true); err != nil {
			c.Close()
			return nil, fmt.Errorf("ask for hop limit and destination: %w", err)
		}
		return &listener6{c: c.(*net.UDPConn), p: p}, nil
	}
	return nil, fmt.Errorf("unknown address family %d", family)
}

// Dial opens a UDP socket connected to peer from local and a random free
// source port in 49152–65535, with TTL (hop limit) 255.
func (kernelNet) Dial(local netip.Addr, peer netip.AddrPort) (PacketConn, error) {
	network, ip := "udp4", net.IP(nil)
	if peer.Addr().Unmap().Is6() {
		network = "udp6"
	}
	if local.IsValid() {
		ip = local.Unmap().AsSlice()
	}
	raddr := net.UDPAddrFromAddrPort(netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()))
	for range dialRetries {
		laddr := &net.UDPAddr{IP: ip, Zone: local.Zone(), Port: srcPortMin + rand.IntN(srcPortMax-srcPortMin+1)}
		c, err := net.DialUDP(network, laddr, raddr)
		if errors.Is(err, syscall.EADDRINUSE) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if network == "udp4" {
			err = ipv4.NewConn(c).SetTTL(255)
		} else {
			err = ipv6.NewConn(c).SetHopLimit(255)
		}
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("set TTL 255: %w", err)
		}
		return &dialed{c: c}, nil
	}
	return nil, fmt.Errorf("no free source port in %d-%d after %d tries", srcPortMin, srcPortMax, dialRetries)
}

// dialed is a session's send socket.
type dialed struct{ c *net.UDPConn }

func (d *dialed) ReadPacket(b []byte) (int, Meta, error) {
	n, src, err := d.c.ReadFromUDPAddrPort(b)
	return n, Meta{Src: unmapPort(src), TTL: -1}, err
}
func (d *dialed) WritePacket(b []byte) error   { _, err := d.c.Write(b); return err }
func (d *dialed) LocalAddr() netip.AddrPort    { return udpAddrPort(d.c.LocalAddr()) }
func (d *dialed) Close() error                 { return d.c.Close() }
func (l *listener4) LocalAddr() netip.AddrPort { return udpAddrPort(l.c.LocalAddr()) }
func (l *listener6) LocalAddr() netip.AddrPort { return udpAddrPort(l.c.LocalAddr()) }
func (l *listener4) Close() error              { return l.c.Close() }
func (l *listener6) Close() error              { return l.c.Close() }

// listener4 is an IPv4 receive socket.
type listener4 struct {
	c *net.UDPConn
	p *ipv4.PacketConn
}

func (l *listener4) ReadPacket(b []byte) (int, Meta, error) {
	n, cm, src, err := l.p.ReadFrom(b)
	if err != nil {
		return 0, Meta{}, err
	}
	m := Meta{Src: udpAddrPort(src), TTL: -1}
	if cm != nil {
		m.TTL = cm.TTL
		m.Dst, _ = netip.AddrFromSlice(cm.Dst)
		m.Dst = m.Dst.Unmap()
	}
	return n, m, nil
}

func (l *listener4) WritePacket([]byte) error { return errors.New("bfd: listener cannot send") }

// listener6 is an IPv6 receive socket.
type listener6 struct {
	c *net.UDPConn
	p *ipv6.PacketConn
}

func (l *listener6) ReadPacket(b []byte) (int, Meta, error) {
	n, cm, src, err := l.p.ReadFrom(b)
	if err != nil {
		return 0, Meta{}, err
	}
	m := Meta{Src: udpAddrPort(src), TTL: -1}
	if cm != nil {
		m.TTL = cm.HopLimit
		m.Dst, _ = netip.AddrFromSlice(cm.Dst)
		m.Dst = m.Dst.Unmap()
	}
	return n, m, nil
}

func (l *listener6) WritePacket([]byte) error { return errors.New("bfd: listener cannot send") }

// udpAddrPort converts a *net.UDPAddr to an unmapped AddrPort.
func udpAddrPort(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		return unmapPort(u.AddrPort())
	}
	return netip.AddrPort{}
}

// unmapPort unmaps an IPv4-mapped IPv6 address.
func unmapPort(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
