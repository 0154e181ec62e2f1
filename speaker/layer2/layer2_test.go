package layer2

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/arp"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

const (
	// answerTimeout is how long to wait for an expected answer.
	answerTimeout = 2 * time.Second
	// silenceTimeout is how long to wait to conclude there is no answer.
	silenceTimeout = 400 * time.Millisecond
)

var (
	vip4     = netip.MustParseAddr("192.0.2.10")
	other4   = netip.MustParseAddr("192.0.2.11")
	vip6     = netip.MustParseAddr("2001:db8::10")
	other6   = netip.MustParseAddr("2001:db8::11")
	twinVIP6 = netip.MustParseAddr("2001:db8::5:0:10") // same solicited-node group as vip6
	staleMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x99}
	noGARP   = WithGratuitous(0, 0)
	fastGARP = WithGratuitous(3, 100*time.Millisecond)
)

// newResponder creates a Responder on A's veth end, closed at cleanup.
func newResponder(t *testing.T, tn *testNet, opts ...Option) *Responder {
	t.Helper()
	opts = append([]Option{WithLogger(testr.NewWithOptions(t, testr.Options{Verbosity: 1}))}, opts...)
	r, err := NewResponder(tn.ifiA, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// announce announces addr from namespace A (where the sockets must be
// opened).
func announce(t *testing.T, tn *testNet, r *Responder, addrs ...netip.Addr) {
	t.Helper()
	tn.inA(t, func() error {
		for _, a := range addrs {
			if err := r.Announce(a); err != nil {
				return err
			}
		}
		return nil
	})
}

func withdraw(t *testing.T, r *Responder, addrs ...netip.Addr) {
	t.Helper()
	for _, a := range addrs {
		if err := r.Withdraw(a); err != nil {
			t.Fatalf("Withdraw(%s): %v", a, err)
		}
	}
}

func wantAddresses(t *testing.T, r *Responder, want ...netip.Addr) {
	t.Helper()
	if got := r.Addresses(); !slices.Equal(got, want) {
		t.Errorf("Addresses() = %v, want %v", got, want)
	}
}

func wantHealthy(t *testing.T, r *Responder) {
	t.Helper()
	if err := r.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
}

func TestARP(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, noGARP)
	p := newProber(t, tn, unix.ETH_P_ARP)

	if got := p.arpResolve(t, ipB, vip4, nil, silenceTimeout); got != nil {
		t.Fatalf("before Announce: %s answered by %s", vip4, got)
	}
	announce(t, tn, r, vip4)
	announce(t, tn, r, vip4) // idempotent
	wantAddresses(t, r, vip4)

	t.Run("announced", func(t *testing.T) {
		if got := p.arpResolve(t, ipB, vip4, nil, answerTimeout); !bytes.Equal(got, tn.macA) {
			t.Errorf("ARP for %s: got %v, want %s", vip4, got, tn.macA)
		}
	})
	t.Run("unicast request", func(t *testing.T) {
		// Neighbor unreachability detection probes are unicast.
		if got := p.arpResolve(t, ipB, vip4, tn.macA, answerTimeout); !bytes.Equal(got, tn.macA) {
			t.Errorf("unicast ARP for %s: got %v, want %s", vip4, got, tn.macA)
		}
	})
	t.Run("probe", func(t *testing.T) {
		// RFC 5227 probe (sender IP 0.0.0.0): defended.
		if got := p.arpResolve(t, netip.IPv4Unspecified(), vip4, nil, answerTimeout); !bytes.Equal(got, tn.macA) {
			t.Errorf("ARP probe for %s: got %v, want %s", vip4, got, tn.macA)
		}
	})
	t.Run("not announced", func(t *testing.T) {
		if got := p.arpResolve(t, ipB, other4, nil, silenceTimeout); got != nil {
			t.Errorf("ARP for unannounced %s answered by %s", other4, got)
		}
	})
	t.Run("other host's unicast", func(t *testing.T) {
		// A request sent to another host's address is not ours to answer.
		mac := net.HardwareAddr{0x02, 1, 2, 3, 4, 5}
		if got := p.arpResolve(t, ipB, vip4, mac, silenceTimeout); got != nil {
			t.Errorf("ARP for %s sent to %s answered by %s", vip4, mac, got)
		}
	})
	t.Run("junk", func(t *testing.T) {
		// Malformed frames are ignored and do not break the responder.
		good := arpRequestFrame(t, tn.macB, ipB, vip4, net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})
		for _, f := range [][]byte{good[:20], good[:25], good[:40], append(slices.Clone(good[:14]), bytes.Repeat([]byte{0xff}, 46)...)} {
			p.send(t, f)
		}
		if got := p.arpResolve(t, ipB, vip4, nil, answerTimeout); !bytes.Equal(got, tn.macA) {
			t.Errorf("ARP for %s after junk: got %v, want %s", vip4, got, tn.macA)
		}
	})
	t.Run("kernel resolution", func(t *testing.T) {
		mustIP(t, "-n", tn.b, "neigh", "flush", "dev", vethName)
		sendUDP(t, tn.b, vip4)
		state := waitNeighbor(t, tn.b, vip4, tn.macA, answerTimeout)
		if state != "REACHABLE" {
			t.Errorf("neighbor %s in B: state %s, want REACHABLE", vip4, state)
		}
	})
	t.Run("withdrawn", func(t *testing.T) {
		withdraw(t, r, vip4)
		withdraw(t, r, vip4) // idempotent
		wantAddresses(t, r)
		if got := p.arpResolve(t, ipB, vip4, nil, silenceTimeout); got != nil {
			t.Errorf("ARP for withdrawn %s answered by %s", vip4, got)
		}
		mustIP(t, "-n", tn.b, "neigh", "flush", "dev", vethName)
		sendUDP(t, tn.b, vip4)
		time.Sleep(silenceTimeout)
		if ll, state := neighbor(t, tn.b, vip4); ll != "" {
			t.Errorf("B resolved withdrawn %s to %s (%s)", vip4, ll, state)
		}
	})
	t.Run("announced again", func(t *testing.T) {
		announce(t, tn, r, vip4)
		if got := p.arpResolve(t, ipB, vip4, nil, answerTimeout); !bytes.Equal(got, tn.macA) {
			t.Errorf("ARP for re-announced %s: got %v, want %s", vip4, got, tn.macA)
		}
	})
	wantHealthy(t, r)
}

// TestARPWithoutIPv4 checks that the interface needs no IPv4 address.
func TestARPWithoutIPv4(t *testing.T) {
	tn := newTestNet(t)
	mustIP(t, "-n", tn.a, "-4", "addr", "flush", "dev", vethName)
	r := newResponder(t, tn, noGARP)
	p := newProber(t, tn, unix.ETH_P_ARP)
	announce(t, tn, r, vip4)
	if got := p.arpResolve(t, ipB, vip4, nil, answerTimeout); !bytes.Equal(got, tn.macA) {
		t.Errorf("ARP for %s: got %v, want %s", vip4, got, tn.macA)
	}
	wantHealthy(t, r)
}

// sendUDP sends a datagram to addr from namespace ns, which makes its kernel
// resolve addr.
func sendUDP(t *testing.T, ns string, addr netip.Addr) {
	t.Helper()
	err := netrig.Do(ns, func() error {
		c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(addr, 9)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write([]byte("ironlb"))
		return err
	})
	if err != nil {
		t.Fatalf("send UDP to %s from %s: %v", addr, ns, err)
	}
}

func TestGratuitousARP(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, fastGARP)
	p := newProber(t, tn, unix.ETH_P_ARP)

	// B knows the VIP at another (the previous owner's) address.
	mustIP(t, "-n", tn.b, "neigh", "replace", vip4.String(), "lladdr", staleMAC.String(), "dev", vethName, "nud", "stale")

	start := time.Now()
	announce(t, tn, r, vip4)
	// The first round is sent by Announce: B's entry is updated right away.
	state := waitNeighbor(t, tn.b, vip4, tn.macA, 200*time.Millisecond)
	t.Logf("B's entry for %s is %s after %v (state %s)", vip4, tn.macA, time.Since(start), state)

	got := p.gratuitousARPs(t, vip4, tn.macA, 500*time.Millisecond)
	var ops []arp.Operation
	for _, g := range got {
		ops = append(ops, g.op)
	}
	// The first round may have been read before the prober started
	// collecting (it was sent before announce returned): the socket queued
	// it, so all 3 rounds (a request and a reply each) are seen.
	want := []arp.Operation{arp.OperationRequest, arp.OperationReply, arp.OperationRequest, arp.OperationReply, arp.OperationRequest, arp.OperationReply}
	if !slices.Equal(ops, want) {
		t.Fatalf("gratuitous ARPs: got %v, want %v", ops, want)
	}
	// Rounds 2 and 3 are read as they arrive (round 1 may have been queued).
	if gap := got[4].at.Sub(got[2].at); gap < 50*time.Millisecond {
		t.Errorf("rounds %v apart, want about 100ms", gap)
	}

	// Announcing again sends nothing.
	announce(t, tn, r, vip4)
	if got := p.gratuitousARPs(t, vip4, tn.macA, 300*time.Millisecond); len(got) != 0 {
		t.Errorf("announcing again sent %d gratuitous ARPs, want 0", len(got))
	}
	wantHealthy(t, r)
}

// TestWithdrawStopsGratuitous checks that Withdraw cancels the remaining
// rounds of gratuitous announcements.
func TestWithdrawStopsGratuitous(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, WithGratuitous(5, 150*time.Millisecond))
	p4 := newProber(t, tn, unix.ETH_P_ARP)
	p6 := newProber(t, tn, unix.ETH_P_IPV6)
	announce(t, tn, r, vip4, vip6)
	withdraw(t, r, vip4, vip6)
	if got := p4.gratuitousARPs(t, vip4, tn.macA, 800*time.Millisecond); len(got) != 2 {
		t.Errorf("got %d gratuitous ARPs, want 2 (one round)", len(got))
	}
	n := 0
	p6.read(t, 100*time.Millisecond, func(frame []byte) bool {
		if a, ok := parseNA(frame); ok && a.na.TargetAddress == vip6 && bytes.Equal(a.ethSrc, tn.macA) {
			n++
		}
		return false
	})
	if n != 1 {
		t.Errorf("got %d unsolicited NAs, want 1 (one round)", n)
	}
}

func TestNDP(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, noGARP)
	p := newProber(t, tn, unix.ETH_P_IPV6)

	wantNA := func(t *testing.T, a *advert, dst netip.Addr, solicited bool) {
		t.Helper()
		if a == nil {
			t.Fatalf("no Neighbor Advertisement for %s", vip6)
		}
		if !bytes.Equal(a.ethSrc, tn.macA) || !bytes.Equal(a.tlla(), tn.macA) {
			t.Errorf("advertisement from %s with target link-layer address %v, want %s", a.ethSrc, a.tlla(), tn.macA)
		}
		if a.dst != dst || a.na.Solicited != solicited || !a.na.Override || a.na.Router {
			t.Errorf("advertisement to %s, solicited %t, override %t, router %t; want to %s, solicited %t, override", a.dst, a.na.Solicited, a.na.Override, a.na.Router, dst, solicited)
		}
		if !a.src.IsLinkLocalUnicast() {
			t.Errorf("advertisement from %s, want a link-local address", a.src)
		}
	}

	if a := p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, nil), vip6, silenceTimeout); a != nil {
		t.Fatalf("before Announce: %s advertised by %s", vip6, a.ethSrc)
	}
	announce(t, tn, r, vip6)
	announce(t, tn, r, vip6)
	wantAddresses(t, r, vip6)

	t.Run("multicast", func(t *testing.T) {
		wantNA(t, p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, nil), vip6, answerTimeout), ip6B, true)
	})
	t.Run("from link-local", func(t *testing.T) {
		wantNA(t, p.solicit(t, nsFrame(t, tn.macB, tn.llB, vip6, nil), vip6, answerTimeout), tn.llB, true)
	})
	t.Run("unicast", func(t *testing.T) {
		// Neighbor unreachability detection: the kernel of A drops these
		// (the VIP is not local), the responder must answer them.
		wantNA(t, p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, tn.macA), vip6, answerTimeout), ip6B, true)
	})
	t.Run("DAD", func(t *testing.T) {
		a := p.solicit(t, nsFrame(t, tn.macB, netip.IPv6Unspecified(), vip6, nil), vip6, answerTimeout)
		wantNA(t, a, allNodes, false)
		if a != nil && !bytes.Equal(a.ethDst, multicastMAC(allNodes)) {
			t.Errorf("DAD answer sent to %s, want %s", a.ethDst, multicastMAC(allNodes))
		}
	})
	t.Run("invalid", func(t *testing.T) {
		good := nsFrame(t, tn.macB, ip6B, vip6, nil)
		hop := slices.Clone(good)
		hop[ethHeaderLen+7] = 64
		sum := slices.Clone(good)
		sum[icmpOffset+2] ^= 0xff
		for name, f := range map[string][]byte{"hop limit": hop, "checksum": sum, "truncated": good[:icmpOffset+10]} {
			if a := p.solicit(t, f, vip6, silenceTimeout); a != nil {
				t.Errorf("invalid solicitation (%s) answered", name)
			}
		}
	})
	t.Run("not announced", func(t *testing.T) {
		if a := p.solicit(t, nsFrame(t, tn.macB, ip6B, other6, nil), other6, silenceTimeout); a != nil {
			t.Errorf("solicitation for unannounced %s answered by %s", other6, a.ethSrc)
		}
	})
	t.Run("kernel resolution", func(t *testing.T) {
		mustIP(t, "-n", tn.b, "-6", "neigh", "flush", "dev", vethName)
		sendUDP(t, tn.b, vip6)
		state := waitNeighbor(t, tn.b, vip6, tn.macA, answerTimeout)
		if state != "REACHABLE" {
			t.Errorf("neighbor %s in B: state %s, want REACHABLE", vip6, state)
		}
	})
	t.Run("shared solicited-node group", func(t *testing.T) {
		group := "ff02::1:ff00:10"
		if !joined(t, tn.a, group) {
			t.Fatalf("A did not join %s", group)
		}
		announce(t, tn, r, twinVIP6)
		withdraw(t, r, twinVIP6)
		if !joined(t, tn.a, group) {
			t.Fatalf("withdrawing %s left %s, still needed for %s", twinVIP6, group, vip6)
		}
		wantNA(t, p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, nil), vip6, answerTimeout), ip6B, true)
	})
	t.Run("withdrawn", func(t *testing.T) {
		withdraw(t, r, vip6)
		withdraw(t, r, vip6)
		wantAddresses(t, r)
		if joined(t, tn.a, "ff02::1:ff00:10") {
			t.Errorf("solicited-node group of %s still joined after Withdraw", vip6)
		}
		if a := p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, nil), vip6, silenceTimeout); a != nil {
			t.Errorf("solicitation for withdrawn %s answered by %s", vip6, a.ethSrc)
		}
		if a := p.solicit(t, nsFrame(t, tn.macB, ip6B, vip6, tn.macA), vip6, silenceTimeout); a != nil {
			t.Errorf("unicast solicitation for withdrawn %s answered by %s", vip6, a.ethSrc)
		}
		mustIP(t, "-n", tn.b, "-6", "neigh", "flush", "dev", vethName)
		sendUDP(t, tn.b, vip6)
		time.Sleep(silenceTimeout)
		if ll, state := neighbor(t, tn.b, vip6); ll != "" {
			t.Errorf("B resolved withdrawn %s to %s (%s)", vip6, ll, state)
		}
	})
	wantHealthy(t, r)
}

// joined reports whether the interface in ns is in IPv6 multicast group g.
func joined(t *testing.T, ns, g string) bool {
	t.Helper()
	out := mustIP(t, "-n", ns, "-6", "maddr", "show", "dev", vethName)
	for _, f := range strings.Fields(out) {
		if f == g {
			return true
		}
	}
	return false
}

func TestUnsolicitedNA(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, fastGARP)
	p := newProber(t, tn, unix.ETH_P_IPV6)

	mustIP(t, "-n", tn.b, "-6", "neigh", "replace", vip6.String(), "lladdr", staleMAC.String(), "dev", vethName, "nud", "stale")
	start := time.Now()
	announce(t, tn, r, vip6)
	state := waitNeighbor(t, tn.b, vip6, tn.macA, 200*time.Millisecond)
	t.Logf("B's entry for %s is %s after %v (state %s)", vip6, tn.macA, time.Since(start), state)

	var got []*advert
	p.read(t, 500*time.Millisecond, func(frame []byte) bool {
		if a, ok := parseNA(frame); ok && a.na.TargetAddress == vip6 && bytes.Equal(a.ethSrc, tn.macA) {
			got = append(got, a)
		}
		return false
	})
	if len(got) != 3 {
		t.Fatalf("got %d unsolicited advertisements, want 3", len(got))
	}
	for _, a := range got {
		if a.dst != allNodes || a.na.Solicited || !a.na.Override || !bytes.Equal(a.tlla(), tn.macA) {
			t.Errorf("unsolicited advertisement to %s, solicited %t, override %t, target link-layer address %v", a.dst, a.na.Solicited, a.na.Override, a.tlla())
		}
	}
	wantHealthy(t, r)
}

func TestClose(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, WithGratuitous(100, 10*time.Millisecond))
	p := newProber(t, tn, unix.ETH_P_ARP)
	announce(t, tn, r, vip4, vip6)
	wantAddresses(t, r, vip4, vip6)

	if err := r.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n := responderGoroutines(); n != 0 {
		t.Errorf("%d goroutines of the responder still running after Close", n)
	}
	wantAddresses(t, r)
	if err := r.Err(); !errors.Is(err, ErrClosed) {
		t.Errorf("Err() after Close = %v, want ErrClosed", err)
	}
	tn.inA(t, func() error {
		if err := r.Announce(other4); !errors.Is(err, ErrClosed) {
			t.Errorf("Announce after Close = %v, want ErrClosed", err)
		}
		return nil
	})
	if err := r.Withdraw(vip4); err != nil {
		t.Errorf("Withdraw after Close = %v, want nil", err)
	}
	if got := p.arpResolve(t, ipB, vip4, nil, silenceTimeout); got != nil {
		t.Errorf("ARP for %s answered by %s after Close", vip4, got)
	}
}

// responderGoroutines counts the goroutines running Responder code.
func responderGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "layer2.(*Responder).") && !strings.Contains(g, "layer2.responderGoroutines") {
			n++
		}
	}
	return n
}

// TestConcurrent announces and withdraws concurrently while being queried.
func TestConcurrent(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, WithGratuitous(2, 5*time.Millisecond))
	p := newProber(t, tn, unix.ETH_P_ARP)
	addrs := []netip.Addr{}
	for i := range 8 {
		addrs = append(addrs, netip.AddrFrom4([4]byte{192, 0, 2, byte(100 + i)}), netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: byte(100 + i)}))
	}
	errc := make(chan error, len(addrs))
	for _, a := range addrs {
		go func() {
			errc <- netrig.Do(tn.a, func() error {
				for range 20 {
					if err := r.Announce(a); err != nil {
						return err
					}
					if err := r.Withdraw(a); err != nil {
						return err
					}
				}
				return r.Announce(a)
			})
		}()
	}
	for range addrs {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	want := slices.Clone(addrs)
	slices.SortFunc(want, netip.Addr.Compare)
	wantAddresses(t, r, want...)
	if got := p.arpResolve(t, ipB, addrs[0], nil, answerTimeout); !bytes.Equal(got, tn.macA) {
		t.Errorf("ARP for %s: got %v, want %s", addrs[0], got, tn.macA)
	}
	wantHealthy(t, r)
}

// TestInterfaceGone checks that Err reports a broken interface.
func TestInterfaceGone(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, noGARP)
	announce(t, tn, r, vip4, vip6)
	wantHealthy(t, r)
	mustIP(t, "-n", tn.a, "link", "del", vethName)
	deadline := time.Now().Add(answerTimeout)
	for r.Err() == nil {
		if time.Now().After(deadline) {
			t.Fatal("Err() still nil after the interface was deleted")
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("Err() = %v", r.Err())
}
