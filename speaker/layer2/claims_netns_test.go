package layer2

import (
	"bytes"
	"net"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/sys/unix"
)

// claimRecorder collects the claims passed to the WithClaims callback.
type claimRecorder struct {
	ch chan Claim
}

func newClaimRecorder() (*claimRecorder, Option) {
	cr := &claimRecorder{ch: make(chan Claim, 10000)}
	return cr, WithClaims(func(c Claim) {
		select {
		case cr.ch <- c:
		default:
			panic("claim recorder full")
		}
	})
}

// next returns the next claim, failing the test if none comes within
// answerTimeout.
func (cr *claimRecorder) next(t *testing.T) Claim {
	t.Helper()
	select {
	case c := <-cr.ch:
		return c
	case <-time.After(answerTimeout):
		t.Fatal("no claim reported")
		return Claim{}
	}
}

// withoutTime returns c with At cleared, checking it is recent.
func withoutTime(t *testing.T, c Claim) Claim {
	t.Helper()
	if c.At.IsZero() || time.Since(c.At) > time.Minute {
		t.Errorf("claim of %s received at %v", c.Addr, c.At)
	}
	c.At = time.Time{}
	return c
}

// TestClaims checks that the frames of another host claiming an announced
// address reach the callback with that host's MAC, and that our own
// gratuitous announcements, other hosts' probes of announced addresses and
// claims of addresses not announced do not.
func TestClaims(t *testing.T) {
	tn := newTestNet(t)
	cr, withClaims := newClaimRecorder()
	r := newResponder(t, tn, fastGARP, withClaims)
	p4 := newProber(t, tn, unix.ETH_P_ARP)
	p6 := newProber(t, tn, unix.ETH_P_IPV6)

	// Our own gratuitous announcements: wait until B has received all of
	// them (3 rounds of 2 ARPs, 3 NAs); the claims below then come after
	// them in the callback's queue.
	announce(t, tn, r, vip4, vip6)
	seen := 0
	if !p4.read(t, answerTimeout, func(frame []byte) bool {
		if f, a, ok := parseARP(frame); ok && bytes.Equal(f.Source, tn.macA) && a.SenderIP == vip4 && a.TargetIP == vip4 {
			seen++
		}
		return seen == 6
	}) {
		t.Fatalf("saw %d of our 6 gratuitous ARPs", seen)
	}
	seen = 0
	if !p6.read(t, answerTimeout, func(frame []byte) bool {
		if a, ok := parseNA(frame); ok && bytes.Equal(a.ethSrc, tn.macA) && a.na.TargetAddress == vip6 {
			seen++
		}
		return seen == 3
	}) {
		t.Fatalf("saw %d of our 3 unsolicited NAs", seen)
	}

	zero := make(net.HardwareAddr, 6)
	macB := tn.macB
	addr4 := func(i byte) netip.Addr { return netip.AddrFrom4([4]byte{192, 0, 2, 100 + i}) }
	addr6 := func(i byte) netip.Addr { return netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 100 + i}) }
	snm := func(a netip.Addr) netip.Addr { g, _ := ndp.SolicitedNodeMulticast(a); return g }
	// Each case uses its own address (claims of one address are coalesced
	// over 100 ms).
	for i, c := range []struct {
		name  string
		addr  netip.Addr
		frame func(a netip.Addr) []byte
		want  ClaimKind // "": no claim
	}{
		{"gratuitous ARP", vip4, func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationRequest, macB, a, zero, a, macB, ethernet.Broadcast)
		}, ClaimARPRequest},
		{"unsolicited NA", vip6, func(a netip.Addr) []byte {
			return ipv6Frame(t, macB, multicastMAC(allNodes), tn.llB, allNodes, &ndp.NeighborAdvertisement{
				TargetAddress: a, Override: true,
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: macB}},
			})
		}, ClaimNA},
		{"gratuitous ARP reply", addr4(1), func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationReply, macB, a, macB, a, macB, ethernet.Broadcast)
		}, ClaimARPReply},
		{"ARP request from the address", addr4(2), func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationRequest, macB, a, zero, ipA, macB, ethernet.Broadcast)
		}, ClaimARPRequest},
		{"NS from the address", addr6(3), func(a netip.Addr) []byte {
			return nsFrame(t, macB, a, ip6A, nil)
		}, ClaimNS},
		{"ARP probe of an announced address", addr4(4), func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationRequest, macB, netip.IPv4Unspecified(), zero, a, macB, ethernet.Broadcast)
		}, ""},
		{"DAD of an announced address", addr6(5), func(a netip.Addr) []byte {
			return nsFrame(t, macB, netip.IPv6Unspecified(), a, nil)
		}, ""},
		{"ARP request for an announced address", addr4(6), func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationRequest, macB, ipB, zero, a, macB, ethernet.Broadcast)
		}, ""},
		{"gratuitous ARP with our MAC as sender", addr4(7), func(a netip.Addr) []byte {
			return arpFrame(t, arp.OperationRequest, tn.macA, a, zero, a, macB, ethernet.Broadcast)
		}, ""},
		{"NA with our MAC as target link-layer address", addr6(8), func(a netip.Addr) []byte {
			return ipv6Frame(t, macB, multicastMAC(allNodes), tn.llB, allNodes, &ndp.NeighborAdvertisement{
				TargetAddress: a, Override: true,
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: tn.macA}},
			})
		}, ""},
		{"NA to the solicited-node group with hop limit 64", addr6(9), func(a netip.Addr) []byte {
			f := ipv6Frame(t, macB, multicastMAC(snm(a)), tn.llB, snm(a), &ndp.NeighborAdvertisement{TargetAddress: a})
			f[ethHeaderLen+7] = 64
			return f
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.addr != vip4 && c.addr != vip6 {
				announce(t, tn, r, c.addr)
			}
			// And a gratuitous ARP for a claimed address not announced.
			unannounced := netip.AddrFrom4([4]byte{192, 0, 2, 200 + byte(i)})
			p4.send(t, arpFrame(t, arp.OperationRequest, macB, unannounced, zero, unannounced, macB, ethernet.Broadcast))
			frame := c.frame(c.addr)
			if c.addr.Is4() {
				p4.send(t, frame)
			} else {
				p6.send(t, frame)
			}
			want := Claim{Addr: c.addr, MAC: macB, Kind: c.want}
			if c.want == "" {
				// The signal that the frame was handled: a claim sent
				// after it through the same socket.
				marker := netip.AddrFrom4([4]byte{192, 0, 2, 150 + byte(i)})
				if c.addr.Is6() {
					marker = netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 15: 150 + byte(i)})
				}
				announce(t, tn, r, marker)
				if c.addr.Is4() {
					p4.send(t, arpFrame(t, arp.OperationRequest, macB, marker, zero, marker, macB, ethernet.Broadcast))
					want = Claim{Addr: marker, MAC: macB, Kind: ClaimARPRequest}
				} else {
					p6.send(t, nsFrame(t, macB, marker, ip6A, nil))
					want = Claim{Addr: marker, MAC: macB, Kind: ClaimNS}
				}
			}
			if diff := cmp.Diff(want, withoutTime(t, cr.next(t)), equateAddrs); diff != "" {
				t.Errorf("claim (-want +got):\n%s", diff)
			}
		})
	}
	select {
	case c := <-cr.ch:
		t.Errorf("unexpected claim %+v", c)
	default:
	}
	if got := r.ClaimStats(); got != (ClaimStats{}) {
		t.Errorf("ClaimStats() = %+v, want zero", got)
	}
	wantHealthy(t, r)
}

// TestClaimFlood floods the Responder with claims (gratuitous ARP and
// unsolicited NAs from B, for announced addresses and others): the callback
// gets at most one claim per address per 100 ms and the coalescing table
// stays within the number of announced addresses.
func TestClaimFlood(t *testing.T) {
	tn := newTestNet(t)
	var (
		mu    sync.Mutex
		calls = make(map[netip.Addr]int)
	)
	// The markers, claimed after the flood through each socket, are
	// delivered after every claim of the flood.
	marker4, marker6 := netip.MustParseAddr("192.0.2.250"), netip.MustParseAddr("2001:db8::fa")
	markers := make(chan netip.Addr, 100)
	r := newResponder(t, tn, noGARP, WithClaims(func(c Claim) {
		if c.Addr == marker4 || c.Addr == marker6 {
			markers <- c.Addr
			return
		}
		mu.Lock()
		calls[c.Addr]++
		mu.Unlock()
	}))
	p4 := newProber(t, tn, unix.ETH_P_ARP)
	p6 := newProber(t, tn, unix.ETH_P_IPV6)

	const announced, others, frames = 8, 100, 20000
	var addrs []netip.Addr
	for i := range announced + others {
		addrs = append(addrs,
			netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}),
			netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 14: byte(i >> 8), 15: byte(i)}))
	}
	announce(t, tn, r, addrs[:2*announced]...)
	announce(t, tn, r, marker4, marker6)
	announce(t, tn, r, marker4, marker6)
	zero := make(net.HardwareAddr, 6)
	var arps, nas [][]byte
	for _, a := range addrs {
		if a.Is4() {
			arps = append(arps, arpFrame(t, arp.OperationRequest, tn.macB, a, zero, a, tn.macB, ethernet.Broadcast))
		} else {
			nas = append(nas, ipv6Frame(t, tn.macB, multicastMAC(allNodes), tn.llB, allNodes, &ndp.NeighborAdvertisement{
				TargetAddress: a, Override: true,
				Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: tn.macB}},
			}))
		}
	}

	start := time.Now()
	for i := range frames / 2 {
		// Announced addresses more often than the others.
		j := i % (2 * announced)
		if i%3 == 0 {
			j = i % len(arps)
		}
		p4.send(t, arps[j])
		p6.send(t, nas[j])
	}
	sent := time.Since(start)
	// The sockets' receive buffers may still be full: send the markers
	// until they get through.
	deadline := time.Now().Add(answerTimeout)
	for got := map[netip.Addr]bool{}; len(got) < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("marker claims not reported (got %v)", got)
		}
		if !got[marker4] {
			p4.send(t, arpFrame(t, arp.OperationRequest, tn.macB, marker4, zero, marker4, tn.macB, ethernet.Broadcast))
		}
		if !got[marker6] {
			p6.send(t, nsFrame(t, tn.macB, marker6, ip6A, nil))
		}
		select {
		case a := <-markers:
			got[a] = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	elapsed := time.Since(start)
	limit := int(elapsed/claimWindow) + 1

	mu.Lock()
	defer mu.Unlock()
	total := 0
	for a, n := range calls {
		total += n
		if !slices.Contains(addrs[:2*announced], a) {
			t.Errorf("claim of %s, not announced, reported %d times", a, n)
		}
		if n > limit {
			t.Errorf("claim of %s reported %d times in %v, want at most %d", a, n, elapsed, limit)
		}
	}
	if total == 0 {
		t.Error("no claim reported")
	}
	if n := r.claims.tableLen(); n > 2*announced+2 {
		t.Errorf("coalescing table holds %d addresses, want at most %d (announced)", n, 2*announced+2)
	}
	stats := r.ClaimStats()
	t.Logf("%d frames sent in %v; %d calls for %d addresses within %v (at most %d each); %+v", frames, sent, total, len(calls), elapsed, limit, stats)
	if stats.Coalesced == 0 {
		t.Error("no claim coalesced")
	}
}
