// Package frr runs FRR (Debian's frr package: zebra, bfdd and bgpd) as the
// router of a netrig host, for tests that need a real BGP peer. Each
// router has its own state folder and vty sockets, so that several run at
// once; tests read its state as JSON through vtysh.
package frr

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// Daemons is where Debian installs FRR's daemons.
const Daemons = "/usr/lib/frr"

// daemons are the ones a Router runs, in start order.
var daemons = []string{"zebra", "bfdd", "bgpd"}

// Usable reports why FRR cannot run here, or nil.
func Usable() error {
	for _, d := range daemons {
		if _, err := os.Stat(filepath.Join(Daemons, d)); err != nil {
			return fmt.Errorf("frr: %s not installed (apt-get install -y frr): %w", d, err)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		return fmt.Errorf("frr: vtysh not found: %w", err)
	}
	if _, err := user.Lookup("frr"); err != nil {
		return fmt.Errorf("frr: no frr user: %w", err)
	}
	return nil
}

// Router is FRR running in a host's namespace.
type Router struct {
	Host *netrig.Host
	dir  string
}

// Start runs zebra, bfdd and bgpd in h's namespace with bgpdConf as bgpd's
// configuration, turns on forwarding and layer-4 ECMP hashing there, and
// waits until bgpd answers. Close stops it; the LAN's Close kills it too.
func Start(h *netrig.Host, bgpdConf string) (*Router, error) {
	if err := Usable(); err != nil {
		return nil, err
	}
	for _, kv := range []string{
		"net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1",
		"net.ipv4.fib_multipath_hash_policy=1", "net.ipv6.fib_multipath_hash_policy=1",
	} {
		if _, err := h.Run("sysctl", "-q", "-w", kv); err != nil {
			return nil, err
		}
	}
	// FRR's daemons drop to the frr user: their folder must be theirs,
	// and reachable (a test's TempDir is not).
	dir, err := os.MkdirTemp("", "ironlb-frr-")
	if err != nil {
		return nil, err
	}
	r := &Router{Host: h, dir: dir}
	u, err := user.Lookup("frr")
	if err != nil {
		return nil, err
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	files := map[string]string{
		"zebra.conf": "hostname " + h.Role + "\n",
		"bfdd.conf":  "hostname " + h.Role + "\n",
		"bgpd.conf":  bgpdConf,
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			return nil, err
		}
		if err := os.Chown(p, uid, gid); err != nil {
			return nil, err
		}
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, err
	}
	for _, d := range daemons {
		args := []string{
			"--vty_socket", dir, "-z", filepath.Join(dir, "zserv.api"),
			"-i", filepath.Join(dir, d+".pid"), "-f", filepath.Join(dir, d+".conf"),
			"-u", "frr", "-g", "frr", "-P", "0", "--log", "file:" + filepath.Join(dir, d+".log"),
		}
		if d == "bfdd" { // its control socket is global by default
			args = append(args, "--bfdctl", filepath.Join(dir, "bfdd.sock"))
		}
		log, err := os.Create(filepath.Join(dir, d+".out"))
		if err != nil {
			return nil, err
		}
		cmd := h.Command(filepath.Join(Daemons, d), args...)
		cmd.Stdout, cmd.Stderr = log, log
		if err := h.Start(cmd); err != nil {
			log.Close()
			return nil, err
		}
		log.Close()
		if err := r.waitVty(d, 10*time.Second); err != nil {
			return nil, fmt.Errorf("%s in %s: %w\n%s", d, h.Name, err, r.Log(d))
		}
	}
	return r, nil
}

// waitVty waits until daemon d answers on its vty socket.
func (r *Router) waitVty(d string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := r.Vtysh(context.Background(), "show version")
		if err == nil {
			if _, serr := os.Stat(filepath.Join(r.dir, d+".vty")); serr == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no answer on its vty after %s: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log returns daemon d's log (zebra, bfdd or bgpd).
func (r *Router) Log(d string) string {
	var b strings.Builder
	for _, f := range []string{d + ".log", d + ".out"} {
		if data, err := os.ReadFile(filepath.Join(r.dir, f)); err == nil {
			b.Write(data)
		}
	}
	return b.String()
}

// Vtysh runs vtysh commands against this router and returns the output.
func (r *Router) Vtysh(ctx context.Context, cmds ...string) (string, error) {
	args := []string{"--vty_socket", r.dir}
	for _, c := range cmds {
		args = append(args, "-c", c)
	}
	out, err := exec.CommandContext(ctx, "vtysh", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("vtysh %q: %w: %s", cmds, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Configure applies configuration lines (as after "configure terminal").
func (r *Router) Configure(ctx context.Context, lines ...string) error {
	_, err := r.Vtysh(ctx, append([]string{"configure terminal"}, lines...)...)
	return err
}

// JSON runs a show command ending in "json" and decodes its output into v.
func (r *Router) JSON(ctx context.Context, cmd string, v any) error {
	out, err := r.Vtysh(ctx, cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		return fmt.Errorf("%s: %w: %s", cmd, err, out)
	}
	return nil
}

// Close stops the daemons and removes the router's folder.
func (r *Router) Close() error {
	var errs []error
	for _, d := range slices.Backward(daemons) {
		pid, err := os.ReadFile(filepath.Join(r.dir, d+".pid"))
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(pid))); err == nil {
			if p, err := os.FindProcess(n); err == nil {
				_ = p.Kill()
			}
		}
	}
	if err := os.RemoveAll(r.dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Pid returns the process ID of daemon d (zebra, bfdd or bgpd).
func (r *Router) Pid(d string) (int, error) {
	data, err := os.ReadFile(filepath.Join(r.dir, d+".pid"))
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// VtyshCommand is the shell command that opens vtysh on this router.
func (r *Router) VtyshCommand() string { return "vtysh --vty_socket " + r.dir }

// Dir is the router's folder: its configuration, logs and vty sockets.
func (r *Router) Dir() string { return r.dir }

// Attach returns the router running in h's namespace with folder dir, as
// Start made it (in another process).
func Attach(h *netrig.Host, dir string) *Router { return &Router{Host: h, dir: dir} }
