package dhcp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
	testrig "github.com/ironlb/ironlb/test/rig"
)

// The rig: a LAN (netrig: a bridge namespace) with a "server" host at
// 192.0.2.1/24 running Kea or dnsmasq on its eth0, and "node" hosts at
// 192.0.2.10/24, 192.0.2.11/24... where Clients open their packet sockets.

const (
	keaBin     = "/usr/sbin/kea-dhcp4"
	dnsmasqBin = "/usr/sbin/dnsmasq"
)

var serverPrefix = netip.MustParsePrefix("192.0.2.1/24")

func requireRig(t *testing.T, bin string) {
	t.Helper()
	if testing.Short() {
		t.Skip("network namespace test skipped in -short mode")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespace test: not root")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s not installed (make deps installs it): %v", bin, err)
	}
	if err := netrig.Usable(); err != nil {
		t.Skip(err)
	}
}

// rig is a LAN with a server host and node hosts.
type rig struct {
	lan    *netrig.LAN
	server *netrig.Host
	dir    string
}

func newRig(t *testing.T, bin string) *rig {
	t.Helper()
	requireRig(t, bin)
	lan := netrig.NewLAN(t)
	srv, err := lan.AddHost("server", serverPrefix)
	if err != nil {
		t.Fatal(err)
	}
	return &rig{lan: lan, server: srv, dir: t.TempDir()}
}

// fastRetransmit makes test exchanges give up in seconds.
var fastRetransmit = WithRetransmit(250*time.Millisecond, time.Second, 0)

// node adds a node host (192.0.2.10+n) and opens a Client on its eth0.
func (r *rig) node(t *testing.T, n int, opts ...Option) *Client {
	t.Helper()
	h, err := r.lan.AddHost(fmt.Sprintf("node%d", n), netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(10 + n)}), 24))
	if err != nil {
		t.Fatal(err)
	}
	var c *Client
	err = h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Interface)
		if err != nil {
			return err
		}
		c, err = Listen(ifi, opts...)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// server is a DHCP server process in the server host.
type server struct {
	cmd    *exec.Cmd
	log    string // path of its output
	leases string // path of its lease file
	once   sync.Once
}

// stop kills the server (its process group) and reaps it; tests stop
// their servers at cleanup.
func (s *server) stop() {
	s.once.Do(func() {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		_ = s.cmd.Wait()
	})
}

// start runs cmd in the server host, output to log, and waits until log
// holds ready.
func (r *rig) start(t *testing.T, name, ready string, env []string, args ...string) *server {
	t.Helper()
	s := &server{log: filepath.Join(r.dir, name+".log")}
	out, err := os.Create(s.log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(s.log)
			t.Logf("%s output:\n%s", name, b)
		}
	})
	s.cmd = r.server.Command(args[0], args[1:]...)
	s.cmd.Stdout, s.cmd.Stderr = out, out
	s.cmd.Env = append(os.Environ(), env...)
	if err := r.server.Start(s.cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.stop)
	waitFor(t, 10*time.Second, name+" ready", func() (bool, string) {
		b, _ := os.ReadFile(s.log)
		return strings.Contains(string(b), ready), string(b)
	})
	return s
}

// keaConfig is the part of Kea's configuration tests vary.
type keaConfig struct {
	pool          string // default 192.0.2.100 - 192.0.2.102
	authoritative bool
}

// startKea runs kea-dhcp4 on the server's eth0: valid lifetime 8 s, T1
// 4 s, T2 6 s, a memfile lease database persisted to leases.csv.
func (r *rig) startKea(t *testing.T, kc keaConfig) *server {
	t.Helper()
	if kc.pool == "" {
		kc.pool = "192.0.2.100 - 192.0.2.102"
	}
	leases := filepath.Join(r.dir, "leases.csv")
	cfg := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{r.server.Interface}, "dhcp-socket-type": "raw"},
		"lease-database":    map[string]any{"type": "memfile", "persist": true, "name": leases, "lfc-interval": 0},
		"valid-lifetime":    8,
		"renew-timer":       4,
		"rebind-timer":      6,
		"authoritative":     kc.authoritative,
		"subnet4": []any{map[string]any{
			"id":          1,
			"subnet":      "192.0.2.0/24",
			"pools":       []any{map[string]any{"pool": kc.pool}},
			"option-data": []any{map[string]any{"name": "routers", "data": "192.0.2.1"}},
		}},
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "DEBUG", "debuglevel": 15,
			"output_options": []any{map[string]any{"output": "stdout"}},
		}},
	}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(r.dir, "kea.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := r.start(t, "kea", "DHCP4_STARTED",
		[]string{"KEA_LOCKFILE_DIR=" + r.dir, "KEA_PIDFILE_DIR=" + r.dir}, keaBin, "-c", path)
	s.leases = leases
	return s
}

// startDnsmasq runs dnsmasq's DHCP server (no DNS) on the server's eth0
// with a pool of 192.0.2.100-102 and 2-minute leases (its minimum).
func (r *rig) startDnsmasq(t *testing.T) *server {
	t.Helper()
	leases := filepath.Join(r.dir, "dnsmasq.leases")
	s := r.start(t, "dnsmasq", "DHCP, IP range", nil, dnsmasqBin,
		"--no-daemon", "--conf-file=/dev/null", "--port=0", "--interface="+r.server.Interface,
		"--bind-interfaces", "--dhcp-range=192.0.2.100,192.0.2.102,2m",
		"--dhcp-leasefile="+leases, "--dhcp-authoritative", "--pid-file="+filepath.Join(r.dir, "dnsmasq.pid"),
		"--log-dhcp", "--log-facility=-", "--no-ping")
	s.leases = leases
	return s
}

// waitFor polls cond until it holds or the timeout passes; then it fails
// with what and the last detail.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last: %s", timeout, what, detail)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// colonHex formats b as Kea does in its lease file: "01:02:0a".
func colonHex(b []byte) string {
	s := make([]string, len(b))
	for i, c := range b {
		s[i] = fmt.Sprintf("%02x", c)
	}
	return strings.Join(s, ":")
}

func clientID(name string) []byte { return append([]byte{0}, name...) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestKeaAcquireRenewRelease(t *testing.T) {
	r := newRig(t, keaBin)
	kea := r.startKea(t, keaConfig{})
	c := r.node(t, 0, fastRetransmit)
	req := Request{ClientID: clientID("svc-a"), Hostname: "svc-a"}

	l, err := c.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Logf("lease: %+v", l)
	if !netip.MustParsePrefix("192.0.2.100/30").Contains(l.Addr) || l.Addr == netip.MustParseAddr("192.0.2.103") {
		t.Errorf("Addr %v not in the pool", l.Addr)
	}
	want := Lease{Addr: l.Addr, Mask: netip.MustParsePrefix("192.0.2.0/24"), Router: netip.MustParseAddr("192.0.2.1"),
		Server: serverPrefix.Addr(), ServerMAC: l.ServerMAC, Duration: 8 * time.Second, Renew: 4 * time.Second, Rebind: 6 * time.Second}
	if fmt.Sprint(l) != fmt.Sprint(want) {
		t.Errorf("lease %+v, want %+v", l, want)
	}
	if len(l.ServerMAC) != 6 {
		t.Errorf("no server MAC: %v", l.ServerMAC)
	}
	var first testrig.KeaRow
	waitFor(t, 5*time.Second, "the lease in Kea's file", func() (bool, string) {
		m, err := testrig.ReadKeaLeases(kea.leases)
		first = m[l.Addr]
		return err == nil && first.Valid == 8, fmt.Sprint(m, err)
	})
	if first.ClientID != colonHex(req.ClientID) || first.HWAddr != HardwareAddr(req.ClientID).String() {
		t.Errorf("Kea's lease %+v, want client id %s and hwaddr %s", first, colonHex(req.ClientID), HardwareAddr(req.ClientID))
	}

	// Renew, a second later (the file has second resolution): the expiry
	// grows.
	time.Sleep(1100 * time.Millisecond)
	req.Requested = l.Addr
	rl, err := c.Renew(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Renew: %v", err)
	}
	if rl.Addr != l.Addr || rl.Duration != 8*time.Second {
		t.Errorf("renewed lease %+v", rl)
	}
	waitFor(t, 5*time.Second, "a later expiry in Kea's file", func() (bool, string) {
		m, err := testrig.ReadKeaLeases(kea.leases)
		return err == nil && m[l.Addr].Expire > first.Expire, fmt.Sprint(m[l.Addr], " first ", first, err)
	})

	// Release: Kea 2.2 deletes the lease, which its file records as a row
	// with valid lifetime 0.
	if err := c.Release(ctxT(t, time.Second), req, rl); err != nil {
		t.Fatalf("Release: %v", err)
	}
	waitFor(t, 5*time.Second, "the release in Kea's file", func() (bool, string) {
		m, err := testrig.ReadKeaLeases(kea.leases)
		return err == nil && m[l.Addr].Valid == 0, fmt.Sprint(m[l.Addr], err)
	})

	// Decline: Kea marks the address declined (state 1) for its probation
	// period (decline-probation-period, 24 h by default).
	dreq := Request{ClientID: clientID("svc-decline")}
	dl, err := c.Acquire(ctxT(t, 10*time.Second), dreq)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	if err := c.Decline(ctxT(t, time.Second), dreq, dl); err != nil {
		t.Fatalf("Decline: %v", err)
	}
	waitFor(t, 5*time.Second, "the declined lease in Kea's file", func() (bool, string) {
		m, err := testrig.ReadKeaLeases(kea.leases)
		return err == nil && m[dl.Addr].State == "1", fmt.Sprint(m[dl.Addr], err)
	})

	// After a release, an INIT-REBOOT of a non-authoritative Kea for an
	// unknown client gets no answer.
	if _, err := c.Renew(ctxT(t, 2*time.Second), req); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("Renew after release: %v, want ErrNoAnswer", err)
	}
}

func TestKeaMove(t *testing.T) {
	r := newRig(t, keaBin)
	r.startKea(t, keaConfig{})
	c1 := r.node(t, 0, fastRetransmit)
	c2 := r.node(t, 1, fastRetransmit)
	req := Request{ClientID: clientID("svc-move")}
	l1, err := c1.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Acquire from node 0: %v", err)
	}
	// Another service takes another address in between.
	if _, err := c1.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-other")}); err != nil {
		t.Fatalf("Acquire other: %v", err)
	}
	l2, err := c2.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Acquire from node 1: %v", err)
	}
	if l2.Addr != l1.Addr {
		t.Errorf("node 1 got %v, node 0 had %v", l2.Addr, l1.Addr)
	}
	req.Requested = l1.Addr
	if l3, err := c2.Renew(ctxT(t, 10*time.Second), req); err != nil || l3.Addr != l1.Addr {
		t.Errorf("Renew from node 1: %+v, %v", l3, err)
	}
}

func TestKeaRequested(t *testing.T) {
	r := newRig(t, keaBin)
	r.startKea(t, keaConfig{})
	c := r.node(t, 0, fastRetransmit)
	want := netip.MustParseAddr("192.0.2.101")
	l, err := c.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-a"), Requested: want})
	if err != nil || l.Addr != want {
		t.Fatalf("Acquire of %v: %+v, %v", want, l, err)
	}
	_, err = c.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-b"), Requested: want})
	var nr *NotRequestedError
	if !errors.Is(err, ErrNotRequested) || !errors.As(err, &nr) {
		t.Fatalf("Acquire of a taken address: %v, want ErrNotRequested", err)
	}
	if nr.Offered == want || !nr.Offered.IsValid() || nr.Requested != want || nr.Server != serverPrefix.Addr() {
		t.Errorf("NotRequestedError %+v", nr)
	}
	t.Log(err)
}

func TestKeaPoolExhausted(t *testing.T) {
	r := newRig(t, keaBin)
	r.startKea(t, keaConfig{})
	c := r.node(t, 0, fastRetransmit)
	seen := map[netip.Addr]bool{}
	for i := range 3 {
		l, err := c.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID(fmt.Sprint("svc-", i))})
		if err != nil {
			t.Fatalf("Acquire %d: %v", i, err)
		}
		seen[l.Addr] = true
	}
	if len(seen) != 3 {
		t.Errorf("addresses %v, want 3 distinct", seen)
	}
	start := time.Now()
	_, err := c.Acquire(ctxT(t, 2*time.Second), Request{ClientID: clientID("svc-3")})
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("4th Acquire: %v, want ErrNoAnswer", err)
	}
	t.Logf("4th Acquire after %v: %v", time.Since(start), err)
}

func TestKeaServerDown(t *testing.T) {
	r := newRig(t, keaBin)
	kea := r.startKea(t, keaConfig{})
	c := r.node(t, 0, WithRetransmit(250*time.Millisecond, time.Second, 4))
	req := Request{ClientID: clientID("svc-a")}
	l, err := c.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	kea.stop()
	req.Requested = l.Addr
	start := time.Now()
	_, err = c.Renew(ctxT(t, 30*time.Second), req)
	if !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Renew with the server down: %v, want ErrNoAnswer", err)
	}
	// 4 attempts at 0.25, 0.5, 1, 1 s.
	if d := time.Since(start); d < 2500*time.Millisecond || d > 10*time.Second {
		t.Errorf("gave up after %v, want about 2.75 s", d)
	}
	t.Logf("Renew: %v", err)
}

func TestKeaNAK(t *testing.T) {
	r := newRig(t, keaBin)
	r.startKea(t, keaConfig{authoritative: true})
	c := r.node(t, 0, fastRetransmit)
	// Another client holds .100; svc-b asks for it INIT-REBOOT style.
	l, err := c.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-a")})
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	_, err = c.Renew(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-b"), Requested: l.Addr})
	var nak *NAKError
	if !errors.Is(err, ErrNAK) || !errors.As(err, &nak) {
		t.Fatalf("Renew of another client's address: %v, want ErrNAK", err)
	}
	if nak.Server != serverPrefix.Addr() {
		t.Errorf("NAK from %v", nak.Server)
	}
	t.Log(err)
	// A client without a lease asking for a free address is NAKed too.
	_, err = c.Renew(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-c"), Requested: netip.MustParseAddr("192.0.2.102")})
	if !errors.Is(err, ErrNAK) {
		t.Errorf("Renew of a free address by an unknown client: %v, want ErrNAK", err)
	}
	// The holder still renews.
	if _, err := c.Renew(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-a"), Requested: l.Addr}); err != nil {
		t.Errorf("Renew by the holder: %v", err)
	}
}

func TestKeaConcurrent(t *testing.T) {
	r := newRig(t, keaBin)
	r.startKea(t, keaConfig{pool: "192.0.2.100 - 192.0.2.199"})
	c := r.node(t, 0, WithRetransmit(time.Second, 4*time.Second, 0))
	const n = 50
	var wg sync.WaitGroup
	leases := make([]Lease, n)
	errs := make([]error, n)
	ctx := ctxT(t, 60*time.Second)
	start := time.Now()
	for i := range n {
		wg.Go(func() {
			leases[i], errs[i] = c.Acquire(ctx, Request{ClientID: clientID(fmt.Sprint("svc-", i))})
		})
	}
	wg.Wait()
	t.Logf("%d Acquires in %v", n, time.Since(start))
	seen := map[netip.Addr]int{}
	for i := range n {
		if errs[i] != nil {
			t.Errorf("Acquire %d: %v", i, errs[i])
			continue
		}
		if j, dup := seen[leases[i].Addr]; dup {
			t.Errorf("clients %d and %d both got %v", j, i, leases[i].Addr)
		}
		seen[leases[i].Addr] = i
	}
}

func TestDnsmasq(t *testing.T) {
	r := newRig(t, dnsmasqBin)
	dm := r.startDnsmasq(t)
	c1 := r.node(t, 0, fastRetransmit)
	c2 := r.node(t, 1, fastRetransmit)
	req := Request{ClientID: clientID("svc-a"), Hostname: "svc-a"}
	l, err := c1.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil {
		t.Fatalf("Acquire: %v", err)
	}
	t.Logf("lease: %+v", l)
	if l.Duration != 2*time.Minute || l.Server != serverPrefix.Addr() || l.Mask != netip.MustParsePrefix("192.0.2.0/24") {
		t.Errorf("lease %+v", l)
	}
	// dnsmasq's lease file: "<expiry> <hwaddr> <addr> <hostname> <client id>".
	line := func() (string, bool) {
		b, _ := os.ReadFile(dm.leases)
		for _, ln := range strings.Split(string(b), "\n") {
			if f := strings.Fields(ln); len(f) >= 5 && f[2] == l.Addr.String() {
				return ln, true
			}
		}
		return string(b), false
	}
	var first string
	waitFor(t, 5*time.Second, "the lease in dnsmasq's file", func() (bool, string) {
		ln, ok := line()
		first = ln
		return ok, ln
	})
	f := strings.Fields(first)
	if f[1] != HardwareAddr(req.ClientID).String() || f[3] != "svc-a" || f[4] != colonHex(req.ClientID) {
		t.Errorf("lease line %q", first)
	}

	// The same client from another node gets the same address.
	l2, err := c2.Acquire(ctxT(t, 10*time.Second), req)
	if err != nil || l2.Addr != l.Addr {
		t.Fatalf("Acquire from node 1: %+v, %v; want %v", l2, err, l.Addr)
	}
	// Renew (a second later: the file has second resolution).
	time.Sleep(1100 * time.Millisecond)
	req.Requested = l.Addr
	rl, err := c2.Renew(ctxT(t, 10*time.Second), req)
	if err != nil || rl.Addr != l.Addr {
		t.Fatalf("Renew: %+v, %v", rl, err)
	}
	waitFor(t, 5*time.Second, "a later expiry in dnsmasq's file", func() (bool, string) {
		ln, ok := line()
		if !ok {
			return false, ln
		}
		e0, _ := strconv.ParseInt(f[0], 10, 64)
		e1, _ := strconv.ParseInt(strings.Fields(ln)[0], 10, 64)
		return e1 > e0, ln
	})

	// Requested address: honoured when free, ErrNotRequested when not.
	free := netip.MustParseAddr("192.0.2.102")
	if free == l.Addr {
		free = netip.MustParseAddr("192.0.2.101")
	}
	if lb, err := c1.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-b"), Requested: free}); err != nil || lb.Addr != free {
		t.Errorf("Acquire of free %v: %+v, %v", free, lb, err)
	}
	if _, err := c1.Acquire(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-c"), Requested: l.Addr}); !errors.Is(err, ErrNotRequested) {
		t.Errorf("Acquire of taken %v: %v, want ErrNotRequested", l.Addr, err)
	}
	// An INIT-REBOOT for another client's address: NAK.
	_, err = c1.Renew(ctxT(t, 10*time.Second), Request{ClientID: clientID("svc-d"), Requested: l.Addr})
	if !errors.Is(err, ErrNAK) {
		t.Errorf("Renew of another client's address: %v, want ErrNAK", err)
	}
	t.Log(err)

	// An INIT-REBOOT for a free address by a client without a lease.
	var third netip.Addr
	for _, a := range []string{"192.0.2.100", "192.0.2.101", "192.0.2.102"} {
		if x := netip.MustParseAddr(a); x != l.Addr && x != free {
			third = x
		}
	}
	le, err := c1.Renew(ctxT(t, 3*time.Second), Request{ClientID: clientID("svc-e"), Requested: third})
	// dnsmasq, authoritative, ACKs it (Kea NAKs).
	if err != nil || le.Addr != third {
		t.Errorf("INIT-REBOOT of free %v by an unknown client: %+v, %v; want an ACK", third, le, err)
	}
	// Decline: dnsmasq drops the lease.
	if err := c1.Decline(ctxT(t, time.Second), Request{ClientID: clientID("svc-e")}, le); err != nil {
		t.Fatalf("Decline: %v", err)
	}
	waitFor(t, 5*time.Second, "the declined lease gone from dnsmasq's file", func() (bool, string) {
		b, _ := os.ReadFile(dm.leases)
		return !strings.Contains(string(b), " "+third.String()+" "), string(b)
	})

	// Release: the line goes.
	if err := c2.Release(ctxT(t, time.Second), req, rl); err != nil {
		t.Fatalf("Release: %v", err)
	}
	waitFor(t, 5*time.Second, "the release in dnsmasq's file", func() (bool, string) {
		ln, ok := line()
		return !ok, ln
	})
}
