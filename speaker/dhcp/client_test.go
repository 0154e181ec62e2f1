package dhcp

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/packet"
)

// fakeConn is the Client's seam: what the Client writes goes to out, what
// the test puts in in is read.
type fakeConn struct {
	in        chan sent
	out       chan sent
	closeOnce sync.Once
	closed    chan struct{}
}

type sent struct {
	pkt []byte
	mac net.HardwareAddr
}

func newFakeConn() *fakeConn {
	return &fakeConn{in: make(chan sent, 64), out: make(chan sent, 64), closed: make(chan struct{})}
}

func (f *fakeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case s := <-f.in:
		return copy(b, s.pkt), &packet.Addr{HardwareAddr: s.mac}, nil
	case <-f.closed:
		return 0, nil, net.ErrClosed
	}
}

func (f *fakeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-f.closed:
		return 0, net.ErrClosed
	default:
	}
	f.out <- sent{pkt: bytes.Clone(b), mac: addr.(*packet.Addr).HardwareAddr}
	return len(b), nil
}

func (f *fakeConn) Close() error {
	f.closeOnce.Do(func() { close(f.closed) })
	return nil
}
func (f *fakeConn) LocalAddr() net.Addr              { return &packet.Addr{HardwareAddr: testMAC} }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }

var serverMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 1}

// next returns the next message the Client sent, with its IP addresses.
func (f *fakeConn) next(t *testing.T) (*message, netip.Addr, netip.Addr, net.HardwareAddr) {
	t.Helper()
	select {
	case s := <-f.out:
		m, err := parseMessage(s.pkt[28:], opRequest)
		if err != nil {
			t.Fatalf("the client sent a bad message: %v", err)
		}
		return m, netip.AddrFrom4([4]byte(s.pkt[12:16])), netip.AddrFrom4([4]byte(s.pkt[16:20])), s.mac
	case <-time.After(5 * time.Second):
		t.Fatal("the client sent nothing")
	}
	return nil, netip.Addr{}, netip.Addr{}, nil
}

// reply sends m (a BOOTREPLY) to the client from srvAddr.
func (f *fakeConn) reply(t *testing.T, m *message) {
	t.Helper()
	m.Op = opReply
	b, err := m.marshal()
	if err != nil {
		t.Fatal(err)
	}
	f.in <- sent{pkt: reverse(buildPacket(srvAddr, broadcastIPv4, b)), mac: serverMAC}
}

func replyTo(req *message, typ messageType, yiaddr netip.Addr, opts map[uint8][]byte) *message {
	m := &message{Xid: req.Xid, YIAddr: yiaddr, CHAddr: req.CHAddr, Flags: req.Flags, Type: typ, Options: map[uint8][]byte{}}
	for k, v := range opts {
		m.Options[k] = v
	}
	return m
}

var ackOpts = map[uint8][]byte{optServerID: srvAddr.AsSlice(), optLeaseTime: {0, 0, 0, 60}, optSubnetMask: {255, 255, 255, 0}}

func TestClientAcquireHostile(t *testing.T) {
	fc := newFakeConn()
	c := New(nil, fc, WithRetransmit(time.Second, time.Second, 0))
	defer c.Close()
	req := Request{ClientID: []byte{0, 's', 'v', 'c'}, Hostname: "svc"}
	type result struct {
		l   Lease
		err error
	}
	done := make(chan result, 1)
	go func() {
		l, err := c.Acquire(context.Background(), req)
		done <- result{l, err}
	}()

	disc, src, dst, mac := fc.next(t)
	if disc.Type != msgDiscover || disc.Flags != flagBroadcast || !bytes.Equal(disc.CHAddr, HardwareAddr(req.ClientID)) ||
		src != netip.IPv4Unspecified() || dst != broadcastIPv4 || !bytes.Equal(mac, broadcastMAC) {
		t.Fatalf("DISCOVER %+v from %v to %v at %v", disc, src, dst, mac)
	}
	if diff := cmp.Diff(map[uint8][]byte{
		optClientID: req.ClientID, optHostname: []byte("svc"),
		optParamRequest: {1, 3, 51, 54, 58, 59}, optMaxMsgSize: {0x05, 0xdc},
	}, disc.Options); diff != "" {
		t.Errorf("DISCOVER options (-want +got):\n%s", diff)
	}
	// Hostile or foreign replies first: all ignored.
	fc.in <- sent{pkt: []byte{0x45, 0, 0}, mac: serverMAC}
	bad := replyTo(disc, msgOffer, vip, ackOpts)
	bad.CHAddr = testMAC
	fc.reply(t, bad)
	bad = replyTo(disc, msgOffer, vip, ackOpts)
	bad.Xid++
	fc.reply(t, bad)
	bad = replyTo(disc, msgOffer, vip, map[uint8][]byte{optServerID: srvAddr.AsSlice(), optClientID: {9}})
	fc.reply(t, bad)
	fc.reply(t, replyTo(disc, msgOffer, netip.MustParseAddr("224.0.0.1"), ackOpts))
	fc.reply(t, replyTo(disc, msgOffer, vip, map[uint8][]byte{optLeaseTime: {0, 0, 0, 60}})) // no server id
	fc.reply(t, replyTo(disc, msgOffer, vip, ackOpts))

	r, _, _, _ := fc.next(t)
	if r.Type != msgRequest || r.Xid != disc.Xid {
		t.Fatalf("want a REQUEST with the DISCOVER's xid, got %+v", r)
	}
	if !bytes.Equal(r.Options[optRequestedIP], vip.AsSlice()) || !bytes.Equal(r.Options[optServerID], srvAddr.AsSlice()) {
		t.Errorf("REQUEST options %v", r.Options)
	}
	fc.reply(t, replyTo(r, msgAck, netip.MustParseAddr("192.0.2.77"), ackOpts)) // another address: ignored
	fc.reply(t, replyTo(r, msgAck, vip, ackOpts))
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	want := Lease{Addr: vip, Mask: netip.MustParsePrefix("192.0.2.0/24"), Server: srvAddr, ServerMAC: serverMAC,
		Duration: time.Minute, Renew: 30 * time.Second, Rebind: 52500 * time.Millisecond}
	if diff := cmp.Diff(want, res.l, cmpAddr, cmpPrefix); diff != "" {
		t.Errorf("lease (-want +got):\n%s", diff)
	}

	// Release: unicast from the VIP to the server's MAC.
	if err := c.Release(context.Background(), req, res.l); err != nil {
		t.Fatal(err)
	}
	rel, src, dst, mac := fc.next(t)
	if rel.Type != msgRelease || rel.CIAddr != vip || src != vip || dst != srvAddr || !bytes.Equal(mac, serverMAC) ||
		!bytes.Equal(rel.Options[optServerID], srvAddr.AsSlice()) {
		t.Errorf("RELEASE %+v from %v to %v at %v", rel, src, dst, mac)
	}
	// Decline: broadcast.
	if err := c.Decline(context.Background(), req, res.l); err != nil {
		t.Fatal(err)
	}
	dec, _, dst, mac := fc.next(t)
	if dec.Type != msgDecline || dst != broadcastIPv4 || !bytes.Equal(mac, broadcastMAC) || !bytes.Equal(dec.Options[optRequestedIP], vip.AsSlice()) {
		t.Errorf("DECLINE %+v to %v at %v", dec, dst, mac)
	}
}

func TestClientRenewNAK(t *testing.T) {
	fc := newFakeConn()
	c := New(nil, fc)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Renew(context.Background(), Request{ClientID: []byte{1}, Requested: vip})
		errc <- err
	}()
	r, _, _, _ := fc.next(t)
	if r.Type != msgRequest || r.CIAddr != netip.IPv4Unspecified() || r.Options[optServerID] != nil ||
		!bytes.Equal(r.Options[optRequestedIP], vip.AsSlice()) || r.Flags != flagBroadcast {
		t.Fatalf("INIT-REBOOT REQUEST %+v", r)
	}
	fc.reply(t, replyTo(r, msgNak, netip.IPv4Unspecified(), map[uint8][]byte{optServerID: srvAddr.AsSlice(), optMessage: []byte("go\naway\x00")}))
	err := <-errc
	var nak *NAKError
	if !errors.Is(err, ErrNAK) || !errors.As(err, &nak) || nak.Message != "go?away" || nak.Server != srvAddr {
		t.Fatalf("Renew: %v (%+v), want a NAKError from %v with message %q", err, nak, srvAddr, "go?away")
	}
}

func TestClientNotRequested(t *testing.T) {
	fc := newFakeConn()
	c := New(nil, fc)
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		_, err := c.Acquire(context.Background(), Request{ClientID: []byte{1}, Requested: vip})
		errc <- err
	}()
	d, _, _, _ := fc.next(t)
	if !bytes.Equal(d.Options[optRequestedIP], vip.AsSlice()) {
		t.Errorf("DISCOVER without option 50: %v", d.Options)
	}
	other := netip.MustParseAddr("192.0.2.101")
	fc.reply(t, replyTo(d, msgOffer, other, ackOpts))
	err := <-errc
	var nr *NotRequestedError
	if !errors.As(err, &nr) || !errors.Is(err, ErrNotRequested) || nr.Offered != other || nr.Requested != vip {
		t.Fatalf("Acquire: %v", err)
	}
	select {
	case s := <-fc.out:
		t.Errorf("sent after the unwanted offer: % x", s.pkt)
	default:
	}
}

func TestClientRetransmitBusyClose(t *testing.T) {
	fc := newFakeConn()
	c := New(nil, fc, WithRetransmit(10*time.Millisecond, 20*time.Millisecond, 4), WithMaxExchanges(1))
	start := time.Now()
	_, err := c.Acquire(context.Background(), Request{ClientID: []byte{1}})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Acquire: %v, want ErrNoAnswer", err)
	}
	if len(fc.out) != 4 {
		t.Errorf("sent %d DISCOVERs, want 4", len(fc.out))
	}
	if d := time.Since(start); d < 70*time.Millisecond {
		t.Errorf("gave up after %v, want 10+20+20+20 ms", d)
	}
	for len(fc.out) > 0 {
		<-fc.out
	}

	// A context that ends.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Millisecond)
	defer cancel()
	if _, err := c.Acquire(ctx, Request{ClientID: []byte{1}}); !errors.Is(err, ErrNoAnswer) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Acquire with a short context: %v", err)
	}

	// One exchange at most: the second is busy; Close ends the first.
	fc2 := newFakeConn()
	c2 := New(nil, fc2, WithMaxExchanges(1))
	errc := make(chan error, 1)
	go func() {
		_, err := c2.Acquire(context.Background(), Request{ClientID: []byte{1}})
		errc <- err
	}()
	fc2.next(t) // the first exchange has begun
	if _, err := c2.Acquire(context.Background(), Request{ClientID: []byte{2}}); !errors.Is(err, ErrBusy) {
		t.Fatalf("second Acquire: %v, want ErrBusy", err)
	}
	c2.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire at Close: %v, want ErrClosed", err)
	}
	if _, err := c2.Acquire(context.Background(), Request{ClientID: []byte{1}}); !errors.Is(err, ErrClosed) {
		t.Errorf("Acquire after Close: %v, want ErrClosed", err)
	}
	c.Close()
}
