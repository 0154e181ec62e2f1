package rig

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/netrig"
)

// KeaBin is Kea's DHCPv4 server (Debian's kea-dhcp4-server; make deps
// installs it).
const KeaBin = "/usr/sbin/kea-dhcp4"

// KeaSubnet is one subnet Kea serves and its pools, each "first - last"
// or a prefix.
type KeaSubnet struct {
	Subnet netip.Prefix
	Pools  []string
}

// KeaOptions configures a Kea host on a LAN.
type KeaOptions struct {
	// Address is the host's address on the LAN (e.g. 192.0.2.5/24).
	Address netip.Prefix
	// Subnets Kea serves. With SharedNetwork set they form one shared
	// network on the host's interface (Kea then hands out addresses of
	// every subnet to the LAN's clients); otherwise they are plain
	// subnets (the one holding the host's address serves the LAN).
	Subnets       []KeaSubnet
	SharedNetwork string
	// Valid, Renew and Rebind are the lease times in seconds (default
	// 3600, 900, 1800).
	Valid, Renew, Rebind int
	// Dir holds the configuration, logs and lease files; default a new
	// temporary folder, removed by Close.
	Dir string
}

// KeaRow is the last row of Kea's lease file for an address.
type KeaRow struct {
	HWAddr        string
	ClientID      string
	Valid, Expire int64
	State         string
}

// Kea is a kea-dhcp4 process in its own host on the LAN, persisting its
// leases to a memfile CSV that survives restarts.
type Kea struct {
	Host *netrig.Host
	Dir  string

	opts    KeaOptions
	tempDir bool
	config  string
	leases  string
	runs    int
	files   int

	mu   sync.Mutex
	cmd  *exec.Cmd
	once *sync.Once
}

// StartKea adds a host for Kea on lan, writes its configuration and starts
// it (Start). Close stops it; the LAN's owner removes the host.
func StartKea(lan *netrig.LAN, opts KeaOptions) (*Kea, error) {
	if opts.Valid == 0 {
		opts.Valid, opts.Renew, opts.Rebind = 3600, 900, 1800
	}
	if len(opts.Subnets) == 0 {
		return nil, errors.New("kea: no subnets")
	}
	k := &Kea{opts: opts, Dir: opts.Dir}
	if k.Dir == "" {
		d, err := os.MkdirTemp("", "ironlb-kea-")
		if err != nil {
			return nil, err
		}
		k.Dir, k.tempDir = d, true
	}
	h, err := lan.AddHost("dhcpsrv", opts.Address)
	if err != nil {
		k.Close()
		return nil, err
	}
	k.Host = h
	if err := k.writeConfig(); err != nil {
		k.Close()
		return nil, err
	}
	if err := k.Start(); err != nil {
		k.Close()
		return nil, err
	}
	return k, nil
}

// writeConfig writes Kea's configuration with the next lease file.
func (k *Kea) writeConfig() error {
	k.files++
	k.leases = filepath.Join(k.Dir, "leases.csv")
	if k.files > 1 {
		k.leases = filepath.Join(k.Dir, fmt.Sprintf("leases-%d.csv", k.files))
	}
	var subnets []any
	for i, s := range k.opts.Subnets {
		var pools []any
		for _, p := range s.Pools {
			pools = append(pools, map[string]any{"pool": p})
		}
		sub := map[string]any{"id": i + 1, "subnet": s.Subnet.Masked().String()}
		if len(pools) > 0 {
			sub["pools"] = pools
		}
		subnets = append(subnets, sub)
	}
	dhcp4 := map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{k.Host.Interface}, "dhcp-socket-type": "raw"},
		"lease-database":    map[string]any{"type": "memfile", "persist": true, "name": k.leases, "lfc-interval": 0},
		"valid-lifetime":    k.opts.Valid,
		"renew-timer":       k.opts.Renew,
		"rebind-timer":      k.opts.Rebind,
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "INFO",
			"output_options": []any{map[string]any{"output": "stdout"}},
		}},
	}
	if k.opts.SharedNetwork != "" {
		dhcp4["shared-networks"] = []any{map[string]any{
			"name": k.opts.SharedNetwork, "interface": k.Host.Interface, "subnet4": subnets,
		}}
	} else {
		dhcp4["subnet4"] = subnets
	}
	b, err := json.MarshalIndent(map[string]any{"Dhcp4": dhcp4}, "", "  ")
	if err != nil {
		return err
	}
	k.config = filepath.Join(k.Dir, "kea.json")
	return os.WriteFile(k.config, b, 0o644)
}

// LeaseFile is the lease file Kea writes now.
func (k *Kea) LeaseFile() string { return k.leases }

// Runs is how many times Kea was started.
func (k *Kea) Runs() int { return k.runs }

// LogFile is the output of run (1..Runs).
func (k *Kea) LogFile(run int) string { return filepath.Join(k.Dir, fmt.Sprintf("kea-%d.log", run)) }

// Output returns the tail (at most max bytes) of every run's output and
// the lease file, for failures.
func (k *Kea) Output(max int) string {
	var b strings.Builder
	for i := 1; i <= k.runs; i++ {
		out, _ := os.ReadFile(k.LogFile(i))
		if len(out) > max {
			out = out[len(out)-max:]
		}
		fmt.Fprintf(&b, "kea run %d output (tail):\n%s\n", i, out)
	}
	leases, _ := os.ReadFile(k.leases)
	if len(leases) > max {
		leases = leases[len(leases)-max:]
	}
	fmt.Fprintf(&b, "kea lease file %s (tail):\n%s\n", k.leases, leases)
	return b.String()
}

// Start runs kea-dhcp4 and waits until it serves.
func (k *Kea) Start() error {
	k.runs++
	path := k.LogFile(k.runs)
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := k.Host.Command(KeaBin, "-c", k.config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "KEA_LOCKFILE_DIR="+k.Dir, "KEA_PIDFILE_DIR="+k.Dir)
	if err := k.Host.Start(cmd); err != nil {
		return err
	}
	k.mu.Lock()
	k.cmd, k.once = cmd, &sync.Once{}
	k.mu.Unlock()
	err = Eventually(15*time.Second, func() error {
		b, _ := os.ReadFile(path)
		if !strings.Contains(string(b), "DHCP4_STARTED") {
			return fmt.Errorf("kea not started yet: %s", b)
		}
		return nil
	})
	if err != nil {
		k.Stop()
	}
	return err
}

// Stop kills kea (its process group) and reaps it.
func (k *Kea) Stop() {
	k.mu.Lock()
	cmd, once := k.cmd, k.once
	k.mu.Unlock()
	if cmd == nil {
		return
	}
	once.Do(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		_ = cmd.Wait()
	})
}

// NewLeaseFile restarts Kea with a new, empty lease file: no lease of
// before blocks an address.
func (k *Kea) NewLeaseFile() error {
	k.Stop()
	if err := k.writeConfig(); err != nil {
		return err
	}
	return k.Start()
}

// Close stops Kea and removes its folder if StartKea made it.
func (k *Kea) Close() {
	k.Stop()
	if k.tempDir {
		_ = os.RemoveAll(k.Dir)
	}
}

// Rows reads the lease file (ReadKeaLeases).
func (k *Kea) Rows() (map[netip.Addr]KeaRow, error) { return ReadKeaLeases(k.leases) }

// ReadKeaLeases reads a Kea memfile CSV: a header, then one row per
// change, the last row of an address winning.
func ReadKeaLeases(path string) (map[netip.Addr]KeaRow, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cr := csv.NewReader(f)
	cr.FieldsPerRecord = -1
	all, err := cr.ReadAll()
	if err != nil || len(all) == 0 {
		return nil, err
	}
	col := map[string]int{}
	for i, h := range all[0] {
		col[h] = i
	}
	m := map[netip.Addr]KeaRow{}
	for _, row := range all[1:] {
		get := func(name string) string {
			if i, ok := col[name]; ok && i < len(row) {
				return row[i]
			}
			return ""
		}
		a, err := netip.ParseAddr(get("address"))
		if err != nil {
			continue // a row being written
		}
		valid, _ := strconv.ParseInt(get("valid_lifetime"), 10, 64)
		expire, _ := strconv.ParseInt(get("expire"), 10, 64)
		m[a] = KeaRow{HWAddr: get("hwaddr"), ClientID: get("client_id"), Valid: valid, Expire: expire, State: get("state")}
	}
	return m, nil
}

// Row waits until cond holds for addr's row and returns it.
func (k *Kea) Row(addr netip.Addr, timeout time.Duration, what string, cond func(KeaRow) bool) (KeaRow, error) {
	var got KeaRow
	err := Eventually(timeout, func() error {
		m, err := k.Rows()
		if err != nil {
			return err
		}
		got = m[addr]
		if !cond(got) {
			return fmt.Errorf("%s: Kea's row for %s is %+v", what, addr, got)
		}
		return nil
	})
	return got, err
}

// Renewed waits until addr's expiry in Kea's file passes after.
func (k *Kea) Renewed(addr netip.Addr, after int64, timeout time.Duration) (KeaRow, error) {
	return k.Row(addr, timeout, fmt.Sprintf("expiry past %d", after), func(r KeaRow) bool { return r.Valid > 0 && r.Expire > after })
}

// Held returns the addresses Kea's file shows leased (not released).
func (k *Kea) Held() ([]netip.Addr, error) {
	m, err := k.Rows()
	if err != nil {
		return nil, err
	}
	var out []netip.Addr
	for a, r := range m {
		if r.Valid > 0 {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out, nil
}
