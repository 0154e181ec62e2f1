package e2e

import (
	"context"
	"encoding/csv"
	"encoding/json"
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
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// The DHCP server of TestDHCPBackedPool: a Kea host on the layer-2 rig's
// LAN at .5 (the rig uses .2, .11.., .100), handing out three addresses of
// the part of the LAN the nodes route locally (rig.PoolV4) that no other
// pool of the test uses.
const (
	keaBin      = "/usr/sbin/kea-dhcp4"
	keaFirst    = "192.0.2.220"
	keaLast     = "192.0.2.222"
	dhcpPoolYAM = "{addresses: ['" + keaFirst + "-" + keaLast + "'], autoAssign: false, dhcp: {}}"
)

var keaServer = netip.MustParsePrefix("192.0.2.5/24")

// kea is a kea-dhcp4 process in its own host on the LAN, persisting its
// leases to a memfile CSV that survives restarts.
type kea struct {
	t      *testing.T
	host   *netrig.Host
	dir    string
	config string
	leases string
	runs   int

	mu   sync.Mutex
	cmd  *exec.Cmd
	once *sync.Once
}

func startKeaHost(t *testing.T, lan *netrig.LAN) *kea {
	t.Helper()
	h, err := lan.AddHost("dhcpsrv", keaServer)
	if err != nil {
		t.Fatal(err)
	}
	k := &kea{t: t, host: h, dir: t.TempDir()}
	k.leases = filepath.Join(k.dir, "leases.csv")
	cfg := map[string]any{"Dhcp4": map[string]any{
		"interfaces-config": map[string]any{"interfaces": []string{h.Interface}, "dhcp-socket-type": "raw"},
		"lease-database":    map[string]any{"type": "memfile", "persist": true, "name": k.leases, "lfc-interval": 0},
		"valid-lifetime":    8,
		"renew-timer":       3,
		"rebind-timer":      6,
		"subnet4": []any{map[string]any{
			"id":     1,
			"subnet": rig.LANv4.String(),
			"pools":  []any{map[string]any{"pool": keaFirst + " - " + keaLast}},
		}},
		"loggers": []any{map[string]any{
			"name": "kea-dhcp4", "severity": "INFO",
			"output_options": []any{map[string]any{"output": "stdout"}},
		}},
	}}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	k.config = filepath.Join(k.dir, "kea.json")
	if err := os.WriteFile(k.config, b, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			for i := 1; i <= k.runs; i++ {
				out, _ := os.ReadFile(k.log(i))
				if len(out) > 4000 {
					out = out[len(out)-4000:]
				}
				t.Logf("kea run %d output (tail):\n%s", i, out)
			}
			leases, _ := os.ReadFile(k.leases)
			t.Logf("kea lease file:\n%s", leases)
		}
	})
	k.start()
	return k
}

func (k *kea) log(run int) string { return filepath.Join(k.dir, fmt.Sprintf("kea-%d.log", run)) }

// start runs kea-dhcp4 and waits until it serves.
func (k *kea) start() {
	k.t.Helper()
	k.runs++
	path := k.log(k.runs)
	out, err := os.Create(path)
	if err != nil {
		k.t.Fatal(err)
	}
	defer out.Close()
	cmd := k.host.Command(keaBin, "-c", k.config)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "KEA_LOCKFILE_DIR="+k.dir, "KEA_PIDFILE_DIR="+k.dir)
	if err := k.host.Start(cmd); err != nil {
		k.t.Fatal(err)
	}
	k.mu.Lock()
	k.cmd, k.once = cmd, &sync.Once{}
	k.mu.Unlock()
	err = rig.Eventually(15*time.Second, func() error {
		b, _ := os.ReadFile(path)
		if !strings.Contains(string(b), "DHCP4_STARTED") {
			return fmt.Errorf("kea not started yet: %s", b)
		}
		return nil
	})
	if err != nil {
		k.t.Fatal(err)
	}
}

// stop kills kea (its process group) and reaps it.
func (k *kea) stop() {
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

// keaRow is the last row of Kea's lease file for an address.
type keaRow struct {
	clientID      string
	valid, expire int64
	state         string
}

// rows reads the lease file: a header, then one row per change, the last
// row of an address winning.
func (k *kea) rows() (map[netip.Addr]keaRow, error) {
	f, err := os.Open(k.leases)
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
	m := map[netip.Addr]keaRow{}
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
		m[a] = keaRow{clientID: get("client_id"), valid: valid, expire: expire, state: get("state")}
	}
	return m, nil
}

// row waits until cond holds for addr's row and returns it.
func (k *kea) row(addr netip.Addr, timeout time.Duration, what string, cond func(keaRow) bool) keaRow {
	k.t.Helper()
	var got keaRow
	err := rig.Eventually(timeout, func() error {
		m, err := k.rows()
		if err != nil {
			return err
		}
		got = m[addr]
		if !cond(got) {
			return fmt.Errorf("%s: Kea's row for %s is %+v", what, addr, got)
		}
		return nil
	})
	if err != nil {
		k.t.Fatal(err)
	}
	return got
}

// renewed waits until addr's expiry in Kea's file passes after.
func (k *kea) renewed(addr netip.Addr, after int64, timeout time.Duration) keaRow {
	k.t.Helper()
	return k.row(addr, timeout, fmt.Sprintf("expiry past %d", after), func(r keaRow) bool { return r.valid > 0 && r.expire > after })
}

// held returns the addresses Kea's file shows leased (not released).
func (k *kea) held() []netip.Addr {
	k.t.Helper()
	m, err := k.rows()
	if err != nil {
		k.t.Fatal(err)
	}
	var out []netip.Addr
	for a, r := range m {
		if r.valid > 0 {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// ironlbClientID is how Kea's file shows IronLB's client identifiers:
// option 61 type 0, then "ironlb-…", in colon-hex.
var ironlbClientID = func() string {
	s := []string{"00"}
	for _, c := range []byte("ironlb-") {
		s = append(s, fmt.Sprintf("%02x", c))
	}
	return strings.Join(s, ":")
}()

// TestDHCPBackedPool runs a DHCP-backed IPPool (spec.dhcp) on the
// layer-2 rig with the real CCM and speakers and a real Kea on the LAN:
// leases, renewals, restarts of every component, requested addresses, an
// exhausted pool, the server down, and releases.
func TestDHCPBackedPool(t *testing.T) {
	skipShort(t)
	if _, err := os.Stat(keaBin); err != nil {
		t.Skipf("%s not installed (make deps installs it): %v", keaBin, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	k := startKeaHost(t, r.LAN)
	c.applyPool("dhcp", dhcpPoolYAM)
	onPool := map[string]string{"ironlb.dev/pool": "dhcp"}
	withIP := func(ip string) map[string]string {
		return map[string]string{"ironlb.dev/pool": "dhcp", "ironlb.dev/load-balancer-ips": ip}
	}
	services := c.cp.Client.CoreV1().Services("default")
	deleteService := func(name string) {
		t.Helper()
		if err := services.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatalf("deleting Service %s: %v", name, err)
		}
	}
	// noStatus checks that a Service has no address.
	noStatus := func(name string) {
		t.Helper()
		svc, err := services.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := ingress(svc); len(got) > 0 {
			t.Fatalf("Service %s got %v; want none", name, got)
		}
	}
	inKeaPool := func(a netip.Addr) bool {
		return a.Compare(netip.MustParseAddr(keaFirst)) >= 0 && a.Compare(netip.MustParseAddr(keaLast)) <= 0
	}

	var vipA netip.Addr
	var rowA keaRow
	t.Run("a Service gets a leased address", func(t *testing.T) {
		start := time.Now()
		c.createService(lbService("default", "dhcp-a", onPool))
		vipA = c.vip("default", "dhcp-a")
		t.Logf("dhcp-a: create → address %s in %.2f s", vipA, time.Since(start).Seconds())
		if evs, err := c.cp.Client.CoreV1().Events("default").List(ctx, metav1.ListOptions{}); err == nil {
			for _, e := range evs.Items {
				if e.InvolvedObject.Name == "dhcp-a" && e.Type == corev1.EventTypeWarning {
					t.Logf("dhcp-a: Event %s %s (x%d): %s", e.Type, e.Reason, e.Count, e.Message)
				}
			}
		}
		if !inKeaPool(vipA) {
			t.Fatalf("dhcp-a got %s, outside Kea's pool %s-%s", vipA, keaFirst, keaLast)
		}
		rowA = k.row(vipA, 5*time.Second, "the lease", func(r keaRow) bool { return r.valid == 8 })
		if !strings.HasPrefix(rowA.clientID, ironlbClientID) {
			t.Errorf("Kea leased %s to client %q, want IronLB's (%s…)", vipA, rowA.clientID, ironlbClientID)
		}
		if held := k.held(); !slices.Equal(held, []netip.Addr{vipA}) {
			t.Errorf("Kea's leases %v, want only %s", held, vipA)
		}
		node := checkAnnouncer(t, ctx, r, vipA)
		t.Logf("dhcp-a: %s leased to %s, announced by %s", vipA, rowA.clientID, node)
	})
	if vipA == (netip.Addr{}) {
		t.FailNow()
	}

	t.Run("renewals", func(t *testing.T) {
		start := time.Now()
		r1 := k.renewed(vipA, rowA.expire, 15*time.Second)
		r2 := k.renewed(vipA, r1.expire, 15*time.Second)
		t.Logf("two renewals of %s in %.1f s (expiry %d → %d → %d)", vipA, time.Since(start).Seconds(), rowA.expire, r1.expire, r2.expire)
		if r2.clientID != rowA.clientID {
			t.Errorf("renewed under client %q, leased under %q", r2.clientID, rowA.clientID)
		}
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after renewals, was %s", got, vipA)
		}
		rowA = r2
	})

	t.Run("speakers and CCM restart", func(t *testing.T) {
		for _, n := range r.Nodes {
			if err := r.StopSpeaker(n); err != nil {
				t.Fatal(err)
			}
			if err := r.StartNewSpeaker(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.CCM.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		// Kea's row now is the old CCM's last renewal.
		m, err := k.rows()
		if err != nil {
			t.Fatal(err)
		}
		restarted := time.Now()
		if err := r.StartCCM("ironlb-ccm-2", false); err != nil {
			t.Fatal(err)
		}
		c.ccm = r.CCM
		// The new CCM adopts the lease and renews it at once.
		row := k.renewed(vipA, m[vipA].expire, 20*time.Second)
		t.Logf("the new CCM renewed %s %.1f s after its start", vipA, time.Since(restarted).Seconds())
		if row.clientID != rowA.clientID {
			t.Errorf("renewed under client %q, leased under %q", row.clientID, rowA.clientID)
		}
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after the restarts, was %s", got, vipA)
		}
		if held := k.held(); !slices.Equal(held, []netip.Addr{vipA}) {
			t.Errorf("Kea's leases %v after the restarts, want only %s", held, vipA)
		}
		checkAnnouncer(t, ctx, r, vipA)
		rowA = row
	})

	t.Run("Kea restarts", func(t *testing.T) {
		k.stop()
		k.start()
		m, err := k.rows()
		if err != nil {
			t.Fatal(err)
		}
		row := k.renewed(vipA, m[vipA].expire, 20*time.Second)
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after Kea's restart, was %s", got, vipA)
		}
		if row.clientID != rowA.clientID {
			t.Errorf("renewed under client %q, leased under %q", row.clientID, rowA.clientID)
		}
	})

	var vipB netip.Addr
	t.Run("requested address", func(t *testing.T) {
		for _, a := range []string{keaFirst, "192.0.2.221", keaLast} {
			if x := netip.MustParseAddr(a); x != vipA {
				vipB = x
				break
			}
		}
		start := time.Now()
		c.createService(lbService("default", "dhcp-b", withIP(vipB.String())))
		if got := c.vip("default", "dhcp-b"); got != vipB {
			t.Fatalf("dhcp-b asked for %s, got %s", vipB, got)
		}
		t.Logf("dhcp-b: create → requested %s in %.2f s", vipB, time.Since(start).Seconds())
		row := k.row(vipB, 5*time.Second, "the requested lease", func(r keaRow) bool { return r.valid > 0 })
		if !strings.HasPrefix(row.clientID, ironlbClientID) || row.clientID == rowA.clientID {
			t.Errorf("Kea leased %s to %q (dhcp-a is %q)", vipB, row.clientID, rowA.clientID)
		}

		c.createService(lbService("default", "dhcp-c", withIP(vipA.String())))
		c.waitEvent("default", "dhcp-c", corev1.EventTypeWarning, "DHCPRequestedAddressRefused", vipA.String())
		noStatus("dhcp-c")
		if held := k.held(); len(held) != 2 {
			t.Errorf("Kea's leases %v, want dhcp-a's and dhcp-b's only", held)
		}
		deleteService("dhcp-c")
	})

	var vipD netip.Addr
	t.Run("pool exhausted", func(t *testing.T) {
		c.createService(lbService("default", "dhcp-d", onPool))
		vipD = c.vip("default", "dhcp-d")
		if vipD == vipA || vipD == vipB || !inKeaPool(vipD) {
			t.Fatalf("dhcp-d got %s (a %s, b %s)", vipD, vipA, vipB)
		}
		c.createService(lbService("default", "dhcp-e", onPool))
		c.waitEvent("default", "dhcp-e", corev1.EventTypeWarning, "DHCPLeasePending", "")
		noStatus("dhcp-e")
		deleteService("dhcp-d")
		freed := time.Now()
		k.row(vipD, 15*time.Second, "dhcp-d's release", func(r keaRow) bool { return r.valid == 0 })
		got := netip.MustParseAddr(c.waitIngress("default", "dhcp-e", 1, 60*time.Second)[0])
		t.Logf("dhcp-e: got %s %.1f s after dhcp-d's deletion", got, time.Since(freed).Seconds())
		if got != vipD {
			t.Errorf("dhcp-e got %s, want the freed %s", got, vipD)
		}
	})

	t.Run("server down", func(t *testing.T) {
		// Free an address first: dhcp-a, b and e hold all three.
		deleteService("dhcp-b")
		k.row(vipB, 15*time.Second, "dhcp-b's release", func(r keaRow) bool { return r.valid == 0 })
		k.stop()
		c.createService(lbService("default", "dhcp-f", onPool))
		c.waitEvent("default", "dhcp-f", corev1.EventTypeWarning, "DHCPLeasePending", "")
		noStatus("dhcp-f")
		k.start()
		up := time.Now()
		got := netip.MustParseAddr(c.waitIngress("default", "dhcp-f", 1, 60*time.Second)[0])
		t.Logf("dhcp-f: got %s %.1f s after Kea came back", got, time.Since(up).Seconds())
		if !inKeaPool(got) {
			t.Errorf("dhcp-f got %s, outside Kea's pool", got)
		}
		k.row(got, 5*time.Second, "dhcp-f's lease", func(r keaRow) bool { return r.valid > 0 })
	})

	t.Run("delete releases and withdraws", func(t *testing.T) {
		vip := c.vip("default", "dhcp-a")
		checkAnnouncer(t, ctx, r, vip)
		deleteService("dhcp-a")
		k.row(vip, 15*time.Second, "dhcp-a's release", func(r keaRow) bool { return r.valid == 0 })
		err := rig.Eventually(15*time.Second, func() error {
			if ann := r.Announcers(ctx, []netip.Addr{vip}); len(ann[vip]) > 0 {
				return fmt.Errorf("%s still announced by %v", vip, ann[vip])
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		_ = r.Client.FlushNeighbors()
		if node, err := r.Reach(ctx, vip, 500*time.Millisecond); err == nil {
			t.Errorf("%s still answered by %s after the delete", vip, node)
		}
	})
}
