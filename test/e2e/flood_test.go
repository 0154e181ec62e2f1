package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/rig"
)

// floodConns is how many connections the flood opens: the issue measured
// 5,000 partial TLS handshakes costing about 150 MB, more than the
// speaker's 128 Mi limit.
const floodConns = 5000

// TestSpeakerFlood: a host on the nodes' LAN opens 5,000 connections to
// the speaker announcing a VIP and starts a TLS handshake on each without
// finishing it. The speaker refuses what is over its caps at once and
// closes the rest after the handshake timeout; its memory barely moves,
// the CCM's stream stays up and the VIP stays where it is and answers.
func TestSpeakerFlood(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, r := newL2(t, ctx, rig.L2Options{})
	c.applyPool("lan", l2Pool)
	c.createService(lbService("default", "web", nil))
	vip := c.vip("default", "web")
	owner := checkAnnouncer(t, ctx, r, vip)
	n := r.Node(owner)
	before, err := procStatus(n.Speaker.Pid(), "VmRSS")
	if err != nil {
		t.Fatal(err)
	}

	// It listens on the node IP only, not on the node's other addresses.
	other := netip.AddrPortFrom(n.IPv6, 7473).String()
	if c, err := r.Client.DialContext(ctx, "tcp", other); err == nil {
		c.Close()
		t.Errorf("the speaker accepts connections on %s; want the node IP %s only", other, n.IPv4)
	}

	target := netip.AddrPortFrom(n.IPv4, 7473)
	start := time.Now()
	conns := flood(ctx, t, r, target, floodConns)
	t.Logf("flood: %d of %d connections to %s opened in %s", len(conns), floodConns, target, time.Since(start).Round(time.Millisecond))
	// While the flood lasts (and past the 5 s handshake timeout), the VIP
	// answers from its node.
	for time.Since(start) < 7*time.Second {
		node, err := r.Reach(ctx, vip, 2*time.Second)
		if err != nil || node != owner {
			t.Fatalf("during the flood the client reached %q (%v), want %s", node, err, owner)
		}
		time.Sleep(200 * time.Millisecond)
	}
	open := 0
	for _, conn := range conns {
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := conn.Read(make([]byte, 1)); err != nil && isTimeout(err) {
			open++ // nothing came and the speaker has not closed it
		}
		conn.Close()
	}
	peak, err := procStatus(n.Speaker.Pid(), "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("speaker RSS %d KiB before the flood, peak %d KiB (growth %d KiB); %d flood connections still open after 7 s", before, peak, peak-before, open)
	if open > 0 {
		t.Errorf("%d flood connections still open after the 5 s handshake timeout", open)
	}
	if peak-before > 32<<10 {
		t.Errorf("the speaker grew %d KiB under the flood, want under 32 MiB", peak-before)
	}
	m, err := r.CCMMetrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("ironlb_speaker_connected{node=%q} 1", owner); !strings.Contains(m, want) {
		t.Errorf("CCM metrics lack %s after the flood", want)
	}
	if ann, err := r.Announcer(vip); err != nil || ann.Name != owner {
		t.Errorf("after the flood %s is announced by %v (%v), want %s", vip, ann, err, owner)
	}
	if strings.Contains(n.Speaker.Log(), "CCM took over the speaker") && strings.Count(n.Speaker.Log(), "CCM took over the speaker") > 1 {
		t.Errorf("the CCM's stream to %s was re-established during the flood", owner)
	}
}

// flood opens n TCP connections from the rig's client to target and sends
// on each the header of a TLS handshake record whose body never comes.
func flood(ctx context.Context, t *testing.T, r *rig.L2, target netip.AddrPort, n int) []net.Conn {
	t.Helper()
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				c, err := r.Client.DialContext(dctx, "tcp", target.String())
				cancel()
				if err != nil {
					continue // refused or reset: the speaker's caps at work
				}
				// A handshake record of 16 KiB announced, 5 bytes sent.
				_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x40, 0x00})
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		}()
	}
	for range n {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	return conns
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// procStatus reads a field of /proc/pid/status in KiB.
func procStatus(pid int, field string) (int, error) {
	v, err := procStatusField(pid, field)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(strings.TrimSuffix(v, " kB"))
}

// procStatusField returns a field of /proc/pid/status, trimmed.
func procStatusField(pid int, field string) (string, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("/proc/%d/status has no %s", pid, field)
}
