package bfd

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// TestKernelNetLoopback runs a Server on real sockets against a hand-made
// peer on 127.0.0.2:3784 and checks the TTL rules of RFC 5881.
func TestKernelNetLoopback(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
		return serr
	}}
	pc, err := lc.ListenPacket(context.Background(), "udp4", "127.0.0.2:3784")
	if errors.Is(err, syscall.EADDRINUSE) {
		t.Skipf("port 3784 busy: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	peer := ipv4.NewPacketConn(pc)
	if err := peer.SetControlMessage(ipv4.FlagTTL|ipv4.FlagDst, true); err != nil {
		t.Fatal(err)
	}

	changes := make(chan Status, 100)
	s := NewServer(WithNet(kernelNet{reuseAddr: true}), WithOnChange(func(st Status) { changes <- st }))
	defer s.Close()
	cfg := Config{Peer: netip.MustParseAddr("127.0.0.2"), Local: netip.MustParseAddr("127.0.0.1"),
		DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 50 * time.Millisecond, DetectMultiplier: 3}
	if err := s.Configure(context.Background(), []Config{cfg}); err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			t.Skipf("port 3784 busy: %v", err)
		}
		t.Fatal(err)
	}
	discr := s.Sessions()[0].LocalDiscr

	// The Server's packet: TTL 255, from 127.0.0.1 and a port in 49152–65535.
	buf := make([]byte, 1500)
	pc.SetReadDeadline(time.Now().Add(waitLimit))
	n, cm, src, err := peer.ReadFrom(buf)
	if err != nil {
		t.Fatalf("no packet from the Server: %v", err)
	}
	from := src.(*net.UDPAddr).AddrPort()
	if cm == nil || cm.TTL != 255 {
		t.Errorf("control message %v, want TTL 255", cm)
	}
	if from.Addr().Unmap() != cfg.Local || from.Port() < srcPortMin {
		t.Errorf("packet from %s, want 127.0.0.1 and a port in 49152-65535", from)
	}
	p, err := parsePacket(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	if p.State != Down || p.MyDiscr != discr || p.YourDiscr != 0 || p.DesiredMinTx != time.Second {
		t.Errorf("first packet %+v", p)
	}

	// A packet with TTL 254 is ignored; the same with TTL 255 is accepted.
	server := net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:3784"))
	send := func(ttl int, myDiscr uint32) {
		t.Helper()
		if err := peer.SetTTL(ttl); err != nil {
			t.Fatal(err)
		}
		b := appendPacket(nil, &packet{State: Down, DetectMult: 3, MyDiscr: myDiscr,
			DesiredMinTx: time.Second, RequiredMinRx: 50 * time.Millisecond})
		if _, err := peer.WriteTo(b, nil, server); err != nil {
			t.Fatal(err)
		}
	}
	send(254, 111)
	send(255, 222)
	select {
	case st := <-changes:
		if st.State != Init || st.RemoteDiscr != 222 {
			t.Errorf("first change %s from remote discriminator %d, want Init from 222 (the TTL 254 packet was accepted?)", st.State, st.RemoteDiscr)
		}
	case <-time.After(waitLimit):
		t.Fatal("the session did not leave Down")
	}
	if got := s.dropTTL.Load(); got != 1 {
		t.Errorf("%d packets dropped for their TTL, want 1", got)
	}
}
