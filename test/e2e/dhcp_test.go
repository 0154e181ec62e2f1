package e2e

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
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
	keaBin      = rig.KeaBin
	keaFirst    = "192.0.2.220"
	keaLast     = "192.0.2.222"
	dhcpPoolYAM = "{addresses: ['" + keaFirst + "-" + keaLast + "'], autoAssign: false, dhcp: {}}"
)

var keaServer = netip.MustParsePrefix("192.0.2.5/24")

// kea is the test's handle on rig.Kea: its failures end the test, and the
// test's log gets Kea's output and lease file when it fails.
type kea struct {
	t *testing.T
	*rig.Kea
}

type keaRow = rig.KeaRow

func startKeaHost(t *testing.T, lan *netrig.LAN) *kea {
	t.Helper()
	k, err := rig.StartKea(lan, rig.KeaOptions{
		Address: keaServer,
		Subnets: []rig.KeaSubnet{{Subnet: rig.LANv4, Pools: []string{keaFirst + " - " + keaLast}}},
		Valid:   8, Renew: 3, Rebind: 6,
		Dir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		k.Close()
		if t.Failed() {
			t.Logf("%s", k.Output(4000))
		}
	})
	return &kea{t: t, Kea: k}
}

func (k *kea) start() {
	k.t.Helper()
	if err := k.Start(); err != nil {
		k.t.Fatal(err)
	}
}

func (k *kea) stop() { k.Stop() }

func (k *kea) rows() (map[netip.Addr]keaRow, error) { return k.Rows() }

// row waits until cond holds for addr's row and returns it.
func (k *kea) row(addr netip.Addr, timeout time.Duration, what string, cond func(keaRow) bool) keaRow {
	k.t.Helper()
	got, err := k.Row(addr, timeout, what, cond)
	if err != nil {
		k.t.Fatal(err)
	}
	return got
}

// renewed waits until addr's expiry in Kea's file passes after.
func (k *kea) renewed(addr netip.Addr, after int64, timeout time.Duration) keaRow {
	k.t.Helper()
	got, err := k.Renewed(addr, after, timeout)
	if err != nil {
		k.t.Fatal(err)
	}
	return got
}

// held returns the addresses Kea's file shows leased (not released).
func (k *kea) held() []netip.Addr {
	k.t.Helper()
	out, err := k.Held()
	if err != nil {
		k.t.Fatal(err)
	}
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
		rowA = k.row(vipA, 5*time.Second, "the lease", func(r keaRow) bool { return r.Valid == 8 })
		if !strings.HasPrefix(rowA.ClientID, ironlbClientID) {
			t.Errorf("Kea leased %s to client %q, want IronLB's (%s…)", vipA, rowA.ClientID, ironlbClientID)
		}
		if held := k.held(); !slices.Equal(held, []netip.Addr{vipA}) {
			t.Errorf("Kea's leases %v, want only %s", held, vipA)
		}
		node := checkAnnouncer(t, ctx, r, vipA)
		t.Logf("dhcp-a: %s leased to %s, announced by %s", vipA, rowA.ClientID, node)
	})
	if vipA == (netip.Addr{}) {
		t.FailNow()
	}

	t.Run("renewals", func(t *testing.T) {
		start := time.Now()
		r1 := k.renewed(vipA, rowA.Expire, 15*time.Second)
		r2 := k.renewed(vipA, r1.Expire, 15*time.Second)
		t.Logf("two renewals of %s in %.1f s (expiry %d → %d → %d)", vipA, time.Since(start).Seconds(), rowA.Expire, r1.Expire, r2.Expire)
		if r2.ClientID != rowA.ClientID {
			t.Errorf("renewed under client %q, leased under %q", r2.ClientID, rowA.ClientID)
		}
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after renewals, was %s", got, vipA)
		}
		rowA = r2
	})

	t.Run("the VIP moves to another node, its lease stays", func(t *testing.T) {
		owner, err := r.Announcer(vipA)
		if err != nil {
			t.Fatal(err)
		}
		if err := owner.Speaker.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitAnnouncer(t, ctx, r, vipA, others(r, owner.Name)...)
		// The next renewal goes through a speaker still up, under the
		// same client identifier.
		row := k.renewed(vipA, rowA.Expire, 15*time.Second)
		if row.ClientID != rowA.ClientID {
			t.Errorf("renewed under client %q after the move, leased under %q", row.ClientID, rowA.ClientID)
		}
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after the move, was %s", got, vipA)
		}
		if held := k.held(); !slices.Equal(held, []netip.Addr{vipA}) {
			t.Errorf("Kea's leases %v after the move, want only %s", held, vipA)
		}
		_ = owner.Speaker.Wait(5 * time.Second)
		if err := r.StartNewSpeaker(ctx, owner); err != nil {
			t.Fatal(err)
		}
		rowA = row
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
		row := k.renewed(vipA, m[vipA].Expire, 20*time.Second)
		t.Logf("the new CCM renewed %s %.1f s after its start", vipA, time.Since(restarted).Seconds())
		if row.ClientID != rowA.ClientID {
			t.Errorf("renewed under client %q, leased under %q", row.ClientID, rowA.ClientID)
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
		row := k.renewed(vipA, m[vipA].Expire, 20*time.Second)
		if got := c.vip("default", "dhcp-a"); got != vipA {
			t.Errorf("dhcp-a's address %s after Kea's restart, was %s", got, vipA)
		}
		if row.ClientID != rowA.ClientID {
			t.Errorf("renewed under client %q, leased under %q", row.ClientID, rowA.ClientID)
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
		row := k.row(vipB, 5*time.Second, "the requested lease", func(r keaRow) bool { return r.Valid > 0 })
		if !strings.HasPrefix(row.ClientID, ironlbClientID) || row.ClientID == rowA.ClientID {
			t.Errorf("Kea leased %s to %q (dhcp-a is %q)", vipB, row.ClientID, rowA.ClientID)
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
		k.row(vipD, 15*time.Second, "dhcp-d's release", func(r keaRow) bool { return r.Valid == 0 })
		got := netip.MustParseAddr(c.waitIngress("default", "dhcp-e", 1, 60*time.Second)[0])
		t.Logf("dhcp-e: got %s %.1f s after dhcp-d's deletion", got, time.Since(freed).Seconds())
		if got != vipD {
			t.Errorf("dhcp-e got %s, want the freed %s", got, vipD)
		}
	})

	t.Run("server down", func(t *testing.T) {
		// Free an address first: dhcp-a, b and e hold all three.
		deleteService("dhcp-b")
		k.row(vipB, 15*time.Second, "dhcp-b's release", func(r keaRow) bool { return r.Valid == 0 })
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
		k.row(got, 5*time.Second, "dhcp-f's lease", func(r keaRow) bool { return r.Valid > 0 })
	})

	t.Run("delete releases and withdraws", func(t *testing.T) {
		vip := c.vip("default", "dhcp-a")
		checkAnnouncer(t, ctx, r, vip)
		deleteService("dhcp-a")
		k.row(vip, 15*time.Second, "dhcp-a's release", func(r keaRow) bool { return r.Valid == 0 })
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
