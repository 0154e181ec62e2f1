package layer2

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/sys/unix"

	"github.com/ironlb/ironlb/test/netrig"
)

// probe runs r.Probe in namespace A (where the sockets must be opened).
func probe(t testing.TB, tn *testNet, r *Responder, addrs ...netip.Addr) map[netip.Addr]Claim {
	t.Helper()
	var got map[netip.Addr]Claim
	tn.inA(t, func() error {
		var err error
		got, err = r.Probe(context.Background(), addrs)
		return err
	})
	return got
}

// claimsWithoutTime returns the claims of m with At cleared.
func claimsWithoutTime(t *testing.T, m map[netip.Addr]Claim) map[netip.Addr]Claim {
	t.Helper()
	out := make(map[netip.Addr]Claim, len(m))
	for a, c := range m {
		out[a] = withoutTime(t, c)
	}
	return out
}

// TestProbeFree probes addresses no host uses: no claim.
func TestProbeFree(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, noGARP)
	for _, c := range []struct {
		name  string
		addrs []netip.Addr
	}{
		{"IPv4", []netip.Addr{netip.MustParseAddr("192.0.2.20")}},
		{"IPv6", []netip.Addr{netip.MustParseAddr("2001:db8::20")}},
		{"both, and an announced address", []netip.Addr{netip.MustParseAddr("192.0.2.21"), netip.MustParseAddr("2001:db8::21"), vip4}},
	} {
		t.Run(c.name, func(t *testing.T) {
			announce(t, tn, r, vip4) // our own answers are not claims
			start := time.Now()
			got := probe(t, tn, r, c.addrs...)
			t.Logf("probe took %v", time.Since(start))
			if len(got) != 0 {
				t.Errorf("Probe(%v) = %v, want no claim", c.addrs, got)
			}
		})
	}
	wantAddresses(t, r, vip4) // Probe announces nothing
	if n := len(r.probing); n != 0 {
		t.Errorf("%d addresses still registered as probed", n)
	}
	wantHealthy(t, r)
}

// TestProbeInUse probes addresses that B's kernel holds: B answers the ARP
// probe with a reply, the DAD solicitation with an advertisement.
func TestProbeInUse(t *testing.T) {
	tn := newTestNet(t)
	used4, used6 := netip.MustParseAddr("192.0.2.30"), netip.MustParseAddr("2001:db8::30")
	mustIP(t, "-n", tn.b, "addr", "add", used4.String()+"/32", "dev", vethName)
	mustIP(t, "-n", tn.b, "addr", "add", used6.String()+"/128", "dev", vethName, "nodad")
	// A long wait: Probe returns as soon as every address is claimed, and a
	// loaded machine may take a while to read the answer.
	r := newResponder(t, tn, noGARP, WithProbe(DefaultProbeRounds, DefaultProbeInterval, 5*time.Second))
	for _, c := range []struct {
		name  string
		addrs []netip.Addr
		want  map[netip.Addr]Claim
	}{
		{"IPv4", []netip.Addr{used4}, map[netip.Addr]Claim{used4: {Addr: used4, MAC: tn.macB, Kind: ClaimARPReply}}},
		{"IPv6", []netip.Addr{used6}, map[netip.Addr]Claim{used6: {Addr: used6, MAC: tn.macB, Kind: ClaimNA}}},
		{"both, given twice", []netip.Addr{used6, used4, used4, netip.MustParseAddr("::ffff:192.0.2.30")}, map[netip.Addr]Claim{
			used4: {Addr: used4, MAC: tn.macB, Kind: ClaimARPReply},
			used6: {Addr: used6, MAC: tn.macB, Kind: ClaimNA},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := probe(t, tn, r, c.addrs...)
			if diff := cmp.Diff(c.want, claimsWithoutTime(t, got), equateAddrs); diff != "" {
				t.Errorf("Probe(%v) (-want +got):\n%s", c.addrs, diff)
			}
		})
	}
	wantHealthy(t, r)
}

// TestProbeSimultaneous checks that another host probing an address at the
// same time is a conflict.
func TestProbeSimultaneous(t *testing.T) {
	tn := newTestNet(t)
	// Probe waits long, and returns once both addresses are claimed.
	r := newResponder(t, tn, noGARP, WithProbe(1, 0, time.Minute))
	p4 := newProber(t, tn, unix.ETH_P_ARP)
	p6 := newProber(t, tn, unix.ETH_P_IPV6)
	a4, a6 := netip.MustParseAddr("192.0.2.40"), netip.MustParseAddr("2001:db8::40")

	type result struct {
		claims map[netip.Addr]Claim
		err    error
	}
	done := make(chan result, 1)
	go func() {
		var res result
		res.err = netrig.Do(tn.a, func() error {
			var err error
			res.claims, err = r.Probe(context.Background(), []netip.Addr{a4, a6})
			return err
		})
		done <- res
	}()
	// Our probes reach B (so Probe is collecting): B probes the same
	// addresses.
	if !p4.read(t, answerTimeout, func(frame []byte) bool {
		f, a, ok := parseARP(frame)
		ok = ok && bytes.Equal(f.Source, tn.macA) && bytes.Equal(f.Destination, ethernet.Broadcast) &&
			a.Operation == arp.OperationRequest && a.SenderIP == netip.IPv4Unspecified() && a.TargetIP == a4 &&
			bytes.Equal(a.SenderHardwareAddr, tn.macA) && bytes.Equal(a.TargetHardwareAddr, make(net.HardwareAddr, 6))
		return ok
	}) {
		t.Fatal("B saw no ARP probe")
	}
	if !p6.read(t, answerTimeout, func(frame []byte) bool {
		ns, ok := parseNS(frame, tn.macB)
		return ok && bytes.Equal(frame[6:12], tn.macA) && ns.src.IsUnspecified() && ns.target == a6
	}) {
		t.Fatal("B saw no DAD probe")
	}
	p4.send(t, arpFrame(t, arp.OperationRequest, tn.macB, netip.IPv4Unspecified(), make(net.HardwareAddr, 6), a4, tn.macB, ethernet.Broadcast))
	p6.send(t, nsFrame(t, tn.macB, netip.IPv6Unspecified(), a6, nil))

	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	want := map[netip.Addr]Claim{
		a4: {Addr: a4, MAC: tn.macB, Kind: ClaimARPProbe},
		a6: {Addr: a6, MAC: tn.macB, Kind: ClaimDAD},
	}
	if diff := cmp.Diff(want, claimsWithoutTime(t, res.claims), equateAddrs); diff != "" {
		t.Errorf("Probe (-want +got):\n%s", diff)
	}
}

// TestProbeMany probes 1,000 addresses in one call, two of which B holds.
func TestProbeMany(t *testing.T) {
	tn := newTestNet(t)
	used4, used6 := netip.MustParseAddr("198.51.100.77"), netip.MustParseAddr("2001:db8::1:77")
	mustIP(t, "-n", tn.b, "addr", "add", used4.String()+"/32", "dev", vethName)
	mustIP(t, "-n", tn.b, "addr", "add", used6.String()+"/128", "dev", vethName, "nodad")
	r := newResponder(t, tn, noGARP, WithProbe(DefaultProbeRounds, DefaultProbeInterval, time.Second))
	var addrs []netip.Addr
	for _, net3 := range [][3]byte{{192, 0, 2}, {198, 51, 100}, {203, 0, 113}} {
		for i := 3; i < 203; i++ { // not ipA, ipB
			addrs = append(addrs, netip.AddrFrom4([4]byte{net3[0], net3[1], net3[2], byte(i)}))
		}
	}
	for i := range 400 {
		addrs = append(addrs, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 13: 1, 14: byte(i >> 8), 15: byte(i)}))
	}
	if !slices.Contains(addrs, used4) || !slices.Contains(addrs, used6) || len(addrs) != 1000 {
		t.Fatalf("bad address list (%d addresses)", len(addrs))
	}
	start := time.Now()
	got := probe(t, tn, r, addrs...)
	t.Logf("probe of %d addresses took %v", len(addrs), time.Since(start))
	want := map[netip.Addr]Claim{
		used4: {Addr: used4, MAC: tn.macB, Kind: ClaimARPReply},
		used6: {Addr: used6, MAC: tn.macB, Kind: ClaimNA},
	}
	if diff := cmp.Diff(want, claimsWithoutTime(t, got), equateAddrs); diff != "" {
		t.Errorf("Probe of %d addresses (-want +got):\n%s", len(addrs), diff)
	}
	if n := len(r.probing); n != 0 {
		t.Errorf("%d addresses still registered as probed", n)
	}
	r.mu.RLock()
	groups := maps.Clone(r.ndp.groups)
	r.mu.RUnlock()
	if len(groups) != 0 {
		t.Errorf("still in %d solicited-node groups after probing", len(groups))
	}
	wantHealthy(t, r)
}

// TestProbeErrors checks the errors of Probe.
func TestProbeErrors(t *testing.T) {
	tn := newTestNet(t)
	r := newResponder(t, tn, noGARP, WithProbe(1, 0, time.Minute))
	if _, err := r.Probe(context.Background(), []netip.Addr{vip4, netip.IPv4Unspecified()}); err == nil {
		t.Error("Probe of 0.0.0.0 succeeded")
	}
	if got, err := r.Probe(context.Background(), nil); err != nil || len(got) != 0 {
		t.Errorf("Probe(nil) = %v, %v; want no claim, nil", got, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tn.inA(t, func() error {
		if _, err := r.Probe(ctx, []netip.Addr{vip4}); !errors.Is(err, context.Canceled) {
			t.Errorf("Probe with a canceled context = %v, want context.Canceled", err)
		}
		return nil
	})
	// Close ends a Probe in progress.
	errc := make(chan error, 1)
	go func() {
		_, err := r.Probe(context.Background(), []netip.Addr{vip4})
		errc <- err
	}()
	for {
		r.mu.RLock()
		n := len(r.probing)
		r.mu.RUnlock()
		if n > 0 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("Probe during Close = %v, want ErrClosed", err)
	}
	if _, err := r.Probe(context.Background(), []netip.Addr{vip4}); !errors.Is(err, ErrClosed) {
		t.Errorf("Probe after Close = %v, want ErrClosed", err)
	}
}

// BenchmarkProbeFree probes one free IPv4 address per iteration with the
// default settings: ns/op is the duration of a probe.
func BenchmarkProbeFree(b *testing.B) {
	tn := newTestNet(b)
	r, err := NewResponder(tn.ifiA, WithGratuitous(0, 0))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { r.Close() })
	free := []netip.Addr{netip.MustParseAddr("192.0.2.20")}
	probe(b, tn, r, free...) // opens the socket in A
	for b.Loop() {
		got, err := r.Probe(context.Background(), free)
		if err != nil || len(got) != 0 {
			b.Fatalf("Probe = %v, %v", got, err)
		}
	}
}
