package bgp

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestTable: a full Desired replaces the table; a patch replaces the
// exports of its changed prefixes alone, to every peer, ignores its
// entries of other prefixes, and removes a changed prefix it has no entry
// for; an empty patch changes nothing.
func TestTable(t *testing.T) {
	peerC := netip.MustParseAddr("192.0.2.3")
	noExport := Attributes{Communities: []string{"no-export"}}
	pref := Attributes{LocalPref: &lp200}
	full := func(exports map[Export]Attributes) Desired { return Desired{Exports: exports} }
	patch := func(exports map[Export]Attributes, changed ...netip.Prefix) Desired {
		if changed == nil {
			changed = []netip.Prefix{}
		}
		return Desired{Exports: exports, Changed: changed}
	}
	start := func() map[Export]Attributes {
		return map[Export]Attributes{
			{peerA, vip1}: {}, {peerB, vip1}: noExport,
			{peerA, vip2}: {},
			{peerB, vip6}: pref, {peerC, vip6}: {},
		}
	}
	tests := []struct {
		name    string
		applies []Desired
		want    map[Export]Attributes
	}{
		{"zero value", nil, nil},
		{"full", []Desired{full(start())}, start()},
		{"full with no exports", []Desired{full(nil)}, map[Export]Attributes{}},
		{"full replaces everything", []Desired{full(start()), full(map[Export]Attributes{{peerC, vip2}: noExport})},
			map[Export]Attributes{{peerC, vip2}: noExport}},
		{"patch of an empty table", []Desired{patch(map[Export]Attributes{{peerA, vip1}: {}}, vip1)},
			map[Export]Attributes{{peerA, vip1}: {}}},
		{"patch adding, changing and removing exports to several peers", []Desired{full(start()), patch(map[Export]Attributes{
			{peerA, vip1}: pref, {peerC, vip1}: {}, // vip1: changed to A, removed from B, added to C
			{peerB, vip2}: {}, {peerC, vip2}: noExport, // vip2: removed from A, added to B and C
		}, vip1, vip2)}, map[Export]Attributes{
			{peerA, vip1}: pref, {peerC, vip1}: {},
			{peerB, vip2}: {}, {peerC, vip2}: noExport,
			{peerB, vip6}: pref, {peerC, vip6}: {},
		}},
		{"patch with entries of unchanged prefixes: ignored", []Desired{full(start()), patch(map[Export]Attributes{
			{peerA, vip2}: noExport,
			{peerA, vip6}: {}, {peerB, vip6}: {}, // vip6 is not in Changed
			{peerC, vip1}: {}, // nor vip1
		}, vip2)}, map[Export]Attributes{
			{peerA, vip1}: {}, {peerB, vip1}: noExport,
			{peerA, vip2}: noExport,
			{peerB, vip6}: pref, {peerC, vip6}: {},
		}},
		{"changed prefix with no entries: removed for all peers", []Desired{full(start()), patch(nil, vip6)}, map[Export]Attributes{
			{peerA, vip1}: {}, {peerB, vip1}: noExport,
			{peerA, vip2}: {},
		}},
		{"changed prefix not exported before nor now", []Desired{full(start()), patch(nil, netip.MustParsePrefix("203.0.113.0/24"))}, start()},
		{"empty patch: no change", []Desired{full(start()), patch(map[Export]Attributes{{peerA, vip6}: {}})}, start()},
		{"patches in a row, the last peer of a prefix gone and back", []Desired{
			full(start()),
			patch(nil, vip6),
			patch(map[Export]Attributes{{peerC, vip1}: pref}, vip1),
			patch(map[Export]Attributes{{peerC, vip6}: noExport}, vip6),
		}, map[Export]Attributes{
			{peerC, vip1}: pref,
			{peerA, vip2}: {},
			{peerC, vip6}: noExport,
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var tb Table
			for _, d := range tc.applies {
				tb.Apply(d)
			}
			if diff := cmp.Diff(tc.want, tb.Exports()); diff != "" {
				t.Errorf("exports (-want +got):\n%s", diff)
			}
			if tb.Len() != len(tc.want) {
				t.Errorf("Len() = %d, want %d", tb.Len(), len(tc.want))
			}
			// The per-peer counts match the table.
			count := map[netip.Addr]int{}
			for e := range tb.Exports() {
				count[e.Peer]++
			}
			if len(count) == 0 {
				count = nil
			}
			if len(tb.peers) == 0 {
				tb.peers = nil
			}
			if diff := cmp.Diff(count, tb.peers); diff != "" {
				t.Errorf("entries per peer (-want +got):\n%s", diff)
			}
		})
	}
}
