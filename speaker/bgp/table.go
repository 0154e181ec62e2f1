package bgp

import "net/netip"

// Table is the full export table a BGP side keeps from the Desireds it is
// given: a Desired whose Changed is nil replaces it, one whose Changed is
// not nil patches the exports of those prefixes (see Desired.Changed).
// The zero value is an empty table. It is not safe for concurrent use.
type Table struct {
	exports map[Export]Attributes
	// peers counts the entries of exports to each peer, so that a
	// changed prefix is dropped in O(peers).
	peers map[netip.Addr]int
}

// Apply makes t the export table d leaves: d.Exports when d.Changed is
// nil (t then owns that map); else t with the exports of each prefix of
// d.Changed replaced by the entries of d.Exports of that prefix (none:
// the prefix is exported to nobody), the other entries of d.Exports
// ignored. A patch costs O(changed prefixes × peers + len(d.Exports)).
func (t *Table) Apply(d Desired) {
	if d.Changed == nil {
		t.exports = d.Exports
		if t.exports == nil {
			t.exports = map[Export]Attributes{}
		}
		t.peers = map[netip.Addr]int{}
		for e := range t.exports {
			t.peers[e.Peer]++
		}
		return
	}
	if t.exports == nil {
		t.exports, t.peers = map[Export]Attributes{}, map[netip.Addr]int{}
	}
	if len(d.Changed) == 0 {
		return
	}
	changed := make(map[netip.Prefix]bool, len(d.Changed))
	for _, p := range d.Changed {
		changed[p] = true
		for peer := range t.peers {
			e := Export{Peer: peer, Prefix: p}
			if _, ok := t.exports[e]; ok {
				t.remove(e)
			}
		}
	}
	for e, a := range d.Exports {
		if !changed[e.Prefix] {
			continue
		}
		if _, ok := t.exports[e]; !ok {
			t.peers[e.Peer]++
		}
		t.exports[e] = a
	}
}

// remove drops e, which t holds.
func (t *Table) remove(e Export) {
	delete(t.exports, e)
	if t.peers[e.Peer]--; t.peers[e.Peer] == 0 {
		delete(t.peers, e.Peer)
	}
}

// Exports returns the table: every export with its attributes. The map is
// t's own: callers must not change it, and it is valid until the next
// Apply. Nil before the first Apply.
func (t *Table) Exports() map[Export]Attributes { return t.exports }

// Len counts the exports in the table.
func (t *Table) Len() int { return len(t.exports) }
