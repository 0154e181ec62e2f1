package simspeakers

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// TestBGPExported checks that the BGP fake records since when each prefix
// is exported to a configured peer, keeps that time across applies that
// keep the prefix, and forgets prefixes no longer exported, from full
// Desireds and from patches (Desired.Changed), and counts the prefixes
// exported to each peer.
func TestBGPExported(t *testing.T) {
	peer := netip.MustParseAddr("203.0.113.254")
	other := netip.MustParseAddr("203.0.113.253")
	a := netip.MustParsePrefix("2001:db8:2000::1/128")
	b := netip.MustParsePrefix("2001:db8:2000::2/128")
	t0 := time.Unix(1000, 0)
	patch := func(changed []netip.Prefix, d bgp.Desired) bgp.Desired {
		d.Changed = changed
		return d
	}
	desired := func(peers []netip.Addr, exports ...bgp.Export) bgp.Desired {
		d := bgp.Desired{Exports: map[bgp.Export]bgp.Attributes{}}
		for _, p := range peers {
			d.Peers = append(d.Peers, bgp.Peer{Address: p})
		}
		for _, e := range exports {
			d.Exports[e] = bgp.Attributes{}
		}
		return d
	}
	steps := []struct {
		name  string
		d     bgp.Desired
		want  map[netip.Prefix]time.Time
		count int // prefixes advertised to peer
	}{
		{"first export", desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: a}), map[netip.Prefix]time.Time{a: t0}, 1},
		{"kept and added", desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: a}, bgp.Export{Peer: peer, Prefix: b}),
			map[netip.Prefix]time.Time{a: t0, b: t0.Add(time.Second)}, 2},
		{"withdrawn", desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: b}), map[netip.Prefix]time.Time{b: t0.Add(time.Second)}, 1},
		{"to an unconfigured peer", desired([]netip.Addr{peer}, bgp.Export{Peer: other, Prefix: a}), map[netip.Prefix]time.Time{}, 0},
		{"patch exporting a", patch([]netip.Prefix{a}, desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: a})),
			map[netip.Prefix]time.Time{a: t0.Add(4 * time.Second)}, 1},
		{"patch exporting b, with an entry of an unchanged prefix", patch([]netip.Prefix{b},
			desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: b}, bgp.Export{Peer: other, Prefix: b}, bgp.Export{Peer: other, Prefix: a})),
			map[netip.Prefix]time.Time{a: t0.Add(4 * time.Second), b: t0.Add(5 * time.Second)}, 2},
		{"patch withdrawing a", patch([]netip.Prefix{a}, desired([]netip.Addr{peer})),
			map[netip.Prefix]time.Time{b: t0.Add(5 * time.Second)}, 1},
		{"empty patch", patch([]netip.Prefix{}, desired([]netip.Addr{peer})), map[netip.Prefix]time.Time{b: t0.Add(5 * time.Second)}, 1},
		{"full again", desired([]netip.Addr{peer}, bgp.Export{Peer: peer, Prefix: a}, bgp.Export{Peer: other, Prefix: b}),
			map[netip.Prefix]time.Time{a: t0.Add(8 * time.Second)}, 1},
	}
	g := NewBGP()
	now := t0
	g.now = func() time.Time { return now }
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			if err := g.Apply(context.Background(), st.d); err != nil {
				t.Fatal(err)
			}
			got := g.Exported()
			if len(got) != len(st.want) {
				t.Fatalf("Exported() = %v, want %v", got, st.want)
			}
			for p, at := range st.want {
				if !got[p].Equal(at) {
					t.Errorf("%s exported since %v, want %v", p, got[p], at)
				}
			}
			ss, _ := g.Sessions(context.Background())
			if len(ss) != 1 || ss[0].Advertised != st.count {
				t.Errorf("sessions %+v, want one advertising %d prefixes", ss, st.count)
			}
		})
		now = now.Add(time.Second)
	}
}
