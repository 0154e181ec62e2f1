package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netrig"
	"github.com/ironlb/ironlb/test/rig"
)

// newCPBGP starts the control-plane BGP rig: FRR with BFD, three nodes
// running "ironlb-speaker control-plane --mode bgp" next to stand-in
// apiservers, a client behind the router.
func newCPBGP(t *testing.T, ctx context.Context) *rig.CPBGP {
	t.Helper()
	if err := netrig.Usable(); err != nil {
		t.Skipf("network namespaces unusable: %v", err)
	}
	if err := frr.Usable(); err != nil {
		t.Skip(err)
	}
	logDir := os.Getenv("IRONLB_CPBGP_LOGDIR")
	if logDir == "" {
		logDir = filepath.Join(t.TempDir(), "logs")
	}
	r, err := rig.StartCPBGP(ctx, netrig.NewLAN(t), netrig.NewLAN(t), logDir)
	if r != nil {
		t.Cleanup(func() {
			if t.Failed() {
				for _, n := range r.Nodes {
					if n.Speaker != nil {
						t.Logf("%s:\n%s", n.Speaker.Name, n.Speaker.Tail(30))
					}
				}
			}
			r.Stop()
		})
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestControlPlaneBGP: every node whose apiserver is ready advertises the
// control-plane VIP (three ECMP next hops at the router); an unready one
// is withdrawn within the readiness checks; BFD removes a node whose link
// is cut within its detection time; a planned apiserver stop with
// kube-apiserver's --shutdown-delay-duration loses no request.
func TestControlPlaneBGP(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	r := newCPBGP(t, ctx)
	vip := netip.PrefixFrom(rig.ControlPlaneVIP, 32)

	t.Run("all ready: three ECMP next hops, BFD up, /status", func(t *testing.T) {
		var route map[string][]struct {
			Nexthops []struct {
				IP     string `json:"ip"`
				Active bool   `json:"active"`
			} `json:"nexthops"`
		}
		if err := r.Router.JSON(ctx, "show ip route "+vip.String()+" json", &route); err != nil {
			t.Fatal(err)
		}
		var hops []string
		for _, rt := range route[vip.String()] {
			for _, nh := range rt.Nexthops {
				if nh.Active {
					hops = append(hops, nh.IP)
				}
			}
		}
		slices.Sort(hops)
		if want := r.Hops(); !slices.Equal(hops, want) {
			t.Errorf("FRR's route to %s via %v, want %v", vip, hops, want)
		}
		paths, err := r.Router.Paths(ctx, vip)
		if err != nil {
			t.Fatal(err)
		}
		multi := 0
		for _, p := range paths {
			if p.Valid && (p.Multipath || (p.Bestpath != nil && p.Bestpath.Overall)) {
				multi++
			}
		}
		if multi != 3 {
			t.Errorf("FRR has %d multipath paths for %s, want 3: %+v", multi, vip, paths)
		}
		err = rig.Eventually(20*time.Second, func() error {
			peers, err := r.Router.BFDPeers(ctx)
			if err != nil {
				return err
			}
			for _, n := range r.Nodes {
				if p := peers[n.IP.String()]; p.Status != "up" || p.RemoteReceive != 300 || p.RemoteMultiplier != 3 {
					return fmt.Errorf("FRR's BFD session with %s: %+v, want up at 300 ms × 3", n.Name, p)
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		// The speaker's own view of BFD may trail FRR's by a poll.
		want := cpvip.Status{VIP: "192.0.2.250", Mode: "bgp", Node: "cp-a", NodeIP: "192.0.2.11", APIServerReady: true, Serving: true,
			BGP: []cpvip.BGPSessionStatus{{Peer: "192.0.2.1", State: "Established", BFD: "up", Advertised: true}}}
		err = rig.Eventually(5*time.Second, func() error {
			body, err := rig.Get(ctx, r.Outside.DialContext, "http://"+r.Nodes[0].IP.String()+":7476/status")
			if err != nil {
				return err
			}
			var st cpvip.Status
			if err := json.Unmarshal([]byte(body), &st); err != nil {
				return err
			}
			if fmt.Sprint(st) != fmt.Sprint(want) {
				return fmt.Errorf("/status %+v, want %+v", st, want)
			}
			return nil
		})
		if err != nil {
			t.Errorf("/status: %v", err)
		}
		st := r.StartRequests(10 * time.Millisecond)
		time.Sleep(time.Second)
		if got := st.Stop(); got.Failed != 0 || got.ByNode["cp-a"] == 0 || got.ByNode["cp-b"] == 0 || got.ByNode["cp-c"] == 0 {
			t.Errorf("requests through the VIP: %s; want none failed, every node answering (%q)", got, got.Errors)
		}
	})

	t.Run("an unready node is withdrawn", func(t *testing.T) {
		took, err := r.MeasureUnready(r.Node("cp-b"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cp-b unready: its next hop left the router's kernel after %s", took.Round(time.Millisecond))
		// Three failed checks at 100 ms, then the withdrawal.
		if took > 2*time.Second {
			t.Errorf("withdrawn after %s, want within 2s", took)
		}
	})

	t.Run("a node's link cut: BFD removes it", func(t *testing.T) {
		took, err := r.MeasureNodeLoss(r.Node("cp-c"))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("cp-c's link cut: its next hop left the router's kernel after %s (BFD 300 ms × 3; hold time 9 s)", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("removed after %s: not BFD's doing (hold time 9s)", took)
		}
	})

	t.Run("planned apiserver stop with --shutdown-delay-duration=2s loses no request", func(t *testing.T) {
		st, err := r.PlannedStop(r.Node("cp-a"), 2*time.Second, 10*time.Millisecond, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("planned stop of cp-a's apiserver: %s %q", st, st.Errors)
		// Refused: the router still sent connections to the stopped
		// apiserver. The others broke in flight when the router's ECMP
		// set changed (hash-threshold moves about half the flows): at
		// most one at 100 connections a second, in some runs.
		if st.Refused != 0 || st.Failed > 1 {
			t.Errorf("%d requests failed, %d refused: %q", st.Failed, st.Refused, st.Errors)
		}
		if st.ByNode["cp-a"] == 0 || st.OK < 200 {
			t.Errorf("requests %s: the client did not run through the stop", st)
		}
	})

	t.Run("without --shutdown-delay-duration requests are refused", func(t *testing.T) {
		// The control: the apiserver closes as /readyz fails, before
		// three failed checks withdraw the route.
		st, err := r.PlannedStop(r.Node("cp-a"), 0, 10*time.Millisecond, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("stop of cp-a's apiserver without a shutdown delay: %s", st)
		if st.Refused == 0 {
			t.Errorf("no request refused (%s): the stop no longer shows what the delay is for", st)
		}
	})

	t.Run("a speaker's SIGTERM withdraws at once", func(t *testing.T) {
		n := r.Node("cp-b")
		start := time.Now()
		if err := n.Speaker.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		stopped := time.Since(start)
		if _, err := r.WaitNextHops(r.Hops(n.Name), time.Second); err != nil {
			t.Fatalf("after the speaker exited (%s): %v", stopped, err)
		}
		has, err := hasVIP(n)
		if err != nil || has {
			t.Errorf("the VIP is still on %s's lo after its speaker stopped (%v)", n.Name, err)
		}
		t.Logf("cp-b's speaker stopped in %s", stopped.Round(time.Millisecond))
		if err := r.StartSpeaker(n); err != nil {
			t.Fatal(err)
		}
		if _, err := r.WaitNextHops(r.Hops(), 30*time.Second); err != nil {
			t.Fatal(err)
		}
	})
}

func hasVIP(n *rig.CPBGPNode) (bool, error) {
	out, err := n.Host.Run("ip", "-j", "addr", "show", "dev", "lo")
	if err != nil {
		return false, err
	}
	var links []struct {
		Addrs []struct {
			Local string `json:"local"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return false, err
	}
	for _, l := range links {
		for _, a := range l.Addrs {
			if a.Local == rig.ControlPlaneVIP.String() {
				return true, nil
			}
		}
	}
	return false, nil
}
