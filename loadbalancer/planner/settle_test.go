package planner

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestMassReconnectKeepsVIPs: every speaker drops at once (the CCM's
// network blipped), then they come back one by one in any order. Without
// the settle window the first one back took every VIP; now every VIP stays
// on its announcer.
func TestMassReconnectKeepsVIPs(t *testing.T) {
	for seed := range uint64(5) {
		t.Run(fmt.Sprintf("order %d", seed), func(t *testing.T) {
			e := newPlannerEnv(t, envOptions{}, nodes(3)...)
			owners := e.spread(30)
			if counts := countNodes(owners); len(counts) < 3 {
				t.Fatalf("VIPs not spread: %v", counts)
			}
			for _, n := range []string{"node-a", "node-b", "node-c"} {
				e.sp.set(n, lost())
			}
			e.checkOwners(owners)
			order := []string{"node-a", "node-b", "node-c"}
			rand.New(rand.NewPCG(seed, seed)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
			for _, n := range order {
				e.sp.set(n, up())
				e.checkOwners(owners)
			}
			if got := strings.Join(e.events(), "\n"); strings.Contains(got, "VIPMoved") {
				t.Errorf("a VIP moved:\n%s", got)
			}
		})
	}
}

// TestMassLossSettles: three of four speakers are lost within one
// heartbeat window. Two come back within the settle window and keep their
// VIPs; the VIPs of the one that stays away move when the window ends, and
// spread over the live nodes.
func TestMassLossSettles(t *testing.T) {
	const settle = 300 * time.Millisecond
	e := newPlannerEnv(t, envOptions{settle: settle}, nodes(4)...)
	owners := e.spread(40)
	for _, n := range []string{"node-a", "node-b", "node-c"} {
		e.sp.set(n, lost())
	}
	e.checkOwners(owners)
	if !e.p.settle.active {
		t.Fatal("the planner is not settling after losing 3 of 4 speakers at once")
	}
	e.sp.set("node-b", up())
	e.sp.set("node-a", up())
	e.checkOwners(owners)
	// The signal: the settle window ends and the planner re-plans.
	deadline := time.Now().Add(10 * time.Second)
	for {
		e.idle()
		e.p.mu.Lock()
		active := e.p.settle.active
		e.p.mu.Unlock()
		if !active {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("still settling 10s after the window should have ended")
		}
		time.Sleep(20 * time.Millisecond)
	}
	e.idle()
	movedTo := map[string]int{}
	for vip, was := range owners {
		got := e.sp.holders(vip.String())
		switch {
		case was == "node-c" && len(got) == 1 && got[0] != "node-c":
			movedTo[got[0]]++
		case was == "node-c":
			t.Errorf("VIP %s of the lost node-c is on %v", vip, got)
		case !slices.Equal(got, []string{was}):
			t.Errorf("VIP %s moved from %s to %v, though %s came back in time", vip, was, got, was)
		}
	}
	if len(movedTo) < 2 {
		t.Errorf("node-c's VIPs went to %v; want them spread over the live nodes", movedTo)
	}
	t.Logf("node-c's %d VIPs moved to %v", countNodes(owners)["node-c"], movedTo)
}

// TestSingleLossMovesAtOnce: one speaker lost while the others answer is a
// node problem: no settle window, its VIPs move at once.
func TestSingleLossMovesAtOnce(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(3)...)
	owners := e.spread(12)
	e.sp.set("node-b", lost())
	e.idle()
	if e.p.settle.active {
		t.Fatal("settling after a single loss")
	}
	for vip, was := range owners {
		got := e.sp.holders(vip.String())
		if was == "node-b" && (len(got) != 1 || got[0] == "node-b") {
			t.Errorf("VIP %s still on %v after node-b's speaker was lost", vip, got)
		}
		if was != "node-b" && !slices.Equal(got, []string{was}) {
			t.Errorf("VIP %s moved from %s to %v", vip, was, got)
		}
	}
}

// TestLostSpeakerKeepsVIPWhenNowhereElse: with no other node eligible, a
// VIP stays with its unreachable speaker (which keeps announcing) instead
// of losing its announcer, so that it is still there when the speaker
// returns.
func TestLostSpeakerKeepsVIPWhenNowhereElse(t *testing.T) {
	e := newPlannerEnv(t, envOptions{}, nodes(1)...)
	vip := e.service("solo", false)
	e.owner(vip, "node-a")
	e.sp.set("node-a", lost())
	e.owner(vip, "node-a")
	e.sp.set("node-a", up())
	e.owner(vip, "node-a")
	// A speaker that shut down withdrew its VIPs: nothing is kept there.
	stopped := lost()
	stopped.Stopped = true
	e.sp.set("node-a", stopped)
	e.owner(vip, "")
}

// spread creates n Services and returns their VIPs with their announcers.
func (e *plannerEnv) spread(n int) map[netip.Addr]string {
	e.t.Helper()
	out := map[netip.Addr]string{}
	for i := range n {
		e.createService(lbService(fmt.Sprintf("svc-%02d", i), false))
	}
	e.idle()
	for i := range n {
		al, _ := e.alloc.Lookup(fmt.Sprintf("uid-svc-%02d", i))
		out[al.Addresses[0]] = e.owner(al.Addresses[0], "node-a", "node-b", "node-c", "node-d")
	}
	return out
}

func (e *plannerEnv) checkOwners(want map[netip.Addr]string) {
	e.t.Helper()
	e.idle()
	moved := 0
	for vip, node := range want {
		if got := e.sp.holders(vip.String()); !slices.Equal(got, []string{node}) {
			moved++
			e.t.Errorf("VIP %s on %v, want it still on %s", vip, got, node)
		}
	}
	if moved > 0 {
		e.t.Fatalf("%d of %d VIPs moved", moved, len(want))
	}
}

func countNodes(owners map[netip.Addr]string) map[string]int {
	out := map[string]int{}
	for _, n := range owners {
		out[n]++
	}
	return out
}
