// Package netrig builds an emulated LAN out of Linux network namespaces for
// end-to-end tests of layer-2 load balancing (ARP/NDP speakers).
//
// A LAN is a namespace holding a Linux bridge "br0". Every Host is another
// namespace whose "eth0" is one end of a veth pair; the other end ("v<n>")
// lives in the LAN namespace and is enslaved to br0. Nothing is ever
// configured in the host (root) network namespace: veth pairs are created
// directly between the LAN namespace and the host namespace.
//
// Only documentation address ranges (192.0.2.0/24, 198.51.100.0/24,
// 203.0.113.0/24, 2001:db8::/32) should be assigned to hosts.
//
// Everything a LAN creates (namespaces, processes, listeners, probes) is
// removed by LAN.Close, which NewLAN registers with t.Cleanup.
//
// The package needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the "ip" tool
// from iproute2.
package netrig

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
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Prefix is the prefix of every namespace name created by this package:
// namespaces are named "ilbt<pid>-<n>-<role>".
const Prefix = "ilbt"

const netnsDir = "/run/netns"

var nsNameRE = regexp.MustCompile(`^` + Prefix + `([0-9]+)-`)

// nsCounter makes namespace names unique within the process, across LANs.
var (
	nsCounterMu sync.Mutex
	nsCounter   int
)

func nextN() int {
	nsCounterMu.Lock()
	defer nsCounterMu.Unlock()
	nsCounter++
	return nsCounter
}

// LAN is an emulated Ethernet segment: a namespace with a bridge "br0" to
// which hosts are attached. It is safe for concurrent use.
type LAN struct {
	// Name is the name of the namespace holding the bridge.
	Name string

	mu      sync.Mutex
	closed  bool
	hosts   []*Host
	cmds    []*exec.Cmd
	closers []func() // run in reverse order at Close
}

// Usable reports whether network namespaces can be created here (root and a
// working "ip netns"); if not, the error says why. Tests should skip when it
// returns an error.
func Usable() error {
	if os.Geteuid() != 0 {
		return errors.New("netrig: not running as root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("netrig: ip (iproute2) not found: %w", err)
	}
	name := fmt.Sprintf("%s%d-%d-probe", Prefix, os.Getpid(), nextN())
	if _, err := ip("netns", "add", name); err != nil {
		return fmt.Errorf("netrig: ip netns unusable: %w", err)
	}
	if _, err := ip("netns", "del", name); err != nil {
		return fmt.Errorf("netrig: ip netns del: %w", err)
	}
	return nil
}

// NewLAN creates a LAN and registers its Close with t.Cleanup. It first
// removes leftovers of dead test processes (see Sweep). It calls t.Fatal on
// error.
func NewLAN(t testing.TB) *LAN {
	t.Helper()
	if err := Sweep(); err != nil {
		t.Logf("netrig: sweep: %v", err)
	}
	l, err := NewLANNoTest()
	if err != nil {
		t.Fatalf("netrig: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Errorf("netrig: close: %v", err)
		}
	})
	return l
}

// NewLANNoTest creates a LAN outside of a test; the caller must call Close.
func NewLANNoTest() (*LAN, error) {
	l := &LAN{Name: fmt.Sprintf("%s%d-%d-lan", Prefix, os.Getpid(), nextN())}
	if _, err := ip("netns", "add", l.Name); err != nil {
		return nil, fmt.Errorf("create LAN namespace: %w", err)
	}
	err := func() error {
		// No IPv6 on the bridge side: keeps the segment quiet (no RS/MLD
		// from the bridge and its ports).
		if err := writeSysctls(l.Name, [][2]string{
			{"net.ipv6.conf.all.disable_ipv6", "1"},
			{"net.ipv6.conf.default.disable_ipv6", "1"},
		}); err != nil {
			return err
		}
		if _, err := ip("-n", l.Name, "link", "set", "lo", "up"); err != nil {
			return fmt.Errorf("LAN lo up: %w", err)
		}
		if _, err := ip("-n", l.Name, "link", "add", "br0", "type", "bridge",
			"stp_state", "0", "forward_delay", "0", "mcast_snooping", "0"); err != nil {
			return fmt.Errorf("create bridge: %w", err)
		}
		if _, err := ip("-n", l.Name, "link", "set", "br0", "up"); err != nil {
			return fmt.Errorf("bridge up: %w", err)
		}
		return nil
	}()
	if err != nil {
		_, _ = ip("netns", "del", l.Name)
		return nil, err
	}
	return l, nil
}

// Hosts returns the hosts added so far.
func (l *LAN) Hosts() []*Host {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*Host(nil), l.hosts...)
}

// Close stops probes, responders and relays, kills (the process groups of)
// all processes started with Host.Start and deletes all namespaces of the
// LAN. It is idempotent.
func (l *LAN) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	hosts, cmds, closers := l.hosts, l.cmds, l.closers
	l.hosts, l.cmds, l.closers = nil, nil, nil
	l.mu.Unlock()

	var errs []error
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	for _, c := range cmds {
		if c.Process == nil {
			continue
		}
		// Negative pid: the whole process group (Start sets Setpgid).
		if err := unix.Kill(-c.Process.Pid, unix.SIGKILL); err != nil && !errors.Is(err, unix.ESRCH) {
			errs = append(errs, fmt.Errorf("kill process group %d (%s): %w", c.Process.Pid, c.Path, err))
		}
	}
	for i := len(hosts) - 1; i >= 0; i-- {
		if err := deleteNS(hosts[i].Name); err != nil {
			errs = append(errs, err)
		}
	}
	if err := deleteNS(l.Name); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// addCloser registers fn to run at Close; if the LAN is already closed it
// runs fn immediately and returns false.
func (l *LAN) addCloser(fn func()) bool {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		fn()
		return false
	}
	l.closers = append(l.closers, fn)
	l.mu.Unlock()
	return true
}

// Host is a namespace attached to a LAN.
type Host struct {
	// Name is the network namespace name (as in "ip netns").
	Name string
	// Role is the role given to AddHost.
	Role string
	// Interface is the LAN interface inside the namespace, "eth0".
	Interface string
	// MAC is the hardware address of Interface.
	MAC net.HardwareAddr
	// Addrs are the addresses assigned to Interface.
	Addrs []netip.Prefix

	lan    *LAN
	bridge string // bridge-side veth name in the LAN namespace
}

var roleRE = regexp.MustCompile(`^[a-z0-9]{1,16}$`)

// AddHost creates a namespace attached to the LAN with the given addresses
// on its "eth0". Inside, IPv6 DAD is disabled (addresses are added with
// nodad), arp_ignore=1 and arp_announce=2 are set on all interfaces, and lo
// and eth0 are up. AddHost returns once no IPv6 address is tentative.
// role must be 1-16 lowercase letters or digits.
func (l *LAN) AddHost(role string, prefixes ...netip.Prefix) (*Host, error) {
	if !roleRE.MatchString(role) {
		return nil, fmt.Errorf("add host: invalid role %q (want %s)", role, roleRE)
	}
	n := nextN()
	h := &Host{
		Name:      fmt.Sprintf("%s%d-%d-%s", Prefix, os.Getpid(), n, role),
		Role:      role,
		Interface: "eth0",
		Addrs:     append([]netip.Prefix(nil), prefixes...),
		lan:       l,
		bridge:    fmt.Sprintf("v%d", n),
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil, errors.New("add host: LAN closed")
	}
	if _, err := ip("netns", "add", h.Name); err != nil {
		l.mu.Unlock()
		return nil, fmt.Errorf("add host %s: %w", role, err)
	}
	// Registered before configuring, so Close removes it even if a later
	// step fails.
	l.hosts = append(l.hosts, h)
	l.mu.Unlock()

	if err := h.setup(); err != nil {
		return nil, fmt.Errorf("add host %s (%s): %w", role, h.Name, err)
	}
	return h, nil
}

func (h *Host) setup() error {
	if err := writeSysctls(h.Name, [][2]string{
		{"net.ipv6.conf.all.accept_dad", "0"},
		{"net.ipv6.conf.default.accept_dad", "0"},
		{"net.ipv6.conf.all.accept_ra", "0"},
		{"net.ipv6.conf.default.accept_ra", "0"},
		{"net.ipv4.conf.all.arp_ignore", "1"},
		{"net.ipv4.conf.all.arp_announce", "2"},
	}); err != nil {
		return err
	}
	if _, err := ip("-n", h.Name, "link", "set", "lo", "up"); err != nil {
		return fmt.Errorf("lo up: %w", err)
	}
	return h.attach()
}

// attach creates the host's link to the LAN (a veth pair with one end on
// the bridge), its addresses, and brings it up.
func (h *Host) attach() error {
	if _, err := ip("-n", h.lan.Name, "link", "add", h.bridge, "type", "veth",
		"peer", "name", h.Interface, "netns", h.Name); err != nil {
		return fmt.Errorf("create veth: %w", err)
	}
	if _, err := ip("-n", h.lan.Name, "link", "set", h.bridge, "master", "br0", "up"); err != nil {
		return fmt.Errorf("attach %s to br0: %w", h.bridge, err)
	}
	if err := writeSysctls(h.Name, [][2]string{
		{"net.ipv6.conf." + h.Interface + ".accept_dad", "0"},
	}); err != nil {
		return err
	}
	for _, p := range h.Addrs {
		args := []string{"-n", h.Name, "addr", "add", p.String(), "dev", h.Interface}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := ip(args...); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	if _, err := ip("-n", h.Name, "link", "set", h.Interface, "up"); err != nil {
		return fmt.Errorf("%s up: %w", h.Interface, err)
	}
	err := h.Do(func() error {
		ifi, err := net.InterfaceByName(h.Interface)
		if err != nil {
			return err
		}
		h.MAC = ifi.HardwareAddr
		return nil
	})
	if err != nil {
		return fmt.Errorf("read MAC: %w", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		out, err := ip("-n", h.Name, "-6", "addr", "show", "dev", h.Interface, "tentative")
		if err != nil {
			return fmt.Errorf("check tentative addresses: %w", err)
		}
		if strings.TrimSpace(out) == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("IPv6 addresses still tentative: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// LAN returns the LAN the host is attached to.
func (h *Host) LAN() *LAN { return h.lan }

// Do runs fn on an OS thread switched into the host's network namespace.
// Sockets created by fn stay in that namespace after Do returns. fn must not
// start goroutines that expect to be in the namespace. If switching back
// fails, the thread is discarded.
func (h *Host) Do(fn func() error) error {
	return Do(h.Name, fn)
}

// Do runs fn on an OS thread switched into the named network namespace
// (one of `ip netns list`), like Host.Do for namespaces made elsewhere.
func Do(name string, fn func() error) error {
	target, err := os.Open(netnsDir + "/" + name)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	// A fresh goroutine: if restoring the namespace fails, it exits while
	// still locked, which makes the runtime terminate the thread.
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", name, err)
			return
		}
		var ferr error
		func() {
			defer func() {
				if r := recover(); r != nil {
					ferr = fmt.Errorf("panic in netns %s: %v", name, r)
				}
			}()
			ferr = fn()
		}()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: it dies with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("restore netns: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// Command returns a command that runs name with args inside the host's
// namespace ("ip netns exec <ns> name args..."). Start it with Host.Start to
// have it killed at LAN.Close.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// Start starts cmd (typically from Command) in its own process group and
// arranges for the whole group to be killed at LAN.Close. The caller may
// still Wait for cmd.
func (h *Host) Start(cmd *exec.Cmd) error {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	h.lan.mu.Lock()
	defer h.lan.mu.Unlock()
	if h.lan.closed {
		return errors.New("start: LAN closed")
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in %s: %w", strings.Join(cmd.Args, " "), h.Name, err)
	}
	h.lan.cmds = append(h.lan.cmds, cmd)
	return nil
}

// Run runs args[0] with args[1:] inside the host's namespace and returns its
// combined output. The error includes the command and its output.
func (h *Host) Run(args ...string) (string, error) {
	if len(args) == 0 {
		return "", errors.New("run: no command")
	}
	out, err := h.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("in %s: %s: %w: %s", h.Name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// ip runs the ip tool in the current (host) namespace with args.
func ip(args ...string) (string, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// writeSysctls sets sysctls (dotted names) inside namespace ns.
func writeSysctls(ns string, kv [][2]string) error {
	return Do(ns, func() error {
		for _, e := range kv {
			// /proc/sys/net reflects the netns of the opening thread.
			p := "/proc/sys/" + strings.ReplaceAll(e[0], ".", "/")
			if err := os.WriteFile(p, []byte(e[1]), 0o644); err != nil {
				return fmt.Errorf("sysctl %s=%s: %w", e[0], e[1], err)
			}
		}
		return nil
	})
}

// Recreate deletes the host's interface and creates it again under the same
// name, with the same addresses but a new index and MAC address, as when a
// bond or VLAN is rebuilt.
func (h *Host) Recreate() error {
	if _, err := ip("-n", h.lan.Name, "link", "del", h.bridge); err != nil {
		return fmt.Errorf("delete the link of %s: %w", h.Name, err)
	}
	return h.attach()
}

// SetLink sets the bridge-side end of the host's veth down or up, as if the
// cable was pulled: the host disappears from the LAN silently.
func (h *Host) SetLink(up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	if _, err := ip("-n", h.lan.Name, "link", "set", h.bridge, state); err != nil {
		return fmt.Errorf("set link of %s %s: %w", h.Name, state, err)
	}
	return nil
}

// Neighbors returns the namespace's IPv4 and IPv6 neighbor entries that have
// a link-layer address (REACHABLE, STALE, DELAY, PROBE, PERMANENT...).
func (h *Host) Neighbors() (map[netip.Addr]net.HardwareAddr, error) {
	out, err := ip("-n", h.Name, "-j", "neigh", "show")
	if err != nil {
		return nil, fmt.Errorf("neighbors of %s: %w", h.Name, err)
	}
	var entries []struct {
		Dst    string `json:"dst"`
		LLAddr string `json:"lladdr"`
	}
	if s := strings.TrimSpace(out); s != "" {
		if err := json.Unmarshal([]byte(s), &entries); err != nil {
			return nil, fmt.Errorf("neighbors of %s: parse %q: %w", h.Name, s, err)
		}
	}
	m := make(map[netip.Addr]net.HardwareAddr)
	for _, e := range entries {
		if e.LLAddr == "" {
			continue
		}
		a, err := netip.ParseAddr(e.Dst)
		if err != nil {
			return nil, fmt.Errorf("neighbors of %s: %w", h.Name, err)
		}
		mac, err := net.ParseMAC(e.LLAddr)
		if err != nil {
			return nil, fmt.Errorf("neighbors of %s: %w", h.Name, err)
		}
		m[a] = mac
	}
	return m, nil
}

// FlushNeighbors flushes the namespace's dynamic IPv4 and IPv6 neighbor
// entries (permanent entries are kept).
func (h *Host) FlushNeighbors() error {
	for _, fam := range []string{"-4", "-6"} {
		if _, err := ip("-n", h.Name, fam, "neigh", "flush", "all"); err != nil {
			return fmt.Errorf("flush neighbors of %s: %w", h.Name, err)
		}
	}
	return nil
}

// AddLocalRoute adds "local <p> dev lo" in the namespace, so the host accepts
// traffic to every address of p without having it on an interface (like
// kube-proxy's IPVS mode). With arp_ignore=1 the host does not answer ARP
// for these addresses, and Linux never answers NDP for them.
func (h *Host) AddLocalRoute(p netip.Prefix) error {
	fam := "-4"
	if p.Addr().Is6() {
		fam = "-6"
	}
	if _, err := ip("-n", h.Name, fam, "route", "add", "local", p.Masked().String(), "dev", "lo"); err != nil {
		return fmt.Errorf("add local route in %s: %w", h.Name, err)
	}
	return nil
}

// Sweep deletes namespaces named "ilbt<pid>-..." whose pid is not a live
// process (leftovers of killed test runs), after killing any processes left
// inside them.
func Sweep() error {
	ents, err := os.ReadDir(netnsDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sweep: %w", err)
	}
	var errs []error
	for _, e := range ents {
		m := nsNameRE.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		pid, err := strconv.Atoi(m[1])
		if err != nil || pid <= 0 || pidAlive(pid) {
			continue
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func pidAlive(pid int) bool {
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// deleteNS kills processes remaining in namespace name and deletes it. A
// missing namespace is not an error.
func deleteNS(name string) error {
	if _, err := os.Stat(netnsDir + "/" + name); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if out, err := ip("netns", "pids", name); err == nil {
		for _, f := range strings.Fields(out) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 && pid != os.Getpid() {
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
	if _, err := ip("netns", "del", name); err != nil {
		if _, serr := os.Stat(netnsDir + "/" + name); errors.Is(serr, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("delete namespace: %w", err)
	}
	return nil
}

// AttachTo gives the host a second interface, ifname, on another LAN with
// the given addresses (a router between two segments). The interface goes
// when either namespace does.
func (h *Host) AttachTo(other *LAN, ifname string, prefixes ...netip.Prefix) error {
	bridge := fmt.Sprintf("v%d", nextN())
	if _, err := ip("-n", other.Name, "link", "add", bridge, "type", "veth", "peer", "name", ifname, "netns", h.Name); err != nil {
		return fmt.Errorf("attach %s to %s: create veth: %w", h.Name, other.Name, err)
	}
	if _, err := ip("-n", other.Name, "link", "set", bridge, "master", "br0", "up"); err != nil {
		return fmt.Errorf("attach %s to %s: %w", h.Name, other.Name, err)
	}
	if err := writeSysctls(h.Name, [][2]string{{"net.ipv6.conf." + ifname + ".accept_dad", "0"}}); err != nil {
		return err
	}
	for _, p := range prefixes {
		args := []string{"-n", h.Name, "addr", "add", p.String(), "dev", ifname}
		if p.Addr().Is6() {
			args = append(args, "nodad")
		}
		if _, err := ip(args...); err != nil {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	if _, err := ip("-n", h.Name, "link", "set", ifname, "up"); err != nil {
		return fmt.Errorf("%s up: %w", ifname, err)
	}
	return nil
}

// AddRoute adds a route in the host's namespace: ip route add prefix via gw.
func (h *Host) AddRoute(prefix netip.Prefix, gw netip.Addr) error {
	args := []string{"-n", h.Name}
	if prefix.Addr().Is6() {
		args = append(args, "-6")
	}
	args = append(args, "route", "add", prefix.String(), "via", gw.String())
	if _, err := ip(args...); err != nil {
		return fmt.Errorf("route %s via %s in %s: %w", prefix, gw, h.Name, err)
	}
	return nil
}
