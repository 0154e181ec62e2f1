package speakers

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// A speaker's report is untrusted input: a node whose key was stolen
// sends what it likes. Everything the CCM keeps of a report is checked
// against what the CCM itself configured and bounded, here, outside the
// Manager's lock (see summarize); only the small result (a summary) is
// applied under it.

// Bounds of what the CCM keeps of a report's text.
const (
	// maxTextLen bounds each string kept (errors, states, interface
	// names); longer ones are cut, on a rune boundary, with "…".
	maxTextLen = 256
	// maxVersionLen bounds the version the speaker gives (a metric label).
	maxVersionLen = 64
	// maxCapabilities bounds the capabilities kept; longer ones than
	// maxVersionLen are dropped.
	maxCapabilities = 16
	// maxMACs bounds the hardware addresses kept of a speaker's
	// interfaces (State.MACs).
	maxMACs = 64
)

// ignoreReason says why part of a report was not taken in (the reason
// label of ironlb_speaker_report_items_ignored_total).
type ignoreReason string

const (
	// ignoredRateLimited counts reports merged into a later one because
	// the speaker reported faster than reportRate.
	ignoredRateLimited ignoreReason = "RateLimited"
	// ignoredUnknownVIP counts VIP entries that are no address, repeat
	// one, or name an address this CCM did not allocate (in a stream's
	// first report) or did not place on the node (in later ones).
	ignoredUnknownVIP ignoreReason = "UnknownVIP"
	// ignoredUnknownPeer counts BGP session entries for peers this CCM
	// did not configure on the speaker, or repeating one.
	ignoredUnknownPeer ignoreReason = "UnknownPeer"
)

var ignoreReasons = []ignoreReason{ignoredRateLimited, ignoredUnknownVIP, ignoredUnknownPeer}

// summary is what the CCM keeps of one report: checked and bounded by
// what the CCM configured (see summarize).
type summary struct {
	applied      uint64
	version      string
	versionSet   bool // the report named a version or capabilities
	capabilities []string
	ignored      uint64 // ignored_instructions
	full         bool
	// delta is true for a full report whose VIPs are changes (see
	// Report.vips_delta): touched are the addresses it names (sorted),
	// gone those among them the speaker no longer holds; the lists below
	// then hold the named VIPs only (see session.expandLocked).
	delta   bool
	touched []netip.Addr
	gone    []netip.Addr

	// Of a full report only (sorted where they are lists):
	announcing []netip.Addr // the ANNOUNCING VIPs it names (of a report of changes: among touched)
	// announced is the set of VIPs announced, of a complete report:
	// announcing's, or what the speaker reported before patched with
	// announcing (see session.expandLocked).
	announced AddrSet
	failed    map[string]string // canonical address → clipped error
	healthy   bool
	problem   string
	bgp       []*speakerv1.BGPSessionStatus // clipped copies, configured peers only
	dataPlane *speakerv1.DataPlane          // clipped copy; nil: not reported
	conflicts map[string]string             // canonical address → claiming MAC (unknownMAC when it named none usable)
	claimed   map[string]string             // canonical address → claiming MAC
	yielded   []netip.Addr
	macs      []string // canonical, sorted, at most maxMACs

	dropped map[ignoreReason]int
}

// acceptor decides which parts of a report the CCM takes in: VIPs it
// allocated or placed on this node, peers it configured on this speaker.
type acceptor struct {
	// vips reports, for each of addrs, whether it is a VIP the report
	// may name; nil: any address. It is called once per report, with
	// every address the report names (once each).
	vips func(addrs []netip.Addr) []bool
	// peers are the addresses of the BGP peers configured on the
	// speaker, as sent to it.
	peers map[string]bool
	// deltas is whether a report's vips_delta counts: not in a stream's
	// first report, which is complete whatever it says.
	deltas bool
}

// summarize checks and bounds r. It takes no lock but the acceptor's.
func summarize(r *speakerv1.Report, acc acceptor) *summary {
	sum := &summary{
		applied: r.GetAppliedVersion(), ignored: r.GetIgnoredInstructions(), full: r.GetFull(),
		version: clip(r.GetVersion(), maxVersionLen), versionSet: r.GetVersion() != "" || len(r.GetCapabilities()) > 0,
		capabilities: boundCapabilities(speakerv1.CapabilitiesOf(r)),
		dropped:      map[ignoreReason]int{},
	}
	if !sum.full {
		return sum
	}
	sum.delta = acc.deltas && r.GetVipsDelta()
	sum.failed = map[string]string{}
	sum.conflicts, sum.claimed = map[string]string{}, map[string]string{}
	// The addresses first, each once, so that the acceptor is asked
	// once for all of them.
	seen := map[netip.Addr]bool{}
	var (
		addrs   []netip.Addr
		entries []*speakerv1.VIPStatus // nil for a gone address
	)
	add := func(s string, v *speakerv1.VIPStatus) {
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" || seen[a] {
			sum.dropped[ignoredUnknownVIP]++
			return
		}
		seen[a] = true
		addrs, entries = append(addrs, a), append(entries, v)
	}
	for _, v := range r.GetVips() {
		add(v.GetAddress(), v)
	}
	if sum.delta {
		for _, g := range r.GetVipsGone() {
			add(g, nil)
		}
	}
	var ok []bool
	if acc.vips != nil && len(addrs) > 0 {
		ok = acc.vips(addrs)
	}
	for i, a := range addrs {
		if ok != nil && !ok[i] {
			sum.dropped[ignoredUnknownVIP]++
			continue
		}
		v := entries[i]
		if sum.delta {
			sum.touched = append(sum.touched, a)
		}
		if v == nil {
			sum.gone = append(sum.gone, a)
			continue
		}
		by, byOK := parseMAC(v.GetClaimedBy())
		switch v.GetState() {
		case speakerv1.VIPStatus_ANNOUNCING:
			sum.announcing = append(sum.announcing, a)
		case speakerv1.VIPStatus_FAILED:
			sum.failed[a.String()] = clip(v.GetError(), maxTextLen)
		case speakerv1.VIPStatus_CONFLICT:
			if !byOK {
				by = unknownMAC // still a conflict: the VIP stays put and is reported
			}
			sum.conflicts[a.String()] = by
		case speakerv1.VIPStatus_YIELDED:
			sum.yielded = append(sum.yielded, a)
		}
		if byOK && (v.GetState() == speakerv1.VIPStatus_ANNOUNCING || v.GetState() == speakerv1.VIPStatus_YIELDED) {
			sum.claimed[a.String()] = by
		}
	}
	for _, l := range [][]netip.Addr{sum.announcing, sum.yielded, sum.touched, sum.gone} {
		slices.SortFunc(l, netip.Addr.Compare)
	}
	if !sum.delta {
		sum.announced = NewAddrSet(sum.announcing) // each address once (seen): sorted and free of duplicates
	}
	sum.healthy, sum.problem = health(r)
	sum.macs = interfaceMACs(r.GetInterfaces())
	if d := r.GetDataPlane(); d != nil {
		sum.dataPlane = &speakerv1.DataPlane{Ready: d.GetReady(), Reason: clip(d.GetReason(), maxTextLen), SinceUnixMs: d.GetSinceUnixMs()}
	}
	peers := map[string]bool{}
	for _, s := range r.GetBgpSessions() {
		if !acc.peers[s.GetPeer()] || peers[s.GetPeer()] {
			sum.dropped[ignoredUnknownPeer]++
			continue
		}
		peers[s.GetPeer()] = true
		sum.bgp = append(sum.bgp, clipSession(s))
	}
	return sum
}

// parseMAC parses a hardware address a speaker reported into its
// canonical (lower-case, colon-separated) form; ok is false for anything
// else (the empty string included).
func parseMAC(s string) (string, bool) {
	if s == "" || len(s) > 64 {
		return "", false
	}
	hw, err := net.ParseMAC(s)
	if err != nil {
		return "", false
	}
	return hw.String(), true
}

// interfaceMACs are the distinct, valid hardware addresses of ifaces,
// sorted, at most maxMACs of them.
func interfaceMACs(ifaces []*speakerv1.InterfaceStatus) []string {
	var macs []string
	for _, i := range ifaces {
		if mac, ok := parseMAC(i.GetHardwareAddress()); ok && !slices.Contains(macs, mac) {
			macs = append(macs, mac)
			if len(macs) == maxMACs {
				break
			}
		}
	}
	slices.Sort(macs)
	return macs
}

// boundCapabilities keeps at most maxCapabilities short capabilities.
func boundCapabilities(caps []string) []string {
	out := caps[:0:0]
	for _, c := range caps {
		if len(c) <= maxVersionLen && len(out) < maxCapabilities {
			out = append(out, c)
		}
	}
	return out
}

// clipSession copies s with its text clipped (and without fields this
// CCM does not know, which a copy of the message would keep).
func clipSession(s *speakerv1.BGPSessionStatus) *speakerv1.BGPSessionStatus {
	c := &speakerv1.BGPSessionStatus{
		Peer: s.GetPeer(), State: clip(s.GetState(), maxTextLen), LastError: clip(s.GetLastError(), maxTextLen),
		Advertised: s.GetAdvertised(), SinceUnixMs: s.GetSinceUnixMs(),
	}
	if b := s.GetBfd(); b != nil {
		c.Bfd = &speakerv1.BFDStatus{
			State: clip(b.GetState(), maxTextLen), SinceUnixMs: b.GetSinceUnixMs(), Reason: clip(b.GetReason(), maxTextLen),
			TransmitIntervalMs: b.GetTransmitIntervalMs(), DetectTimeMs: b.GetDetectTimeMs(), Flaps: b.GetFlaps(),
			RemoteState: clip(b.GetRemoteState(), maxTextLen),
		}
	}
	return c
}

// clip cuts s to at most n bytes, on a rune boundary, marking the cut;
// bytes that are not UTF-8 become U+FFFD (a metric label that is not
// UTF-8 fails every scrape).
func clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const mark = "…"
	cut := n - len(mark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// health says whether the speaker can announce: it is healthy while its
// default interface works (older speakers mark none: then every interface
// counts).
func health(r *speakerv1.Report) (bool, string) {
	hasDefault := slices.ContainsFunc(r.GetInterfaces(), (*speakerv1.InterfaceStatus).GetDefault)
	for _, i := range r.GetInterfaces() {
		if i.GetError() != "" && (i.GetDefault() || !hasDefault) {
			return false, fmt.Sprintf("interface %q: %s", clip(i.GetName(), maxTextLen), clip(i.GetError(), maxTextLen))
		}
	}
	return true, ""
}

// merge folds a report that came too soon (pending) into the next one,
// r: what the CCM keeps of the two is what it would keep of both in turn,
// but for log lines and flap counts between them.
func merge(pending, r *speakerv1.Report) *speakerv1.Report {
	if pending == nil {
		return r
	}
	if !r.GetFull() && pending.GetFull() {
		// r's scalar fields over pending's lists.
		pending.AppliedVersion = max(pending.GetAppliedVersion(), r.GetAppliedVersion())
		pending.Version, pending.Capabilities, pending.IgnoredInstructions = r.GetVersion(), r.GetCapabilities(), r.GetIgnoredInstructions()
		return pending
	}
	if r.GetFull() && r.GetVipsDelta() && pending.GetFull() {
		// r's changes over pending's VIPs: a list of changes when
		// pending's were, complete otherwise.
		r.Vips, r.VipsGone = mergeVIPs(pending, r)
		r.VipsDelta = pending.GetVipsDelta()
	}
	r.AppliedVersion = max(pending.GetAppliedVersion(), r.GetAppliedVersion())
	return r
}

// unknownMAC stands for the other host of a CONFLICT reported without a
// valid hardware address.
const unknownMAC = "unknown"
