package cpvip

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultPort is the UDP port of the election messages.
const DefaultPort = 7477

// Transport sends and receives election messages on one interface: a UDP
// socket bound to the port on that interface only (SO_BINDTODEVICE), sending
// to the IPv4 subnet broadcast (IPv6: the all-nodes group) and to the
// optional unicast peers.
type Transport struct {
	conn *net.UDPConn
	dsts []netip.AddrPort
}

// TransportConfig says where a Transport listens and sends.
type TransportConfig struct {
	Interface string
	Port      int
	// Broadcast is the destination of every message: the IPv4 subnet
	// broadcast, or ff02::1 for IPv6 (zone added here). Invalid: none.
	Broadcast netip.Addr
	// Peers are unicast destinations besides Broadcast.
	Peers []netip.Addr
}

// OpenTransport opens the socket.
func OpenTransport(ctx context.Context, cfg TransportConfig) (*Transport, error) {
	var serr error
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		err := c.Control(func(fd uintptr) {
			if serr = unix.SetsockoptString(int(fd), unix.SOL_SOCKET, unix.SO_BINDTODEVICE, cfg.Interface); serr != nil {
				serr = fmt.Errorf("SO_BINDTODEVICE %s: %w", cfg.Interface, serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_BROADCAST, 1); serr != nil {
				serr = fmt.Errorf("SO_BROADCAST: %w", serr)
				return
			}
			if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1); serr != nil {
				serr = fmt.Errorf("SO_REUSEADDR: %w", serr)
			}
		})
		return errors.Join(err, serr)
	}}
	pc, err := lc.ListenPacket(ctx, "udp", ":"+strconv.Itoa(cfg.Port))
	if err != nil {
		return nil, fmt.Errorf("opening the election socket on %s port %d: %w", cfg.Interface, cfg.Port, err)
	}
	t := &Transport{conn: pc.(*net.UDPConn)}
	port := uint16(cfg.Port)
	if b := cfg.Broadcast; b.IsValid() {
		if b.Is6() {
			b = b.WithZone(cfg.Interface)
		}
		t.dsts = append(t.dsts, netip.AddrPortFrom(b, port))
	}
	for _, p := range cfg.Peers {
		t.dsts = append(t.dsts, netip.AddrPortFrom(p, port))
	}
	return t, nil
}

// Send sends b to every destination; it returns the errors joined.
func (t *Transport) Send(b []byte) error {
	var errs []error
	for _, d := range t.dsts {
		if _, err := t.conn.WriteToUDPAddrPort(b, d); err != nil {
			errs = append(errs, fmt.Errorf("sending to %s: %w", d, err))
		}
	}
	return errors.Join(errs...)
}

// Receive reads one datagram into buf (at least MaxMessageSize+1 bytes, so
// that an oversized one shows as such) and returns its length and source.
func (t *Transport) Receive(buf []byte) (int, netip.AddrPort, error) {
	n, from, err := t.conn.ReadFromUDPAddrPort(buf)
	if err != nil {
		return 0, from, fmt.Errorf("reading the election socket: %w", err)
	}
	return n, from, nil
}

// Close closes the socket.
func (t *Transport) Close() error { return t.conn.Close() }

// Broadcast returns the IPv4 subnet broadcast address of p (p's last
// address), or the IPv6 all-nodes group for an IPv6 prefix.
func Broadcast(p netip.Prefix) netip.Addr {
	if p.Addr().Is6() {
		return netip.MustParseAddr("ff02::1")
	}
	a := p.Masked().Addr().As4()
	bits := p.Bits()
	for i := range 4 {
		for b := range 8 {
			if i*8+b >= bits {
				a[i] |= 0x80 >> b
			}
		}
	}
	return netip.AddrFrom4(a)
}
