package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/rig"
)

// cpTrials is how many times each failover is measured.
const cpTrials = 3

// TestControlPlaneVIP runs three control-plane nodes, each with the real
// ironlb-speaker control-plane and a stand-in kube-apiserver, on one LAN
// with a client, and checks the layer-2 election of the control-plane VIP:
// one holder; failover when the holder's apiserver turns unready, when its
// link goes down and on SIGTERM, measured from the client over HTTPS; no
// move when a node comes back; one holder after a partition heals; forged
// messages rejected.
func TestControlPlaneVIP(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	r := newCPRig(t, ctx, 3)

	t.Run("one holder", func(t *testing.T) {
		r.t = t
		h := r.waitOneHolder(15 * time.Second)
		if h.name != "cp1" {
			t.Errorf("holder %s, want cp1 (the lowest node IP; all started at once)", h.name)
		}
		got, err := r.reach(2 * time.Second)
		if err != nil || got != h.name {
			t.Errorf("HTTPS to the VIP answered by %q (%v), want %s", got, err, h.name)
		}
	})

	t.Run("unready holder", func(t *testing.T) {
		r.t = t
		var took []time.Duration
		for range cpTrials {
			old := r.waitOneHolder(10 * time.Second)
			start := time.Now()
			old.api.ready.Store(false)
			got, d := r.waitReachedOtherThan(old, start, 10*time.Second)
			took = append(took, d)
			t.Logf("%s's apiserver unready: %s reached through the VIP after %s", old.name, got, d.Round(time.Millisecond))
			if h := r.waitOneHolder(5 * time.Second); h.name != got {
				t.Errorf("holder %s, but the client reached %s", h.name, got)
			}
			moves := r.takeovers()
			old.api.ready.Store(true)
			r.waitStatus(old, func(st cpvip.Status) bool { return st.APIServerReady && st.Holder == got })
			if n := r.takeovers() - moves; n != 0 {
				t.Errorf("%s's apiserver ready again: %v take-overs, want none (no move on recovery)", old.name, n)
			}
		}
		t.Logf("FIGURE control-plane VIP failover, holder's apiserver unready: p50 %s of %v", p50(took), took)
	})

	t.Run("holder link down", func(t *testing.T) {
		r.t = t
		var took []time.Duration
		for range cpTrials {
			old := r.waitOneHolder(10 * time.Second)
			oldMoves, err := r.metric(old, "ironlb_control_plane_vip_takeovers_total")
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			if err := old.host.SetLink(false); err != nil {
				t.Fatal(err)
			}
			got, d := r.waitReachedOtherThan(old, start, 10*time.Second)
			took = append(took, d)
			t.Logf("%s's link down: %s reached through the VIP after %s", old.name, got, d.Round(time.Millisecond))
			newHolder := r.waitOneHolder(5*time.Second, old)
			moves := r.takeovers(old) + oldMoves
			if err := old.host.SetLink(true); err != nil {
				t.Fatal(err)
			}
			// The signal: the old holder heard the new one and released.
			r.waitStatus(old, func(st cpvip.Status) bool { return !st.Serving && st.Holder == newHolder.name })
			if h := r.waitOneHolder(5 * time.Second); h != newHolder {
				t.Errorf("after %s's link came back the holder is %s, want %s (no move on rejoin)", old.name, h.name, newHolder.name)
			}
			if n := r.takeovers() - moves; n != 0 {
				t.Errorf("after %s's link came back: %v take-overs, want none", old.name, n)
			}
		}
		t.Logf("FIGURE control-plane VIP failover, holder's link down: p50 %s of %v", p50(took), took)
	})

	t.Run("partition heals", func(t *testing.T) {
		r.t = t
		holder := r.waitOneHolder(10 * time.Second)
		var cut *cpNode
		for _, n := range r.nodes {
			if n != holder {
				cut = n
				break
			}
		}
		if err := cut.host.SetLink(false); err != nil {
			t.Fatal(err)
		}
		// Cut off, it hears no holder and takes the VIP itself.
		err := rig.Eventually(10*time.Second, func() error {
			st, err := r.statusVia(cut)
			if err != nil {
				return err
			}
			if !st.Serving {
				return fmt.Errorf("%s, cut off, does not serve yet", cut.name)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cut.host.SetLink(true); err != nil {
			t.Fatal(err)
		}
		h := r.waitOneHolder(5 * time.Second)
		t.Logf("partition of %s healed (holder before: %s): holder %s", cut.name, holder.name, h.name)
		// The holder served the rest of the LAN all along (support 2); the
		// node cut off alone (support 1) gives way although it took over
		// last: no move.
		if h != holder {
			t.Errorf("after the heal %s holds the VIP, want %s (no move)", h.name, holder.name)
		}
		got, err := r.reach(2 * time.Second)
		if err != nil || got != h.name {
			t.Errorf("after the heal HTTPS to the VIP answered by %q (%v), want %s", got, err, h.name)
		}
	})

	t.Run("wrong key rejected", func(t *testing.T) {
		r.t = t
		holder := r.waitOneHolder(10 * time.Second)
		target := r.nodes[len(r.nodes)-1]
		before, err := r.metric(target, `ironlb_control_plane_vip_messages_rejected_total{reason="signature"}`)
		if err != nil {
			t.Fatal(err)
		}
		wrong, err := cpvip.DeriveKey([]byte("not the cluster's election key, 32+ bytes"))
		if err != nil {
			t.Fatal(err)
		}
		// A forged holder with a huge epoch: accepted, it would win.
		forged := cpvip.Message{VIP: cpVIP, Node: "intruder", NodeIP: rig.ClientIPv4, Ready: true, Holding: true, Epoch: 1 << 40, Time: time.Now()}
		b, err := forged.Marshal(wrong)
		if err != nil {
			t.Fatal(err)
		}
		r.sendUDP(target.ip, b)
		err = rig.Eventually(5*time.Second, func() error {
			v, err := r.metric(target, `ironlb_control_plane_vip_messages_rejected_total{reason="signature"}`)
			if err != nil {
				return err
			}
			if v <= before {
				return fmt.Errorf("signature rejections %v, waiting for more than %v", v, before)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		st, err := r.status(target)
		if err != nil {
			t.Fatal(err)
		}
		if st.Holder != holder.name || slices.ContainsFunc(st.Peers, func(p cpvip.PeerStatus) bool { return p.Node == "intruder" }) {
			t.Errorf("after a forged message %s sees holder %q and peers %+v", target.name, st.Holder, st.Peers)
		}
	})

	t.Run("SIGTERM of the holder", func(t *testing.T) {
		r.t = t
		old := r.waitOneHolder(10 * time.Second)
		start := time.Now()
		if err := old.speaker.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		got, d := r.waitReachedOtherThan(old, start, 10*time.Second)
		t.Logf("FIGURE control-plane VIP failover, holder's speaker SIGTERM: %s reached after %s", got, d.Round(time.Millisecond))
		if err := old.speaker.Wait(5 * time.Second); err != nil {
			t.Fatal(err)
		}
		if code := old.speaker.ExitCode(); code != 0 {
			t.Errorf("%s's speaker exited with %d after SIGTERM, want 0", old.name, code)
		}
		if has, err := r.hasVIPOnLo(old); err != nil || has {
			t.Errorf("%s still has the VIP on lo after SIGTERM (%v)", old.name, err)
		}
		holder := r.waitOneHolder(5*time.Second, old)
		moves := r.takeovers(old)
		r.startSpeaker(old)
		// The signal: the restarted speaker learned the holder.
		r.waitStatus(old, func(st cpvip.Status) bool { return st.Holder == holder.name && st.APIServerReady })
		if h := r.waitOneHolder(5 * time.Second); h != holder {
			t.Errorf("after %s's speaker restarted the holder is %s, want %s (no move on rejoin)", old.name, h.name, holder.name)
		}
		if n := r.takeovers() - moves; n != 0 {
			t.Errorf("after %s's speaker restarted: %v take-overs, want none", old.name, n)
		}
	})
}

// TestControlPlaneVIPKilledHolder: a holder killed without a chance to
// release (SIGKILL, out of memory) leaves the VIP on its lo only until the
// address's lifetime runs out, so the kernel does not keep answering for
// the VIP beside the successor.
func TestControlPlaneVIPKilledHolder(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := newCPRig(t, ctx, 3)
	old := r.waitOneHolder(15 * time.Second)
	if has, err := r.hasVIPOnLo(old); err != nil || !has {
		t.Fatalf("the holder %s has no VIP on lo (%v)", old.name, err)
	}
	start := time.Now()
	if err := old.speaker.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got, d := r.waitReachedOtherThan(old, start, 10*time.Second)
	t.Logf("holder's speaker SIGKILLed: %s reached after %s", got, d.Round(time.Millisecond))
	err := rig.Eventually(10*time.Second, func() error {
		has, err := r.hasVIPOnLo(old)
		if err != nil {
			return err
		}
		if has {
			return fmt.Errorf("%s still has the VIP on lo", old.name)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the killed holder's VIP left its lo %s after the kill", time.Since(start).Round(100*time.Millisecond))
	if h := r.waitOneHolder(5*time.Second, old); h.name != got {
		t.Errorf("holder %s, but the client reached %s", h.name, got)
	}
}

// p50 is the median of ds.
func p50(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(time.Millisecond)
}

// waitStatus waits until node's /status satisfies ok.
func (r *cpRig) waitStatus(node *cpNode, ok func(cpvip.Status) bool) {
	r.t.Helper()
	var last cpvip.Status
	err := rig.Eventually(10*time.Second, func() error {
		st, err := r.status(node)
		if err != nil {
			return err
		}
		last = st
		if !ok(st) {
			return fmt.Errorf("%s's status %+v", node.name, st)
		}
		return nil
	})
	if err != nil {
		r.t.Fatalf("waiting for %s's status: %v (last %+v)", node.name, err, last)
	}
}

// statusVia reads node's /status from inside its own namespace (it works
// while its link is down).
func (r *cpRig) statusVia(node *cpNode) (cpvip.Status, error) {
	ctx, cancel := context.WithTimeout(r.ctx, time.Second)
	defer cancel()
	body, err := rig.Get(ctx, node.host.DialContext, fmt.Sprintf("http://%s:%d/status", node.ip, cpvip.DefaultHealthPort))
	if err != nil {
		return cpvip.Status{}, err
	}
	var st cpvip.Status
	return st, jsonUnmarshal(body, &st)
}

// sendUDP sends b from the client to to's election port.
func (r *cpRig) sendUDP(to netip.Addr, b []byte) {
	r.t.Helper()
	err := r.client.Do(func() error {
		c, err := net.Dial("udp", net.JoinHostPort(to.String(), fmt.Sprint(cpvip.DefaultPort)))
		if err != nil {
			return err
		}
		defer c.Close()
		_, err = c.Write(b)
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
}

// hasVIPOnLo says whether the VIP is on node's lo.
func (r *cpRig) hasVIPOnLo(node *cpNode) (bool, error) {
	var has bool
	err := node.host.Do(func() error {
		var err error
		has, err = cpvip.HasLocal(cpVIP)
		return err
	})
	return has, err
}
