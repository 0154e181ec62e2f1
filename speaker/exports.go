package speaker

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// A node advertises every BGP VIP of the cluster, and the CCM tells it of
// each one placed, moved or withdrawn anywhere. Rebuilding what the node
// exports on every such instruction cost O(BGP VIPs): at 1,500 BGP VIPs a
// node, most of what a speaker spent per update. The agent keeps its
// exports instead (exportIndex), changed VIP by VIP as instructions name
// them, and gives the BGP side only the exports of the prefixes changed
// since its last successful apply (a patch: bgp.Desired.Changed), so that
// neither copies nor compares the rest.

// exportIndex is what the node exports over BGP, kept VIP by VIP.
type exportIndex struct {
	// byVIP are each VIP's exports, as last set.
	byVIP map[netip.Addr][]vipExport
	// sources are the VIPs behind each export (several when their
	// advertisements aggregate into one covering prefix), with the
	// attributes each asks for.
	sources map[bgp.Export]map[netip.Addr]bgp.Attributes
	// exports is what is exported: each export with the attributes of
	// its lowest VIP (aggregated VIPs may ask for different ones).
	exports map[bgp.Export]bgp.Attributes
	// peers counts the entries of exports to each peer (see patch).
	peers map[netip.Addr]int
	// errs are the VIPs whose advertisements cannot be exported.
	errs map[netip.Addr]error
	// gen counts changes; changed are the prefixes whose exports changed
	// since the BGP side last applied them, with the gen of their latest
	// change.
	gen     uint64
	changed map[netip.Prefix]uint64
}

// vipExport is one export of a VIP.
type vipExport struct {
	e     bgp.Export
	attrs bgp.Attributes
}

func (x vipExport) equal(y vipExport) bool { return x.e == y.e && x.attrs.Equal(y.attrs) }

func newExportIndex() *exportIndex {
	return &exportIndex{
		byVIP: map[netip.Addr][]vipExport{}, sources: map[bgp.Export]map[netip.Addr]bgp.Attributes{},
		exports: map[bgp.Export]bgp.Attributes{}, peers: map[netip.Addr]int{},
		errs: map[netip.Addr]error{}, changed: map[netip.Prefix]uint64{},
	}
}

// vipExports are the exports of the VIP addr advertised as advs.
func vipExports(addr netip.Addr, advs []*speakerv1.BGPAdvertisement) ([]vipExport, error) {
	var out []vipExport
	for _, adv := range advs {
		peer, err := netip.ParseAddr(adv.GetPeer())
		if err != nil {
			return nil, fmt.Errorf("VIP %s: peer %q: %w", addr, adv.GetPeer(), err)
		}
		bits := addr.BitLen()
		if l := int(adv.GetPrefixLength()); l > 0 {
			if l > bits {
				return nil, fmt.Errorf("VIP %s: prefix length %d is longer than the address", addr, l)
			}
			bits = l
		}
		prefix, _ := addr.Prefix(bits)
		attrs := bgp.Attributes{
			Communities:      slices.Clone(adv.GetCommunities()),
			LargeCommunities: slices.Clone(adv.GetLargeCommunities()),
		}
		if adv.LocalPref != nil {
			lp := adv.GetLocalPref()
			attrs.LocalPref = &lp
		}
		if adv.Med != nil {
			med := adv.GetMed()
			attrs.MED = &med
		}
		out = append(out, vipExport{e: bgp.Export{Peer: peer, Prefix: prefix}, attrs: attrs})
	}
	return out, nil
}

// set makes addr's exports those of advs (none when advs is empty or the
// VIP is refused).
func (x *exportIndex) set(addr netip.Addr, advs []*speakerv1.BGPAdvertisement) {
	list, err := vipExports(addr, advs)
	if err != nil {
		x.errs[addr] = err
	} else {
		delete(x.errs, addr)
	}
	old := x.byVIP[addr]
	if slices.EqualFunc(old, list, vipExport.equal) {
		return // the common case: a VIP announced again as it was
	}
	for _, ve := range old {
		delete(x.sources[ve.e], addr)
		x.refresh(ve.e)
	}
	for _, ve := range list {
		srcs := x.sources[ve.e]
		if srcs == nil {
			srcs = map[netip.Addr]bgp.Attributes{}
			x.sources[ve.e] = srcs
		}
		srcs[addr] = ve.attrs
		x.refresh(ve.e)
	}
	if len(list) == 0 {
		delete(x.byVIP, addr)
	} else {
		x.byVIP[addr] = list
	}
}

// remove forgets addr.
func (x *exportIndex) remove(addr netip.Addr) {
	x.set(addr, nil)
	delete(x.errs, addr)
}

// refresh recomputes the export e from its sources.
func (x *exportIndex) refresh(e bgp.Export) {
	srcs := x.sources[e]
	old, had := x.exports[e]
	if len(srcs) == 0 {
		delete(x.sources, e)
		if had {
			delete(x.exports, e)
			if x.peers[e.Peer]--; x.peers[e.Peer] == 0 {
				delete(x.peers, e.Peer)
			}
			x.mark(e.Prefix)
		}
		return
	}
	lowest := netip.Addr{}
	for a := range srcs {
		if !lowest.IsValid() || a.Less(lowest) {
			lowest = a
		}
	}
	if attrs := srcs[lowest]; !had || !old.Equal(attrs) {
		x.exports[e] = attrs
		if !had {
			x.peers[e.Peer]++
		}
		x.mark(e.Prefix)
	}
}

func (x *exportIndex) mark(p netip.Prefix) {
	x.gen++
	x.changed[p] = x.gen
}

// err is why the exports cannot be applied (the lowest failing VIP's),
// nil when they can.
func (x *exportIndex) err() error {
	if len(x.errs) == 0 {
		return nil
	}
	return x.errs[slices.MinFunc(slices.Collect(maps.Keys(x.errs)), netip.Addr.Compare)]
}

// patch is the change of the exports since the BGP side last applied them
// (a bgp.Desired patch): the prefixes changed (empty, not nil, when none
// did) and every current export of them, to any peer the index holds (not
// only the configured ones, so that the BGP side's table stays equal to
// exports). It costs O(changed prefixes × peers); the map is new.
func (x *exportIndex) patch() (exports map[bgp.Export]bgp.Attributes, changed []netip.Prefix) {
	exports = map[bgp.Export]bgp.Attributes{}
	changed = make([]netip.Prefix, 0, len(x.changed))
	for p := range x.changed {
		changed = append(changed, p)
		for peer := range x.peers {
			e := bgp.Export{Peer: peer, Prefix: p}
			if a, ok := x.exports[e]; ok {
				exports[e] = a
			}
		}
	}
	return exports, changed
}

// applied records that the BGP side applied the exports as they were at
// gen: changes after it stay pending.
func (x *exportIndex) applied(gen uint64) {
	maps.DeleteFunc(x.changed, func(_ netip.Prefix, g uint64) bool { return g <= gen })
}
