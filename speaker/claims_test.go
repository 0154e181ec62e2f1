package speaker

import (
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

var otherMAC = net.HardwareAddr{0x02, 0x00, 0x5e, 0x00, 0x00, 0x99}

// hbSnapshot is a snapshot of a CCM that heartbeats every interval; the
// VIPs are probed when probe is set.
func hbSnapshot(v uint64, interval time.Duration, probe bool, addrs ...string) *speakerv1.Instruction {
	in := snapshot(v, addrs...)
	in.GetSnapshot().HeartbeatIntervalMs = uint32(interval / time.Millisecond)
	for _, an := range in.GetSnapshot().GetAnnouncements() {
		an.Probe = probe
	}
	return in
}

func heartbeat(seq uint64) *speakerv1.Instruction {
	return &speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: &speakerv1.Heartbeat{Seq: seq}}}
}

// vipStatus returns addr's status in r, nil if r does not list it.
func vipStatus(r *speakerv1.Report, addr string) *speakerv1.VIPStatus {
	for _, v := range r.GetVips() {
		if v.GetAddress() == addr {
			return v
		}
	}
	return nil
}

func (a *Agent) isCutOff() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.cutOffLocked(a.now())
}

// TestClaims: another host's claim of a VIP is reported while the speaker
// hears the CCM, and makes it yield the VIP when it is cut off (at once,
// or when it becomes cut off within a second of the claim); a snapshot
// that still lists a yielded VIP announces it again, unprobed.
func TestClaims(t *testing.T) {
	t.Run("connected: only reported", func(t *testing.T) {
		agent, fa, c := newTestAgent(t)
		stream, _ := open(t, c)
		s := readReports(t, stream)
		if err := stream.Send(hbSnapshot(1, time.Hour, false, "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "announced", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 1 })
		fa.claim("192.0.2.1", otherMAC)
		fa.claim("192.0.2.77", otherMAC) // not a VIP: ignored
		s.waitReport(t, "claim reported", func(r *speakerv1.Report) bool {
			v := vipStatus(r, "192.0.2.1")
			return v.GetClaimedBy() == otherMAC.String() && v.GetClaimedUnixMs() > 0 && v.GetState() == speakerv1.VIPStatus_ANNOUNCING
		})
		if diff := cmp.Diff([]string{"192.0.2.1"}, fa.list()); diff != "" {
			t.Errorf("answered for (-want +got):\n%s", diff)
		}
		agent.mu.Lock()
		defer agent.mu.Unlock()
		if len(agent.toYield) != 0 || len(agent.vips) != 1 {
			t.Errorf("to yield %v, VIPs %d: want nothing to yield and the claim of an unknown address ignored", agent.toYield, len(agent.vips))
		}
	})
	t.Run("cut off: yields at once", func(t *testing.T) {
		agent, fa, c := newTestAgent(t)
		stream, _ := open(t, c)
		s := readReports(t, stream)
		if err := stream.Send(hbSnapshot(1, 20*time.Millisecond, false, "192.0.2.1", "192.0.2.2")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "announced", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 1 })
		waitCond(t, "cut off", agent.isCutOff)
		fa.claim("192.0.2.1", otherMAC)
		s.waitReport(t, "yielded", func(r *speakerv1.Report) bool {
			v := vipStatus(r, "192.0.2.1")
			return v.GetState() == speakerv1.VIPStatus_YIELDED && v.GetClaimedBy() == otherMAC.String() && len(v.GetInterfaces()) == 0
		})
		if diff := cmp.Diff([]string{"192.0.2.2"}, fa.list()); diff != "" {
			t.Errorf("answered for after the yield (-want +got):\n%s", diff)
		}
		if got := agent.Addresses(); !slices.Equal(got, []netip.Addr{netip.MustParseAddr("192.0.2.2")}) {
			t.Errorf("Addresses() = %v", got)
		}
		// The CCM still wants it here: announced again, without a probe.
		fa.mu.Lock()
		fa.inUse[netip.MustParseAddr("192.0.2.1")] = otherMAC
		fa.mu.Unlock()
		if err := stream.Send(hbSnapshot(2, 20*time.Millisecond, true, "192.0.2.1", "192.0.2.2")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "announced again", func(r *speakerv1.Report) bool {
			return r.GetAppliedVersion() == 2 && vipStatus(r, "192.0.2.1").GetState() == speakerv1.VIPStatus_ANNOUNCING
		})
		if diff := cmp.Diff([]string{"192.0.2.1", "192.0.2.2"}, fa.list()); diff != "" {
			t.Errorf("answered for after the snapshot (-want +got):\n%s", diff)
		}
		if p := fa.probeCalls(); len(p) != 0 {
			t.Errorf("probed %v; a yielded VIP is announced again unprobed (and 192.0.2.2 is answered for already)", p)
		}
	})
	t.Run("becoming cut off after a recent claim: yields", func(t *testing.T) {
		agent, fa, c := newTestAgent(t)
		stream, _ := open(t, c)
		s := readReports(t, stream)
		if err := stream.Send(hbSnapshot(1, 100*time.Millisecond, false, "192.0.2.1", "192.0.2.2")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "announced", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 1 })
		// Heartbeats keep the speaker hearing the CCM until the claim is
		// reported.
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			for seq := uint64(1); ; seq++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				if stream.Send(heartbeat(seq)) != nil {
					return
				}
			}
		}()
		fa.claim("192.0.2.1", otherMAC)
		s.waitReport(t, "claim reported", func(r *speakerv1.Report) bool {
			v := vipStatus(r, "192.0.2.1")
			return v.GetClaimedBy() == otherMAC.String() && v.GetState() == speakerv1.VIPStatus_ANNOUNCING
		})
		if agent.isCutOff() {
			t.Fatal("cut off while heartbeats flow")
		}
		close(stop)
		<-done
		s.waitReport(t, "yielded once cut off", func(r *speakerv1.Report) bool {
			return vipStatus(r, "192.0.2.1").GetState() == speakerv1.VIPStatus_YIELDED
		})
		if diff := cmp.Diff([]string{"192.0.2.2"}, fa.list()); diff != "" {
			t.Errorf("answered for (-want +got):\n%s", diff)
		}
	})
}

// TestProbes: a VIP to probe that another host answers for is not
// announced (CONFLICT, claimed_by) and probed again until it is free;
// VIPs of one instruction are probed in one call; no probe without
// Announcement.probe, nor for a VIP answered for already; a CONFLICT VIP
// withdrawn is probed no more.
func TestProbes(t *testing.T) {
	t.Run("conflict, then free", func(t *testing.T) {
		agent, fa, c := newTestAgent(t)
		agent.mu.Lock()
		agent.probeMin, agent.probeMax = 20*time.Millisecond, 40*time.Millisecond
		agent.mu.Unlock()
		stream, _ := open(t, c)
		s := readReports(t, stream)
		fa.mu.Lock()
		fa.inUse[netip.MustParseAddr("192.0.2.1")] = otherMAC
		fa.mu.Unlock()
		if err := stream.Send(hbSnapshot(1, 0, true, "192.0.2.1", "192.0.2.2", "2001:db8::1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "conflict", func(r *speakerv1.Report) bool {
			v := vipStatus(r, "192.0.2.1")
			return r.GetAppliedVersion() == 1 && v.GetState() == speakerv1.VIPStatus_CONFLICT && v.GetClaimedBy() == otherMAC.String()
		})
		if diff := cmp.Diff([]string{"192.0.2.2", "2001:db8::1"}, fa.list()); diff != "" {
			t.Errorf("answered for (-want +got):\n%s", diff)
		}
		first := fa.probeCalls()[0]
		if diff := cmp.Diff([]netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("2001:db8::1")}, first,
			cmp.Comparer(func(x, y netip.Addr) bool { return x == y })); diff != "" {
			t.Errorf("first Probe call (-want +got):\n%s", diff)
		}
		// Probed again while in use: still CONFLICT.
		waitCond(t, "probed twice more", func() bool { return len(fa.probeCalls()) >= 3 })
		fa.mu.Lock()
		delete(fa.inUse, netip.MustParseAddr("192.0.2.1"))
		fa.mu.Unlock()
		s.waitReport(t, "announced once free", func(r *speakerv1.Report) bool {
			v := vipStatus(r, "192.0.2.1")
			return v.GetState() == speakerv1.VIPStatus_ANNOUNCING && v.GetClaimedBy() == ""
		})
		if diff := cmp.Diff([]string{"192.0.2.1", "192.0.2.2", "2001:db8::1"}, fa.list()); diff != "" {
			t.Errorf("answered for (-want +got):\n%s", diff)
		}
	})
	t.Run("no probe asked", func(t *testing.T) {
		_, fa, c := newTestAgent(t)
		stream, _ := open(t, c)
		fa.mu.Lock()
		fa.inUse[netip.MustParseAddr("192.0.2.1")] = otherMAC
		fa.mu.Unlock()
		r := send(t, stream, hbSnapshot(1, 0, false, "192.0.2.1"))
		if got := vipStatus(r, "192.0.2.1").GetState(); got != speakerv1.VIPStatus_ANNOUNCING {
			t.Errorf("state %v, want ANNOUNCING", got)
		}
		if p := fa.probeCalls(); len(p) != 0 {
			t.Errorf("probed %v without Announcement.probe", p)
		}
	})
	t.Run("answered already: not probed unless claimed since", func(t *testing.T) {
		_, fa, c := newTestAgent(t)
		stream, _ := open(t, c)
		s := readReports(t, stream)
		if err := stream.Send(hbSnapshot(1, 0, false, "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "applied 1", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 1 })
		if err := stream.Send(hbSnapshot(2, 0, true, "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "applied 2", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 2 })
		if p := fa.probeCalls(); len(p) != 0 {
			t.Errorf("probed %v: a VIP answered for already (moved or kept) is not probed", p)
		}
		fa.claim("192.0.2.1", otherMAC)
		s.waitReport(t, "claim reported", func(r *speakerv1.Report) bool {
			return vipStatus(r, "192.0.2.1").GetClaimedBy() == otherMAC.String()
		})
		if err := stream.Send(hbSnapshot(3, 0, true, "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "applied 3", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 3 })
		if p := fa.probeCalls(); len(p) != 1 {
			t.Errorf("probe calls %v, want one: claimed since it began to be answered", p)
		}
	})
	t.Run("withdrawn conflict is probed no more", func(t *testing.T) {
		agent, fa, c := newTestAgent(t)
		agent.mu.Lock()
		agent.probeMin, agent.probeMax = 20*time.Millisecond, 20*time.Millisecond
		agent.mu.Unlock()
		stream, _ := open(t, c)
		s := readReports(t, stream)
		a, b := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2")
		fa.mu.Lock()
		fa.inUse[a], fa.inUse[b] = otherMAC, otherMAC
		fa.mu.Unlock()
		if err := stream.Send(hbSnapshot(1, 0, true, "192.0.2.1")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "conflict", func(r *speakerv1.Report) bool {
			return vipStatus(r, "192.0.2.1").GetState() == speakerv1.VIPStatus_CONFLICT
		})
		if err := stream.Send(hbSnapshot(2, 0, true, "192.0.2.2")); err != nil {
			t.Fatal(err)
		}
		s.waitReport(t, "withdrawn", func(r *speakerv1.Report) bool { return r.GetAppliedVersion() == 2 })
		n := len(fa.probeCalls())
		// The signal: the other VIP in conflict was probed again three times.
		waitCond(t, "the other VIP probed again", func() bool { return len(fa.probeCalls()) >= n+3 })
		for _, call := range fa.probeCalls()[n:] {
			if slices.Contains(call, a) {
				t.Fatalf("withdrawn VIP probed again: %v", call)
			}
		}
	})
}
