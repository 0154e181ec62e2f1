package layer2

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// Test network: two namespaces, A (where the Responder runs) and B (the
// neighbor), joined by a veth pair whose ends are both named vethName.
const (
	nsPrefix = "l2t"
	vethName = "veth0"
)

var (
	ipA  = netip.MustParseAddr("192.0.2.1")
	ipB  = netip.MustParseAddr("192.0.2.2")
	ip6A = netip.MustParseAddr("2001:db8::1")
	ip6B = netip.MustParseAddr("2001:db8::2")
)

var nsCounter atomic.Int64

// testNet is a pair of namespaces joined by a veth pair.
type testNet struct {
	a, b string           // namespace names
	ifiA *net.Interface   // veth end in A
	ifiB *net.Interface   // veth end in B
	macA net.HardwareAddr // address of ifiA
	macB net.HardwareAddr // address of ifiB
	llB  netip.Addr       // link-local address of ifiB
}

// requireNetNS skips the test unless it may create network namespaces.
func requireNetNS(t testing.TB) {
	t.Helper()
	if testing.Short() {
		t.Skip("skipping network namespace test in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("skipping network namespace test: not root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("skipping network namespace test: ip (iproute2) not found")
	}
}

// newTestNet creates the namespaces, the veth pair and the addresses
// (192.0.2.1/24 and 2001:db8::1/64 in A, .2 and ::2 in B), and registers
// their removal with t.Cleanup.
func newTestNet(t testing.TB) *testNet {
	t.Helper()
	requireNetNS(t)
	sweep(t)
	n := nsCounter.Add(1)
	tn := &testNet{
		a: fmt.Sprintf("%s%d-%d-a", nsPrefix, os.Getpid(), n),
		b: fmt.Sprintf("%s%d-%d-b", nsPrefix, os.Getpid(), n),
	}
	for _, ns := range []string{tn.a, tn.b} {
		mustIP(t, "netns", "add", ns)
		t.Cleanup(func() {
			if _, err := runIP("netns", "del", ns); err != nil {
				t.Errorf("delete namespace: %v", err)
			}
		})
		mustSysctls(t, ns, map[string]string{
			// Addresses usable at once, and a quiet link.
			"net.ipv6.conf.all.accept_dad":               "0",
			"net.ipv6.conf.default.accept_dad":           "0",
			"net.ipv6.conf.default.accept_ra":            "0",
			"net.ipv6.conf.default.router_solicitations": "0",
		})
		mustIP(t, "-n", ns, "link", "set", "lo", "up")
	}
	mustIP(t, "link", "add", vethName, "netns", tn.a, "type", "veth", "peer", "name", vethName, "netns", tn.b)
	mustIP(t, "-n", tn.a, "addr", "add", ipA.String()+"/24", "dev", vethName)
	mustIP(t, "-n", tn.a, "addr", "add", ip6A.String()+"/64", "dev", vethName, "nodad")
	mustIP(t, "-n", tn.b, "addr", "add", ipB.String()+"/24", "dev", vethName)
	mustIP(t, "-n", tn.b, "addr", "add", ip6B.String()+"/64", "dev", vethName, "nodad")
	mustIP(t, "-n", tn.a, "link", "set", vethName, "up")
	mustIP(t, "-n", tn.b, "link", "set", vethName, "up")

	tn.ifiA = tn.waitUp(t, tn.a)
	tn.ifiB = tn.waitUp(t, tn.b)
	tn.macA, tn.macB = tn.ifiA.HardwareAddr, tn.ifiB.HardwareAddr
	tn.llB = linkLocal(t, tn.b, tn.ifiB)
	return tn
}

// waitUp waits until vethName is running in ns, with a link-local address,
// and returns it.
func (tn *testNet) waitUp(t testing.TB, ns string) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := netrig.Do(ns, func() error {
			var err error
			ifi, err = net.InterfaceByName(vethName)
			if err != nil {
				return err
			}
			if ifi.Flags&net.FlagRunning == 0 {
				return errors.New("not running")
			}
			addrs, err := ifi.Addrs()
			if err != nil {
				return err
			}
			for _, a := range addrs {
				if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
					return nil
				}
			}
			return errors.New("no link-local address")
		})
		if err == nil {
			return ifi
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s in %s not up: %v", vethName, ns, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// linkLocal returns the link-local address of ifi in ns.
func linkLocal(t testing.TB, ns string, ifi *net.Interface) netip.Addr {
	t.Helper()
	var ll netip.Addr
	err := netrig.Do(ns, func() error {
		addrs, err := ifi.Addrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().IsLinkLocalUnicast() {
				ll = p.Addr()
				return nil
			}
		}
		return errors.New("no link-local address")
	})
	if err != nil {
		t.Fatalf("link-local address in %s: %v", ns, err)
	}
	return ll
}

// inA runs fn in namespace A, failing the test on error.
func (tn *testNet) inA(t testing.TB, fn func() error) {
	t.Helper()
	if err := netrig.Do(tn.a, fn); err != nil {
		t.Fatal(err)
	}
}

// neighbor returns the link-layer address and state of the neighbor entry of
// addr in ns ("" if none).
func neighbor(t testing.TB, ns string, addr netip.Addr) (lladdr, state string) {
	t.Helper()
	out, err := runIP("-n", ns, "-j", "neigh", "show", "to", addr.String(), "dev", vethName)
	if err != nil {
		t.Fatal(err)
	}
	var entries []struct {
		Dst    string   `json:"dst"`
		LLAddr string   `json:"lladdr"`
		State  []string `json:"state"`
	}
	if strings.TrimSpace(out) == "" {
		return "", ""
	}
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("parse neighbors %q: %v", out, err)
	}
	for _, e := range entries {
		if a, err := netip.ParseAddr(e.Dst); err == nil && a == addr {
			return e.LLAddr, strings.Join(e.State, ",")
		}
	}
	return "", ""
}

// waitNeighbor waits until the neighbor entry of addr in ns has link-layer
// address want, and returns its state.
func waitNeighbor(t testing.TB, ns string, addr netip.Addr, want net.HardwareAddr, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ll, state := neighbor(t, ns, addr)
		if ll == want.String() {
			return state
		}
		if time.Now().After(deadline) {
			t.Fatalf("neighbor %s in %s: got lladdr %q (state %s), want %s", addr, ns, ll, state, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// mustSysctls sets sysctls (dotted names) in ns.
func mustSysctls(t testing.TB, ns string, kv map[string]string) {
	t.Helper()
	err := netrig.Do(ns, func() error {
		for k, v := range kv {
			// /proc/sys/net reflects the namespace of the opening thread.
			p := "/proc/sys/" + strings.ReplaceAll(k, ".", "/")
			if err := os.WriteFile(p, []byte(v), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", k, v, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func runIP(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

func mustIP(t testing.TB, args ...string) string {
	t.Helper()
	out, err := runIP(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

var nsNameRE = regexp.MustCompile(`^` + nsPrefix + `([0-9]+)-[0-9]+-[ab]$`)

// sweep deletes the namespaces left by test processes that died before their
// cleanup ran.
func sweep(t testing.TB) {
	entries, err := os.ReadDir("/run/netns")
	if err != nil {
		return
	}
	for _, e := range entries {
		m := nsNameRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); err == nil || errors.Is(err, syscall.EPERM) {
			continue // still running
		}
		if _, err := runIP("netns", "del", e.Name()); err != nil {
			t.Logf("sweep: %v", err)
		}
	}
}
