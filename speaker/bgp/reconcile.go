package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
)

// Reconciler brings a Router to a Desired state with the fewest calls:
// it remembers what it applied and changes only the difference. It is not
// safe for concurrent use.
type Reconciler struct {
	r Router

	running   bool
	asn       uint32
	routerID  netip.Addr
	nextHopV6 netip.Addr
	peers     map[netip.Addr]Peer
	exports   map[Export]Attributes
	paths     map[netip.Prefix]bool
	refresh   map[netip.Addr]bool // peers to refresh, kept until a refresh worked
	// clean is true when the last Apply succeeded: the router holds what
	// the Reconciler remembers, and a patch (Desired.Changed) can be
	// applied by comparing its prefixes alone.
	clean bool
	// wanted is the full export table of the Desireds given to Apply, and
	// desired the last of them with it as Exports (Changed nil). Neither
	// is reset by Stop: Apply stops the router on a new AS number or
	// router ID and goes on, and a patch after a Stop still applies to
	// them.
	wanted  Table
	desired Desired
}

// NewReconciler returns a Reconciler for a stopped r.
func NewReconciler(r Router) *Reconciler {
	rc := &Reconciler{r: r}
	rc.reset()
	return rc
}

func (rc *Reconciler) reset() {
	rc.running = false
	rc.peers = map[netip.Addr]Peer{}
	rc.exports = map[Export]Attributes{}
	rc.paths = map[netip.Prefix]bool{}
	rc.refresh = map[netip.Addr]bool{}
	rc.clean = false
}

// Apply makes the router hold d's peers and advertise d's exports. Order
// matters for what peers see: a prefix is exported before its path is
// added (so it goes out with its attributes at once), withdrawn before it
// is unexported, and peers whose existing paths changed exposure are
// refreshed. A new peer is added only once its exports and paths are in
// place, so that its first update is the whole table (a router keeping a
// restarting node's routes drops those missing from it); a peer that
// goes is sent the withdrawal of its routes before its session closes. A
// peer, export or path that fails does not keep the others from being
// applied; the next Apply retries what failed. Before anything else
// (also when d is then refused), d is applied to the full export table
// the Reconciler keeps from the Desireds it is given (a patch, d.Changed
// not nil, changes the exports of its prefixes only: see Desired.Changed);
// the router is brought to that table. When the last Apply succeeded and
// the set-up is the same, only the prefixes of a patch are compared.
func (rc *Reconciler) Apply(ctx context.Context, d Desired) error {
	rc.wanted.Apply(d)
	d.Exports = rc.wanted.Exports()
	rc.desired = d
	rc.desired.Changed = nil
	err := rc.apply(ctx, d)
	rc.clean = err == nil
	return err
}

func (rc *Reconciler) apply(ctx context.Context, d Desired) error {
	if err := validate(d); err != nil {
		return err
	}
	if len(d.Peers) == 0 {
		if !rc.running {
			return nil
		}
		// Close every session but keep the server: gobgp's server
		// cannot be stopped for good (its Serve never returns).
		d.ASN, d.RouterID = rc.asn, rc.routerID
	}
	if rc.running && (d.ASN != rc.asn || d.RouterID != rc.routerID) {
		if err := rc.Stop(ctx, false); err != nil {
			return err
		}
	}
	if !rc.running {
		if err := rc.r.Start(ctx, d.ASN, d.RouterID); err != nil {
			return err
		}
		rc.running, rc.asn, rc.routerID = true, d.ASN, d.RouterID
	}
	targets := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		targets[p.Address] = true
	}
	if d.Changed != nil && rc.clean && rc.samePeers(d.Peers) && d.NextHopV6 == rc.nextHopV6 {
		return rc.applyChanged(ctx, d)
	}
	return errors.Join(
		rc.updatePeers(ctx, d.Peers),
		rc.applyExports(ctx, d, targets),
		rc.addPeers(ctx, d.Peers),
		rc.deletePeers(ctx, targets),
	)
}

// Desired returns the last Desired given to Apply, with the full export
// table as Exports (read-only, valid until the next Apply) and Changed
// nil.
func (rc *Reconciler) Desired() Desired { return rc.desired }

// Stop stops the router and forgets what it held (not what it was last
// asked for: see Desired).
func (rc *Reconciler) Stop(ctx context.Context, graceful bool) error {
	if !rc.running {
		return nil
	}
	err := rc.r.Stop(ctx, graceful)
	rc.reset()
	return err
}

func validate(d Desired) error {
	if len(d.Peers) == 0 {
		return nil
	}
	if !d.RouterID.Is4() || d.RouterID.IsUnspecified() {
		return fmt.Errorf("router ID %v: want an IPv4 address other than 0.0.0.0", d.RouterID)
	}
	if d.ASN == 0 {
		return errors.New("AS number 0")
	}
	seen := map[netip.Addr]bool{}
	for _, p := range d.Peers {
		if !p.Address.IsValid() {
			return errors.New("a peer without an address")
		}
		if seen[p.Address] {
			return fmt.Errorf("peer %s given twice", p.Address)
		}
		seen[p.Address] = true
	}
	// Exports to peers that are not in d are ignored: the set-up and
	// the VIPs come in separate instructions, and one may be newer.
	return nil
}

// updatePeers changes the peers that exist and differ from d's.
func (rc *Reconciler) updatePeers(ctx context.Context, want []Peer) error {
	var errs []error
	for _, p := range want {
		if old, ok := rc.peers[p.Address]; !ok || old == p {
			continue
		}
		if err := rc.r.UpdatePeer(ctx, p); err != nil {
			errs = append(errs, err) // this peer only; the others go on
			continue
		}
		rc.peers[p.Address] = p
	}
	return errors.Join(errs...)
}

// addPeers adds the peers that do not exist yet.
func (rc *Reconciler) addPeers(ctx context.Context, want []Peer) error {
	var errs []error
	for _, p := range want {
		if _, ok := rc.peers[p.Address]; ok {
			continue
		}
		if err := rc.r.AddPeer(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		rc.peers[p.Address] = p
	}
	return errors.Join(errs...)
}

// deletePeers closes the sessions of peers not in targets (their routes
// were withdrawn by applyExports before).
func (rc *Reconciler) deletePeers(ctx context.Context, targets map[netip.Addr]bool) error {
	var errs []error
	for _, addr := range sortedAddrs(rc.peers) {
		if targets[addr] {
			continue
		}
		if err := rc.r.DeletePeer(ctx, addr); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(rc.peers, addr)
		delete(rc.refresh, addr)
		for e := range rc.exports {
			if e.Peer == addr {
				delete(rc.exports, e)
			}
		}
	}
	return errors.Join(errs...)
}

// applyExports changes exports and paths one by one; one that fails is
// reported and tried again by the next Apply, and does not keep the
// others from being applied. Exports to peers not in targets are
// dropped.
func (rc *Reconciler) applyExports(ctx context.Context, d Desired, targets map[netip.Addr]bool) error {
	var errs []error
	exports := map[Export]Attributes{}
	wantPaths := map[netip.Prefix]bool{}
	for e, attrs := range d.Exports {
		if targets[e.Peer] {
			exports[e] = attrs
			wantPaths[e.Prefix] = true
		}
	}
	// A new IPv6 next hop: re-originate the IPv6 paths (once all of
	// them are withdrawn; until then the old next hop stays recorded, so
	// the next Apply tries again).
	if d.NextHopV6 != rc.nextHopV6 {
		failed := false
		for _, p := range sortedPrefixes(rc.paths) {
			if p.Addr().Is6() {
				if err := rc.r.DeletePath(ctx, p); err != nil {
					errs = append(errs, err)
					failed = true
					continue
				}
				delete(rc.paths, p)
			}
		}
		if !failed {
			rc.nextHopV6 = d.NextHopV6
		}
	}
	// Withdraw first, then stop exporting.
	for _, p := range sortedPrefixes(rc.paths) {
		if wantPaths[p] {
			continue
		}
		if err := rc.r.DeletePath(ctx, p); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(rc.paths, p)
	}
	refresh := rc.refresh
	for _, e := range sortedExports(rc.exports) {
		if _, ok := exports[e]; ok {
			continue
		}
		if err := rc.r.Unexport(ctx, e); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(rc.exports, e)
		if rc.paths[e.Prefix] {
			refresh[e.Peer] = true
		}
	}
	for _, e := range sortedExports(exports) {
		attrs := exports[e]
		if old, ok := rc.exports[e]; ok && old.Equal(attrs) {
			continue
		}
		if err := rc.r.Export(ctx, e, attrs); err != nil {
			errs = append(errs, err)
			continue
		}
		rc.exports[e] = attrs
		if rc.paths[e.Prefix] {
			refresh[e.Peer] = true
		}
	}
	exported := map[netip.Prefix]bool{}
	for e := range rc.exports {
		exported[e.Prefix] = true
	}
	for _, p := range sortedPrefixes(wantPaths) {
		if rc.paths[p] || !exported[p] {
			continue // advertised already, or no export of it worked yet
		}
		if err := rc.r.AddPath(ctx, p, d.NextHopV6); err != nil {
			errs = append(errs, err)
			continue
		}
		rc.paths[p] = true
	}
	return errors.Join(append(errs, rc.refreshPeers(ctx))...)
}

// refreshPeers sends a route refresh to the peers in rc.refresh; one that
// fails stays there and is tried again by the next Apply.
func (rc *Reconciler) refreshPeers(ctx context.Context) error {
	var errs []error
	for _, peer := range sortedAddrs(rc.refresh) {
		if _, ok := rc.peers[peer]; !ok {
			delete(rc.refresh, peer) // a new peer gets the whole table when it is added
			continue
		}
		if err := rc.r.Refresh(ctx, peer); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(rc.refresh, peer)
	}
	return errors.Join(errs...)
}

func sortedAddrs[V any](m map[netip.Addr]V) []netip.Addr {
	return slices.SortedFunc(maps.Keys(m), func(a, b netip.Addr) int { return a.Compare(b) })
}

func sortedPrefixes(m map[netip.Prefix]bool) []netip.Prefix {
	return slices.SortedFunc(maps.Keys(m), comparePrefix)
}

func comparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return a.Bits() - b.Bits()
}

func sortedExports[V any](m map[Export]V) []Export {
	return slices.SortedFunc(maps.Keys(m), func(a, b Export) int {
		if c := a.Peer.Compare(b.Peer); c != 0 {
			return c
		}
		return comparePrefix(a.Prefix, b.Prefix)
	})
}

// samePeers reports whether want are exactly the peers the router holds.
func (rc *Reconciler) samePeers(want []Peer) bool {
	if len(want) != len(rc.peers) {
		return false
	}
	for _, p := range want {
		if old, ok := rc.peers[p.Address]; !ok || old != p {
			return false
		}
	}
	return true
}

// applyChanged is applyExports for the prefixes of d.Changed alone, in
// the same order for each: a path withdrawn before its exports go, added
// once one is exported, peers whose existing paths changed exposure
// refreshed. d.Exports is the full table. The caller checked that the
// router holds the rest of d (rc.clean, same peers and next hop).
func (rc *Reconciler) applyChanged(ctx context.Context, d Desired) error {
	var errs []error
	peers := sortedAddrs(rc.peers)
	changed := slices.Clone(d.Changed)
	slices.SortFunc(changed, comparePrefix)
	for _, p := range slices.Compact(changed) {
		wantPath := false
		for _, peer := range peers {
			if _, ok := d.Exports[Export{Peer: peer, Prefix: p}]; ok {
				wantPath = true
			}
		}
		if rc.paths[p] && !wantPath {
			if err := rc.r.DeletePath(ctx, p); err != nil {
				errs = append(errs, err)
				continue
			}
			delete(rc.paths, p)
		}
		exported := false
		for _, peer := range peers {
			e := Export{Peer: peer, Prefix: p}
			attrs, want := d.Exports[e]
			old, have := rc.exports[e]
			switch {
			case have && !want:
				if err := rc.r.Unexport(ctx, e); err != nil {
					errs = append(errs, err)
					continue
				}
				delete(rc.exports, e)
			case want && (!have || !old.Equal(attrs)):
				if err := rc.r.Export(ctx, e, attrs); err != nil {
					errs = append(errs, err)
					continue
				}
				rc.exports[e] = attrs
			default:
				exported = exported || have
				continue
			}
			exported = exported || want
			if rc.paths[p] {
				rc.refresh[peer] = true
			}
		}
		if wantPath && !rc.paths[p] && exported {
			if err := rc.r.AddPath(ctx, p, d.NextHopV6); err != nil {
				errs = append(errs, err)
				continue
			}
			rc.paths[p] = true
		}
	}
	return errors.Join(append(errs, rc.refreshPeers(ctx))...)
}
