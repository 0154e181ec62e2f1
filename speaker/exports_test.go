package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// TestExportsFollowTheVIPs: over random snapshots and updates (VIPs
// advertised and withdrawn, aggregated into a covering prefix with
// different attributes, refused, moved between BGP and layer 2 and between
// interfaces), the interfaces the agent counts are those its VIPs name, the
// export table its BGP side keeps from what the agent gives it is what
// every VIP it holds exports, rebuilt from nothing (aggregated exports
// take their lowest VIP's attributes), each patch holds exactly the new
// exports of the prefixes it says changed, and those include every one
// whose exports differ from the previous apply; after an apply that
// failed, the agent gives the full table.
func TestExportsFollowTheVIPs(t *testing.T) {
	own := func() (map[netip.Addr]string, error) {
		return map[netip.Addr]string{netip.MustParseAddr("198.51.100.9"): "eth0"}, nil
	}
	med := []uint32{0, 1, 2}
	addrs := []string{"198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.9", "2001:db8:5::1", "2001:db8:5::2"}
	announcement := func(rnd *rand.Rand, addr string) *speakerv1.Announcement {
		an := &speakerv1.Announcement{Address: addr}
		if rnd.IntN(3) == 0 {
			an.Interfaces = []string{[]string{"eth1", "eth2"}[rnd.IntN(2)]}
		}
		switch rnd.IntN(4) {
		case 0: // layer 2 only
		case 1:
			an.BgpOnly = true
			an.Bgp = []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", PrefixLength: 24, Med: &med[rnd.IntN(3)]}}
		default:
			an.BgpOnly = rnd.IntN(2) == 0
			an.Bgp = []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", Med: &med[rnd.IntN(3)]}}
			if rnd.IntN(2) == 0 {
				an.Bgp = append(an.Bgp, &speakerv1.BGPAdvertisement{Peer: "192.0.2.2", Communities: []string{"no-export"}})
			}
		}
		return an
	}
	cfg := &speakerv1.BGPConfig{RouterId: "192.0.2.11", Asn: 64513, Peers: []*speakerv1.BGPPeer{
		{Name: "a", Address: "192.0.2.1", PeerAsn: 64512}, {Name: "b", Address: "192.0.2.2", PeerAsn: 64512},
	}}
	for seed := range uint64(10) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 3))
			fb := &appliesBGP{}
			agent, _, c := newTestAgent(t, WithBGP(fb), WithLocalAddresses(own))
			s, _ := open(t, c)
			snap := &speakerv1.Snapshot{Version: 1, Leader: "test", Bgp: cfg}
			for _, a := range addrs[:3] {
				snap.Announcements = append(snap.Announcements, announcement(rnd, a))
			}
			send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}})
			attrsEqual := cmp.Comparer(func(a, b bgp.Attributes) bool { return a.Equal(b) })
			prev := map[bgp.Export]bgp.Attributes{} // the table before the apply checked
			seen := 0                               // applies checked
			for v := uint64(2); v < 60; v++ {
				u := update(v, nil)
				for range 1 + rnd.IntN(3) {
					a := addrs[rnd.IntN(len(addrs))]
					if rnd.IntN(3) == 0 {
						u.GetUpdate().Withdraw = append(u.GetUpdate().Withdraw, a)
					} else {
						u.GetUpdate().Announce = append(u.GetUpdate().Announce, announcement(rnd, a))
					}
				}
				fb.mu.Lock()
				fb.failNext = rnd.IntN(6) == 0
				fb.mu.Unlock()
				send(t, s, u)
				applies, tables, failed := fb.all()
				want := rebuiltExports(t, agent)
				checkInterfaceNames(t, agent)
				if diff := cmp.Diff(want, tables[len(tables)-1], attrsEqual); diff != "" {
					t.Fatalf("version %d: exports (-rebuilt +BGP side's table):\n%s", v, diff)
				}
				for i, d := range applies[seen:] {
					table := tables[seen+i]
					if seen+i > 0 && failed[seen+i-1] && d.Changed != nil {
						t.Fatalf("version %d: a patch of %v after a failed apply, want the full table", v, d.Changed)
					}
					if d.Changed == nil { // the full table
						prev = table
						continue
					}
					changed := map[netip.Prefix]bool{}
					for _, p := range d.Changed {
						changed[p] = true
					}
					ofChanged := map[bgp.Export]bgp.Attributes{}
					for e, a := range table {
						if changed[e.Prefix] {
							ofChanged[e] = a
						}
					}
					if diff := cmp.Diff(ofChanged, d.Exports, attrsEqual); diff != "" {
						t.Fatalf("version %d: patch of %v (-table's exports of those prefixes +patch):\n%s", v, d.Changed, diff)
					}
					for e, a := range table {
						if b, ok := prev[e]; (!ok || !a.Equal(b)) && !changed[e.Prefix] {
							t.Fatalf("version %d: %s to %s changed, but Changed %v does not say so", v, e.Prefix, e.Peer, d.Changed)
						}
					}
					for e := range prev {
						if _, ok := table[e]; !ok && !changed[e.Prefix] {
							t.Fatalf("version %d: %s to %s went, but Changed %v does not say so", v, e.Prefix, e.Peer, d.Changed)
						}
					}
					prev = table
				}
				seen = len(applies)
			}
		})
	}
}

// appliesBGP records every Desired the agent applies as given, a copy of
// the full export table after each (taken from it whether or not the
// apply fails, as bgp.Desired says), and which failed.
type appliesBGP struct {
	fakeBGP
	failNext bool // fail the next apply
	applies  []bgp.Desired
	tables   []map[bgp.Export]bgp.Attributes
	failed   []bool
}

func (f *appliesBGP) Apply(ctx context.Context, d bgp.Desired) error {
	err := f.fakeBGP.Apply(ctx, d)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applies = append(f.applies, d)
	f.tables = append(f.tables, maps.Clone(f.table.Exports()))
	f.failed = append(f.failed, f.failNext)
	if f.failNext {
		f.failNext = false
		err = errors.New("router unreachable")
	}
	return err
}

func (f *appliesBGP) all() ([]bgp.Desired, []map[bgp.Export]bgp.Attributes, []bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.applies), slices.Clone(f.tables), slices.Clone(f.failed)
}

// checkInterfaceNames fails t unless the interfaces the agent counts are
// those its VIPs name, and its default one.
func checkInterfaceNames(t *testing.T, a *Agent) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	want := map[string]bool{a.defaultIfc: true}
	for _, v := range a.vips {
		for _, name := range v.interfaces {
			want[name] = true
		}
	}
	if diff := cmp.Diff(want, a.interfaceNamesLocked()); diff != "" {
		t.Fatalf("interfaces (-named by the VIPs +counted):\n%s", diff)
	}
}

// rebuiltExports is what the agent's VIPs export, built from nothing.
func rebuiltExports(t *testing.T, a *Agent) map[bgp.Export]bgp.Attributes {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	out := map[bgp.Export]bgp.Attributes{}
	from := map[bgp.Export]netip.Addr{}
	for addr, v := range a.vips {
		if v.refused {
			continue
		}
		list, err := vipExports(addr, v.bgp)
		if err != nil {
			t.Fatal(err)
		}
		for _, ve := range list {
			if old, ok := from[ve.e]; !ok || addr.Less(old) {
				out[ve.e], from[ve.e] = ve.attrs, addr
			}
		}
	}
	return out
}
