package simspeakers

import (
	"context"
	"maps"
	"net/netip"
	"sync"
	"time"

	"github.com/ironlb/ironlb/speaker"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// Recorder is a simulated speaker's layer-2 side: a speaker.Announcer that
// sends nothing and records, for every address it answers for now, when
// it started to, and how many announces and withdrawals it was asked for.
// Its probes find every address free. It is safe for concurrent use.
type Recorder struct {
	mu        sync.Mutex
	now       func() time.Time
	announced map[netip.Addr]time.Time
	announces int
	withdraws int
	closed    bool
}

var _ speaker.Announcer = (*Recorder)(nil)

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{now: time.Now, announced: map[netip.Addr]time.Time{}}
}

// Announce records addr as answered for from now on, unless it already is.
func (r *Recorder) Announce(addr netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.announces++
	if _, ok := r.announced[addr]; !ok {
		r.announced[addr] = r.now()
	}
	return nil
}

// Withdraw records that addr is no longer answered for.
func (r *Recorder) Withdraw(addr netip.Addr) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdraws++
	delete(r.announced, addr)
	return nil
}

// Err is always nil: the simulated interface always works.
func (r *Recorder) Err() error { return nil }

// Close withdraws everything.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.withdraws += len(r.announced)
	clear(r.announced)
	r.closed = true
	return nil
}

// Probe finds no other host using any address.
func (r *Recorder) Probe(context.Context, []netip.Addr) (map[netip.Addr]speaker.Claim, error) {
	return nil, nil
}

// Announced returns the addresses answered for now, each with when its
// announcement began.
func (r *Recorder) Announced() map[netip.Addr]time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return maps.Clone(r.announced)
}

// Counts returns how many Announce and Withdraw calls were made.
func (r *Recorder) Counts() (announces, withdraws int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.announces, r.withdraws
}

// BGP is a simulated speaker's BGP side: it holds what the agent asks for
// and reports every configured peer Established, advertising the prefixes
// exported to it, and records since when each prefix is exported (to any
// peer). It opens no session. It is safe for concurrent use.
type BGP struct {
	mu       sync.Mutex
	now      func() time.Time
	desired  bgp.Desired // the last applied, as given: its Exports may be a patch
	table    bgp.Table   // the full export table
	since    map[netip.Addr]time.Time
	exported map[netip.Prefix]time.Time
	count    map[netip.Addr]int // prefixes exported to each configured peer
	applies  int
}

var _ speaker.BGPSpeaker = (*BGP)(nil)

// NewBGP returns a BGP side with no peers.
func NewBGP() *BGP {
	return &BGP{now: time.Now, since: map[netip.Addr]time.Time{}, exported: map[netip.Prefix]time.Time{}, count: map[netip.Addr]int{}}
}

// Apply takes d as the state to hold (a patch of the last one when
// d.Changed is not nil: see bgp.Desired); sessions to new peers are
// Established at once. Like the Reconciler, it looks only at the prefixes
// of a patch when its peers are the same, so that a simulated node costs
// its host O(change) per apply, as a real one does.
func (b *BGP) Apply(_ context.Context, d bgp.Desired) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.applies++
	now := b.now()
	if d.Changed != nil && b.samePeersLocked(d.Peers) {
		old := b.table.Exports() // before d: read before applying it
		for _, p := range d.Changed {
			for peer := range b.since {
				e := bgp.Export{Peer: peer, Prefix: p}
				_, was := old[e]
				_, is := d.Exports[e]
				switch {
				case is && !was:
					b.count[peer]++
				case was && !is:
					b.count[peer]--
				}
			}
		}
		b.table.Apply(d)
		b.desired = d
		for _, p := range d.Changed {
			if b.exportedLocked(p) {
				if _, ok := b.exported[p]; !ok {
					b.exported[p] = now
				}
			} else {
				delete(b.exported, p)
			}
		}
		return nil
	}
	b.table.Apply(d)
	b.desired = d
	seen := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		seen[p.Address] = true
		if _, ok := b.since[p.Address]; !ok {
			b.since[p.Address] = now
		}
	}
	maps.DeleteFunc(b.since, func(a netip.Addr, _ time.Time) bool { return !seen[a] })
	b.recordExportsLocked(now)
	return nil
}

// samePeersLocked reports whether peers are the configured ones.
func (b *BGP) samePeersLocked(peers []bgp.Peer) bool {
	if len(peers) != len(b.since) {
		return false
	}
	for _, p := range peers {
		if _, ok := b.since[p.Address]; !ok {
			return false
		}
	}
	return true
}

// exportedLocked reports whether the table sends p to a configured peer.
func (b *BGP) exportedLocked(p netip.Prefix) bool {
	exports := b.table.Exports()
	for peer := range b.since {
		if _, ok := exports[bgp.Export{Peer: peer, Prefix: p}]; ok {
			return true
		}
	}
	return false
}

// recordExportsLocked notes when each prefix exported to a configured peer
// began to be, and forgets those no longer exported; it counts the
// prefixes exported to each peer.
func (b *BGP) recordExportsLocked(now time.Time) {
	out := make(map[netip.Prefix]bool, b.table.Len())
	clear(b.count)
	for e := range b.table.Exports() {
		if _, ok := b.since[e.Peer]; ok {
			b.count[e.Peer]++
			out[e.Prefix] = true
			if _, ok := b.exported[e.Prefix]; !ok {
				b.exported[e.Prefix] = now
			}
		}
	}
	maps.DeleteFunc(b.exported, func(p netip.Prefix, _ time.Time) bool { return !out[p] })
}

// Sessions reports every peer of the last Apply as Established.
func (b *BGP) Sessions(context.Context) ([]bgp.Session, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]bgp.Session, 0, len(b.desired.Peers))
	for _, p := range b.desired.Peers {
		out = append(out, bgp.Session{Peer: p.Address, State: "Established", Since: b.since[p.Address], Advertised: b.count[p.Address]})
	}
	return out, nil
}

// Stop forgets every peer and export.
func (b *BGP) Stop(context.Context, bool) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.desired = bgp.Desired{}
	b.table = bgp.Table{}
	clear(b.since)
	clear(b.exported)
	clear(b.count)
	return nil
}

// Advertised returns the prefixes exported to any peer now.
func (b *BGP) Advertised() map[netip.Prefix]bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[netip.Prefix]bool{}
	for e := range b.table.Exports() {
		out[e.Prefix] = true
	}
	return out
}

// Exported returns the prefixes exported to a configured peer now, each
// with when its export began.
func (b *BGP) Exported() map[netip.Prefix]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return maps.Clone(b.exported)
}

// Applies counts the Apply calls.
func (b *BGP) Applies() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.applies
}
