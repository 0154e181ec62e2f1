package speaker

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// fakeBGP records what the agent asks of its BGP side.
type fakeBGP struct {
	mu       sync.Mutex
	last     bgp.Desired // as given: its Exports may be a patch
	table    bgp.Table   // the full export table
	applied  int
	sessions []bgp.Session
	stopped  bool
	graceful bool // the last Stop was a planned one
}

func (f *fakeBGP) Apply(_ context.Context, d bgp.Desired) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.table.Apply(d)
	f.last = d
	f.applied++
	return nil
}

func (f *fakeBGP) Sessions(context.Context) ([]bgp.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.sessions), nil
}

func (f *fakeBGP) Stop(_ context.Context, graceful bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped, f.graceful = true, graceful
	return nil
}

// desired is the last Desired applied, with the full export table (a
// copy) as Exports and Changed as given.
func (f *fakeBGP) desired() bgp.Desired {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := f.last
	d.Exports = maps.Clone(f.table.Exports())
	return d
}

var bgpConfig = &speakerv1.BGPConfig{
	RouterId: "192.0.2.11", Asn: 64513, NextHopV6: "2001:db8::11",
	Peers: []*speakerv1.BGPPeer{{
		Name: "tor-a", Address: "192.0.2.1", PeerAsn: 64512, MyAsn: 64513,
		HoldTimeSeconds: 9, ConnectRetrySeconds: 5, Password: "pw",
	}},
}

func exportsOf(d bgp.Desired) map[string]bgp.Attributes {
	out := map[string]bgp.Attributes{}
	for e, a := range d.Exports {
		out[e.Prefix.String()+" to "+e.Peer.String()] = a
	}
	return out
}

// TestAgentAdvertisesOverBGP: the agent turns the CCM's BGP set-up and
// per-VIP advertisements into its BGP side's desired state, answers
// ARP/NDP only for VIPs that are not BGP-only, never advertises an address
// it refuses, and reports the sessions.
func TestAgentAdvertisesOverBGP(t *testing.T) {
	fb := &fakeBGP{}
	own := func() (map[netip.Addr]string, error) {
		return map[netip.Addr]string{netip.MustParseAddr("192.0.2.11"): "eth0"}, nil
	}
	_, fa, c := newTestAgent(t, WithBGP(fb), WithLocalAddresses(own))
	s, first := open(t, c)
	if !slices.Contains(first.GetCapabilities(), speakerv1.CapabilityBGP) || !slices.Contains(first.GetCapabilities(), speakerv1.CapabilityBGPMED) {
		t.Errorf("capabilities %v lack bgp or bgp-med", first.GetCapabilities())
	}
	lp, med := uint32(200), uint32(2)
	to := func(adv ...*speakerv1.BGPAdvertisement) []*speakerv1.BGPAdvertisement { return adv }
	snap := &speakerv1.Snapshot{Version: 1, Leader: "test", Bgp: bgpConfig, Announcements: []*speakerv1.Announcement{
		{Address: "198.51.100.1", Bgp: to(&speakerv1.BGPAdvertisement{Peer: "192.0.2.1", Communities: []string{"no-export"}, LocalPref: &lp})},
		{Address: "198.51.100.2", BgpOnly: true, Bgp: to(&speakerv1.BGPAdvertisement{Peer: "192.0.2.1", PrefixLength: 24})},
		{Address: "2001:db8:5::2", BgpOnly: true, Bgp: to(&speakerv1.BGPAdvertisement{Peer: "192.0.2.1", Med: &med})},
		{Address: "192.0.2.11", BgpOnly: true, Bgp: to(&speakerv1.BGPAdvertisement{Peer: "192.0.2.1"})}, // the node's own
	}}
	r := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}})
	if diff := cmp.Diff([]string{"198.51.100.1"}, fa.list()); diff != "" {
		t.Errorf("layer 2 answers for (-want +got):\n%s", diff)
	}
	want := map[string]bgp.Attributes{
		"198.51.100.1/32 to 192.0.2.1":   {Communities: []string{"no-export"}, LocalPref: &lp},
		"198.51.100.0/24 to 192.0.2.1":   {Communities: []string{}, LargeCommunities: []string{}},
		"2001:db8:5::2/128 to 192.0.2.1": {Communities: []string{}, LargeCommunities: []string{}, MED: &med},
	}
	d := fb.desired()
	if diff := cmp.Diff(want, exportsOf(d), cmp.Comparer(func(a, b bgp.Attributes) bool { return a.Equal(b) })); diff != "" {
		t.Errorf("exports (-want +got):\n%s", diff)
	}
	wantPeer := bgp.Peer{
		Address: netip.MustParseAddr("192.0.2.1"), PeerASN: 64512, MyASN: 64513,
		HoldTime: 9 * time.Second, ConnectRetry: 5 * time.Second, Password: "pw",
	}
	if len(d.Peers) != 1 || d.Peers[0] != wantPeer || d.RouterID != netip.MustParseAddr("192.0.2.11") || d.ASN != 64513 || d.NextHopV6 != netip.MustParseAddr("2001:db8::11") {
		t.Errorf("desired %+v, want router ID 192.0.2.11, AS 64513, next hop 2001:db8::11 and peer %+v", d, wantPeer)
	}
	for _, v := range r.GetVips() {
		if v.GetAddress() == "192.0.2.11" && v.GetState() != speakerv1.VIPStatus_FAILED {
			t.Errorf("the node's own address is %v, want FAILED", v.GetState())
		}
	}

	// An update without bgp keeps the set-up; withdrawn VIPs go.
	send(t, s, update(2, nil, "198.51.100.1"))
	if _, ok := exportsOf(fb.desired())["198.51.100.1/32 to 192.0.2.1"]; ok || len(fb.desired().Peers) != 1 {
		t.Errorf("after withdrawing 198.51.100.1: %+v", fb.desired())
	}

	// Sessions are reported as they change.
	fb.mu.Lock()
	fb.sessions = []bgp.Session{{Peer: netip.MustParseAddr("192.0.2.1"), State: "Established", Advertised: 2}}
	fb.mu.Unlock()
	wantSession := &speakerv1.BGPSessionStatus{Peer: "192.0.2.1", State: "Established", Advertised: 2}
	for {
		r, err := s.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(r.GetBgpSessions()) == 1 && proto.Equal(r.GetBgpSessions()[0], wantSession) {
			break
		}
	}

	// An empty set-up closes every session.
	u := &speakerv1.Update{Version: 3, Bgp: &speakerv1.BGPConfig{}}
	send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: u}})
	if d := fb.desired(); len(d.Peers) != 0 {
		t.Errorf("peers %v after an empty set-up", d.Peers)
	}
}

// TestUpdatesReachBGPSideOnlyWhenTheyTouchIt: an update that changes
// nothing advertised over BGP (a layer-2 VIP added or withdrawn) leaves the
// BGP side alone (its desired state is O(VIPs) to build and to apply); one
// that adds, changes or withdraws an advertised VIP, or changes the set-up,
// applies it.
func TestUpdatesReachBGPSideOnlyWhenTheyTouchIt(t *testing.T) {
	fb := &fakeBGP{}
	_, _, c := newTestAgent(t, WithBGP(fb))
	s, _ := open(t, c)
	bgpVIP := func(addr string) *speakerv1.Announcement {
		return &speakerv1.Announcement{Address: addr, BgpOnly: true, Bgp: []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}}}
	}
	send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: &speakerv1.Snapshot{
		Version: 1, Leader: "test", Bgp: bgpConfig, Announcements: []*speakerv1.Announcement{bgpVIP("198.51.100.1")},
	}}})
	version := uint64(1)
	for _, tc := range []struct {
		name        string
		update      *speakerv1.Update
		wantBGP     bool
		wantExports int // exports after the update
	}{
		{name: "a layer-2 VIP added", update: &speakerv1.Update{Announce: []*speakerv1.Announcement{{Address: "198.51.100.7"}}}, wantExports: 1},
		{name: "a layer-2 VIP withdrawn", update: &speakerv1.Update{Withdraw: []string{"198.51.100.7"}}, wantExports: 1},
		{name: "a BGP VIP added", update: &speakerv1.Update{Announce: []*speakerv1.Announcement{bgpVIP("198.51.100.2")}}, wantBGP: true, wantExports: 2},
		{name: "a BGP VIP made layer 2", update: &speakerv1.Update{Announce: []*speakerv1.Announcement{{Address: "198.51.100.2"}}}, wantBGP: true, wantExports: 1},
		{name: "a BGP VIP withdrawn", update: &speakerv1.Update{Withdraw: []string{"198.51.100.1"}}, wantBGP: true, wantExports: 0},
		{name: "the set-up changed", update: &speakerv1.Update{Bgp: bgpConfig}, wantBGP: true, wantExports: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fb.mu.Lock()
			before := fb.applied
			fb.mu.Unlock()
			version++
			tc.update.Version = version
			if r := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: tc.update}}); r.GetAppliedVersion() != version {
				t.Fatalf("applied version %d, want %d", r.GetAppliedVersion(), version)
			}
			fb.mu.Lock()
			applied := fb.applied - before
			fb.mu.Unlock()
			if got := applied > 0; got != tc.wantBGP {
				t.Errorf("the BGP side applied %d times, want applied: %v", applied, tc.wantBGP)
			}
			if got := len(fb.desired().Exports); got != tc.wantExports {
				t.Errorf("%d exports after the update, want %d", got, tc.wantExports)
			}
		})
	}
}

// TestBGPSideKeepsExportsWithoutPeers: while the BGP set-up names no peer,
// the BGP side is still given the exports (its table follows the VIPs),
// so that once peers come it advertises every VIP advertised meanwhile and
// none withdrawn meanwhile; /bgp lists no route while there is no peer.
func TestBGPSideKeepsExportsWithoutPeers(t *testing.T) {
	fb := &fakeBGP{}
	agent, _, c := newTestAgent(t, WithBGP(fb))
	s, _ := open(t, c)
	bgpVIP := func(addr string) *speakerv1.Announcement {
		return &speakerv1.Announcement{Address: addr, BgpOnly: true, Bgp: []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}}}
	}
	noPeers := &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513}
	version := uint64(1)
	send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: &speakerv1.Snapshot{
		Version: version, Leader: "test", Announcements: []*speakerv1.Announcement{bgpVIP("198.51.100.1")},
	}}})
	steps := []struct {
		name       string
		update     *speakerv1.Update
		want       []string // the BGP side's exports
		wantRoutes int      // routes in /bgp
	}{
		{"no set-up", &speakerv1.Update{Announce: []*speakerv1.Announcement{bgpVIP("198.51.100.2")}},
			[]string{"198.51.100.1/32 to 192.0.2.1", "198.51.100.2/32 to 192.0.2.1"}, 0},
		{"peers come", &speakerv1.Update{Bgp: bgpConfig},
			[]string{"198.51.100.1/32 to 192.0.2.1", "198.51.100.2/32 to 192.0.2.1"}, 2},
		{"peers go", &speakerv1.Update{Bgp: noPeers},
			[]string{"198.51.100.1/32 to 192.0.2.1", "198.51.100.2/32 to 192.0.2.1"}, 0},
		{"a VIP withdrawn and one added without peers", &speakerv1.Update{Withdraw: []string{"198.51.100.1"}, Announce: []*speakerv1.Announcement{bgpVIP("198.51.100.3")}},
			[]string{"198.51.100.2/32 to 192.0.2.1", "198.51.100.3/32 to 192.0.2.1"}, 0},
		{"peers again", &speakerv1.Update{Bgp: bgpConfig},
			[]string{"198.51.100.2/32 to 192.0.2.1", "198.51.100.3/32 to 192.0.2.1"}, 2},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			version++
			st.update.Version = version
			if r := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: st.update}}); r.GetAppliedVersion() != version {
				t.Fatalf("applied version %d, want %d", r.GetAppliedVersion(), version)
			}
			got := slices.Sorted(maps.Keys(exportsOf(fb.desired())))
			if diff := cmp.Diff(st.want, got); diff != "" {
				t.Errorf("the BGP side's exports (-want +got):\n%s", diff)
			}
			if routes := agent.BGPState().Routes; len(routes) != st.wantRoutes {
				t.Errorf("/bgp routes %v, want %d", routes, st.wantRoutes)
			}
		})
	}
}
