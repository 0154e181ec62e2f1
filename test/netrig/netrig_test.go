package netrig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

var (
	a4 = netip.MustParsePrefix("192.0.2.1/24")
	b4 = netip.MustParsePrefix("192.0.2.2/24")
	a6 = netip.MustParsePrefix("2001:db8::1/64")
	b6 = netip.MustParsePrefix("2001:db8::2/64")
)

func skipUnlessUsable(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("netrig: skipped in -short mode")
	}
	if err := Usable(); err != nil {
		t.Skip(err)
	}
}

// twoHosts returns a LAN with hosts "a" and "b" (IPv4 and IPv6 each).
func twoHosts(t *testing.T) (*LAN, *Host, *Host) {
	t.Helper()
	lan := NewLAN(t)
	a, err := lan.AddHost("a", a4, a6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lan.AddHost("b", b4, b6)
	if err != nil {
		t.Fatal(err)
	}
	return lan, a, b
}

// fetch connects from h to addr and returns the line read.
func fetch(h *Host, addr string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	c, err := h.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return strings.TrimSuffix(line, "\n"), nil
}

func TestTwoHostsTCP(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	if len(a.MAC) != 6 || len(b.MAC) != 6 || a.MAC.String() == b.MAC.String() {
		t.Fatalf("bad MACs %v %v", a.MAC, b.MAC)
	}
	ra, err := a.Serve(8080, "a")
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if _, err := b.Serve(8080, "b"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		from *Host
		to   netip.Addr
		want string
	}{
		{a, b4.Addr(), "b"}, {a, b6.Addr(), "b"},
		{b, a4.Addr(), "a"}, {b, a6.Addr(), "a"},
	} {
		addr := netip.AddrPortFrom(tc.to, 8080).String()
		got, err := fetch(tc.from, addr, 2*time.Second)
		if err != nil || got != tc.want {
			t.Errorf("%s -> %s: got %q, %v; want %q", tc.from.Role, addr, got, err, tc.want)
		}
	}
	// Nothing listens on the host's own namespace address in the test
	// process: a loopback dial inside a's namespace must reach a's server.
	if got, err := fetch(a, "127.0.0.1:8080", time.Second); err != nil || got != "a" {
		t.Errorf("loopback in a: got %q, %v", got, err)
	}

	nb, err := a.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []netip.Addr{b4.Addr(), b6.Addr()} {
		if mac, ok := nb[want]; !ok || mac.String() != b.MAC.String() {
			t.Errorf("a's neighbor %s = %v (present %v), want %v; table %v", want, mac, ok, b.MAC, nb)
		}
	}
	if err := a.FlushNeighbors(); err != nil {
		t.Fatal(err)
	}
	nb, err = a.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := nb[b4.Addr()]; ok {
		t.Errorf("neighbor %s still present after flush: %v", b4.Addr(), nb)
	}

	out, err := a.Run("ip", "-br", "addr", "show", "dev", "eth0")
	if err != nil || !strings.Contains(out, "192.0.2.1/24") || !strings.Contains(out, "2001:db8::1/64") {
		t.Errorf("Run ip addr: %q, %v", out, err)
	}
	if _, err := a.Run("false"); err == nil || !strings.Contains(err.Error(), a.Name) {
		t.Errorf("Run false: err = %v, want error naming the namespace", err)
	}
}

func TestProbeOutage(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	r, err := b.Serve(8080, "b")
	if err != nil {
		t.Fatal(err)
	}
	for _, target := range []netip.Addr{b4.Addr(), b6.Addr()} {
		p := a.StartProbe(netip.AddrPortFrom(target, 8080), 10*time.Millisecond, 500*time.Millisecond)
		time.Sleep(150 * time.Millisecond)
		start := time.Now()
		r.SetServing(false)
		time.Sleep(200 * time.Millisecond)
		r.SetServing(true)
		time.Sleep(150 * time.Millisecond)
		rs := p.Stop()
		if len(rs) < 30 {
			t.Fatalf("%s: only %d results", target, len(rs))
		}
		if !rs[0].OK || rs[0].Node != "b" {
			t.Errorf("%s: first result %+v", target, rs[0])
		}
		for _, r := range rs {
			// Attempts started just before start may be accepted after it.
			if r.At.Before(start.Add(-50*time.Millisecond)) && !r.OK {
				t.Errorf("%s: failure before the outage: %v", target, r.Err)
			}
		}
		o := Outage(rs, start)
		t.Logf("%s: %d results, %d failures, outage %v", target, len(rs), len(Failures(rs)), o)
		if o < 150*time.Millisecond || o > 600*time.Millisecond {
			t.Errorf("%s: outage %v, want about 200ms", target, o)
		}
		if _, ok := FirstFrom(rs, start, "b"); ok {
			t.Errorf("%s: FirstFrom found a node other than b", target)
		}
		if fr, ok := FirstFrom(rs, start, "x"); !ok || fr.Node != "b" || fr.At.Before(start) {
			t.Errorf("%s: FirstFrom = %+v, %v", target, fr, ok)
		}
		if last := rs[len(rs)-1]; !last.OK {
			t.Errorf("%s: last result failed: %v", target, last.Err)
		}
	}
}

func TestOutageHelpers(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	rs := []ProbeResult{
		{At: at(30), OK: false},
		{At: at(0), OK: true, Node: "a"},
		{At: at(10), OK: true, Node: "a"},
		{At: at(20), OK: false},
		{At: at(50), OK: true, Node: "b"},
		{At: at(60), OK: false},
	}
	if got := Outage(rs, t0); got != 30*time.Millisecond {
		t.Errorf("Outage = %v, want 30ms", got)
	}
	if got := Outage(rs, at(55)); got != NeverRecovered {
		t.Errorf("Outage after 55ms = %v, want NeverRecovered", got)
	}
	if got := Outage(rs[1:3], t0); got != 0 {
		t.Errorf("Outage without failure after = %v", got)
	}
	if r, ok := FirstFrom(rs, t0, "a"); !ok || r.Node != "b" || !r.At.Equal(at(50)) {
		t.Errorf("FirstFrom = %+v, %v", r, ok)
	}
	if _, ok := FirstFrom(rs, at(51), "a"); ok {
		t.Error("FirstFrom after last success found something")
	}
}

func TestSetLink(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	if _, err := b.Serve(8080, "b"); err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(b4.Addr(), 8080).String()
	if got, err := fetch(a, addr, time.Second); err != nil || got != "b" {
		t.Fatalf("before: %q, %v", got, err)
	}
	if err := b.SetLink(false); err != nil {
		t.Fatal(err)
	}
	if got, err := fetch(a, addr, 300*time.Millisecond); err == nil {
		t.Fatalf("link down: still reached b (%q)", got)
	}
	if got, err := fetch(a, netip.AddrPortFrom(b6.Addr(), 8080).String(), 300*time.Millisecond); err == nil {
		t.Fatalf("link down: still reached b over IPv6 (%q)", got)
	}
	if err := b.SetLink(true); err != nil {
		t.Fatal(err)
	}
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		var got string
		if got, err = fetch(a, addr, 500*time.Millisecond); err == nil && got == "b" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("link up: b unreachable: %v", err)
}

func TestLocalRoute(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, b := twoHosts(t)
	pool4 := netip.MustParsePrefix("192.0.2.128/28")
	pool6 := netip.MustParsePrefix("2001:db8::100/120")
	for _, p := range []netip.Prefix{pool4, pool6} {
		if err := b.AddLocalRoute(p); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := b.Serve(8080, "b"); err != nil {
		t.Fatal(err)
	}
	vip4 := netip.MustParseAddr("192.0.2.130")
	vip6 := netip.MustParseAddr("2001:db8::130")

	// b itself accepts traffic to pool addresses.
	for _, vip := range []netip.Addr{vip4, vip6} {
		if got, err := fetch(b, netip.AddrPortFrom(vip, 8080).String(), time.Second); err != nil || got != "b" {
			t.Errorf("b -> own %s: %q, %v", vip, got, err)
		}
	}
	// a cannot resolve the pool addresses: b answers neither ARP nor NDP.
	inNS0, outNA0 := ndpCounters(t, b)
	for _, vip := range []netip.Addr{vip4, vip6} {
		if got, err := fetch(a, netip.AddrPortFrom(vip, 8080).String(), 1500*time.Millisecond); err == nil {
			t.Errorf("a -> %s without neighbor entry: reached %q", vip, got)
		}
		nb, err := a.Neighbors()
		if err != nil {
			t.Fatal(err)
		}
		if mac, ok := nb[vip]; ok {
			t.Errorf("%s resolved to %v although b must not answer for it", vip, mac)
		}
	}
	// b sent no neighbor advertisement. (Linux drops the multicast
	// solicitations before NDP: b has not joined the solicited-node group
	// of the pool addresses, so Icmp6InNeighborSolicits stays put too.)
	inNS1, outNA1 := ndpCounters(t, b)
	t.Logf("b's NDP counters: solicitations in %d -> %d, advertisements out %d -> %d", inNS0, inNS1, outNA0, outNA1)
	if outNA1 != outNA0 {
		t.Errorf("b sent %d neighbor advertisements", outNA1-outNA0)
	}
	// With static neighbor entries, b accepts the traffic.
	for _, vip := range []netip.Addr{vip4, vip6} {
		if _, err := a.Run("ip", "neigh", "replace", vip.String(), "lladdr", b.MAC.String(), "dev", "eth0", "nud", "permanent"); err != nil {
			t.Fatal(err)
		}
		if got, err := fetch(a, netip.AddrPortFrom(vip, 8080).String(), 2*time.Second); err != nil || got != "b" {
			t.Errorf("a -> %s with static neighbor: %q, %v", vip, got, err)
		}
	}
	// Control: with arp_ignore=0, b does answer ARP for pool addresses,
	// so the check above is meaningful.
	if _, err := b.Run("sysctl", "-q", "-w", "net.ipv4.conf.all.arp_ignore=0", "net.ipv4.conf.eth0.arp_ignore=0"); err != nil {
		t.Fatal(err)
	}
	vip := netip.MustParseAddr("192.0.2.131")
	if got, err := fetch(a, netip.AddrPortFrom(vip, 8080).String(), 2*time.Second); err != nil || got != "b" {
		t.Errorf("control with arp_ignore=0: a -> %s: %q, %v", vip, got, err)
	}
	nb, err := a.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	if mac := nb[vip]; mac.String() != b.MAC.String() {
		t.Errorf("control with arp_ignore=0: %s resolved to %v, want %v", vip, mac, b.MAC)
	}
}

func TestRelay(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	_, a, _ := twoHosts(t)
	// A "host service" on loopback of the test process's namespace.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, _ := bufio.NewReader(c).ReadString('\n')
				fmt.Fprintf(c, "echo %s", line)
			}()
		}
	}()
	ra, err := a.Relay("127.0.0.1:0", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	// The same address is not reachable in the test process's namespace
	// (the relay listens inside a's namespace) unless by coincidence.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := a.DialContext(ctx, "tcp", ra.String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "hello\n")
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "echo hello\n" {
		t.Fatalf("relay: %q, %v", line, err)
	}
}

func TestCloseRemovesEverything(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	lan, err := NewLANNoTest()
	if err != nil {
		t.Fatal(err)
	}
	defer lan.Close()
	a, err := lan.AddHost("a", a4, a6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := lan.AddHost("b", b4)
	if err != nil {
		t.Fatal(err)
	}
	// A process group: sh with a child sleep.
	cmd := b.Command("sh", "-c", "sleep 300 & sleep 300; wait")
	if err := b.Start(cmd); err != nil {
		t.Fatal(err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	if _, err := b.Serve(8080, "b"); err != nil {
		t.Fatal(err)
	}
	p := a.StartProbe(netip.AddrPortFrom(b4.Addr(), 8080), 10*time.Millisecond, 200*time.Millisecond)
	if _, err := a.Relay("127.0.0.1:0", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	names := []string{lan.Name, a.Name, b.Name}
	for _, n := range names {
		if _, err := os.Stat(netnsDir + "/" + n); err != nil {
			t.Fatalf("namespace %s missing: %v", n, err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	if err := lan.Close(); err != nil {
		t.Fatal(err)
	}
	if err := lan.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	select {
	case err := <-waited:
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Errorf("process exit: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("process not killed by Close")
	}
	if len(p.Stop()) == 0 {
		t.Error("probe recorded nothing")
	}
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns list: %v: %s", err, out)
	}
	for _, n := range names {
		for _, line := range strings.Split(string(out), "\n") {
			if f := strings.Fields(line); len(f) > 0 && f[0] == n {
				t.Errorf("namespace %s left after Close", n)
			}
		}
	}
	if _, err := lan.AddHost("c"); err == nil {
		t.Error("AddHost after Close succeeded")
	}
}

func TestSweep(t *testing.T) {
	skipUnlessUsable(t)
	t.Parallel()
	// A pid that just died.
	c := exec.Command("true")
	if err := c.Run(); err != nil {
		t.Fatal(err)
	}
	dead := c.Process.Pid
	if pidAlive(dead) {
		t.Skipf("pid %d reused already", dead)
	}
	deadNS := fmt.Sprintf("%s%d-1-old", Prefix, dead)
	liveNS := fmt.Sprintf("%s%d-%d-live", Prefix, os.Getpid(), nextN())
	for _, n := range []string{deadNS, liveNS} {
		if _, err := ip("netns", "add", n); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = deleteNS(n) })
	}
	if err := Sweep(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(netnsDir + "/" + deadNS); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("dead-pid namespace %s not swept (%v)", deadNS, err)
	}
	if _, err := os.Stat(netnsDir + "/" + liveNS); err != nil {
		t.Errorf("live-pid namespace %s removed: %v", liveNS, err)
	}
}

// ndpCounters returns h's Icmp6InNeighborSolicits and
// Icmp6OutNeighborAdvertisements.
func ndpCounters(t *testing.T, h *Host) (in, out int) {
	t.Helper()
	var data []byte
	if err := h.Do(func() error {
		var err error
		// /proc/net is that of the reading thread's namespace.
		data, err = os.ReadFile(fmt.Sprintf("/proc/self/task/%d/net/snmp6", unix.Gettid()))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		n, _ := strconv.Atoi(f[1])
		switch f[0] {
		case "Icmp6InNeighborSolicits":
			in = n
		case "Icmp6OutNeighborAdvertisements":
			out = n
		}
	}
	return in, out
}

// TestMain checks, after all tests, that no thread of the test process was
// left in a foreign network namespace by Host.Do.
func TestMain(m *testing.M) {
	code := m.Run()
	self, err := os.Readlink("/proc/self/ns/net")
	if err == nil {
		tasks, _ := os.ReadDir("/proc/self/task")
		for _, tk := range tasks {
			ns, err := os.Readlink("/proc/self/task/" + tk.Name() + "/ns/net")
			if err == nil && ns != self {
				fmt.Fprintf(os.Stderr, "thread %s left in netns %s (want %s)\n", tk.Name(), ns, self)
				code = 1
			}
		}
	}
	os.Exit(code)
}
