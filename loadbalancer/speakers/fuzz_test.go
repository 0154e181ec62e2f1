package speakers

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"net/netip"
	"slices"
	"sync"
	"testing"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	"k8s.io/component-base/metrics"
	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// FuzzReports feeds a session sequences of arbitrary speaker reports, on
// streams that open and fail, while the CCM assigns and withdraws VIPs,
// changes the BGP set-up and deletes the node. The input is a header byte
// (bit 0: the leader is ready from the start) and then operations (see
// reportsHarness.step); each report is built field by field from the input
// (see fuzzReader.report), so that most inputs are well-formed reports with
// arbitrary contents: malformed and duplicate VIPs, lists of a thousand,
// versions that go backwards or ahead of what was sent, partial and full
// reports, interfaces that fail, BGP and BFD sessions that flap.
//
// After every step the session's State must be what State's documentation
// and record's say the reports make it (see reportsModel), State must return
// copies, reports of other streams must change nothing, the speaker's
// metrics must gather as /metrics does, OnChange must fire
// exactly when connection, health or the failed VIPs changed, OnBGPChange
// exactly when the BGP sessions changed, and a deleted node's session must close exactly when its speaker
// confirmed it withdrew everything.
func FuzzReports(f *testing.F) {
	for _, seed := range reportSeeds() {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 1024 {
			return
		}
		h := newReportsHarness(t, data)
		defer h.close()
		for !h.over && h.in.more() {
			h.stream()
		}
	})
}

// Operations of a FuzzReports input, the byte before each modulo opCount.
const (
	opReport   = iota // 0-3: a report on the current stream
	opStale    = 4    // a report of another stream (gen), then the report
	opAssign   = 5    // the CCM assigns a VIP: address, flags
	opUnassign = 6    // the CCM withdraws a VIP: address
	opSetBGP   = 7    // the CCM changes the BGP set-up: peers (0: none)
	opRemove   = 8    // the Node is deleted
	opEnd      = 9    // the stream fails: how (see streamEnds)
	opReady    = 10   // the leader has planned (SetReady)
	opRaw      = 11   // a proto-marshalled report: length, bytes
	opCount    = 12
)

// Tables the input picks from by index; the byte 0xff picks a string from
// the input instead.
var (
	// fuzzVIPs are canonical addresses, others that parse, and ones that
	// do not.
	fuzzVIPs = []string{
		"192.0.2.1", "192.0.2.2", "2001:db8::1", "2001:db8::2",
		"2001:DB8::1", "::ffff:192.0.2.1", "fe80::1%eth0", "0.0.0.0", "::",
		"192.0.2.1/32", "192.0.2.01", " 192.0.2.1", "", "not-an-address", "1.2.3", "2001:db8::g",
	}
	fuzzErrors     = []string{"", "interface eth1 is down", "address in use", "no such interface"}
	fuzzInterfaces = []string{"eth0", "eth1", "", "lo"}
	fuzzVersions   = []string{"", "v0.4.0", "v0.5.0-rc.1", "devel"}
	fuzzCaps       = []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing, speakerv1.CapabilityBGP, "teleport", ""}
	fuzzBGPStates  = []string{"Established", "Active", "Idle", "Connect", "OpenSent", "OpenConfirm", ""}
	fuzzBFDStates  = []string{"Up", "Down", "Init", "AdminDown", ""}
	// fuzzPeers are never taken from the input: they label the flap
	// counters, which must stay few in a long fuzzing run.
	fuzzPeers = []string{"192.0.2.254", "2001:db8::fe", "", "not-a-peer"}
	// streamEnds are how a stream fails.
	streamEnds = []error{
		io.EOF,
		speakerv1.StreamError(codes.FailedPrecondition, speakerv1.ReasonFenced, "follows term 9"),
		speakerv1.StreamError(codes.Unavailable, speakerv1.ReasonShuttingDown, "shutting down"),
		speakerv1.StreamError(codes.InvalidArgument, speakerv1.ReasonRefused, "version 3 after 1"),
		errors.New("connection reset by peer"),
	}
)

const fuzzNode = "node-fuzz"

// fuzzReader hands out the input; once it is used up, every byte is 0.
type fuzzReader struct{ data []byte }

func (r *fuzzReader) more() bool { return len(r.data) > 0 }

func (r *fuzzReader) byte() byte {
	if len(r.data) == 0 {
		return 0
	}
	b := r.data[0]
	r.data = r.data[1:]
	return b
}

func (r *fuzzReader) bytes(n int) []byte {
	n = min(n, len(r.data))
	b := r.data[:n]
	r.data = r.data[n:]
	return b
}

func (r *fuzzReader) uint64() uint64 {
	var b [8]byte
	copy(b[:], r.bytes(8))
	return binary.BigEndian.Uint64(b[:])
}

// pick returns an entry of table, or with 0xff a string of the input.
func (r *fuzzReader) pick(table []string) string {
	b := r.byte()
	if b == 0xff {
		return string(r.bytes(int(r.byte() % 32)))
	}
	return table[int(b)%len(table)]
}

// Report flags: the first byte of a report.
const (
	rFull         = 1 << iota // vips, interfaces (and bgp_sessions) are complete
	rVersion                  // version: pick
	rCapabilities             // capabilities: a byte, a bit per fuzzCaps
	rInterfaces               // interfaces: count, then each
	rBGP                      // bgp_sessions: count, then each
	rIgnored                  // ignored_instructions: a byte
	rDelta                    // vips are changes (vips_delta): gone addresses follow, a count then each
)

// report builds a report: flags, applied version (see appliedVersion),
// heartbeat seq, VIPs (count, then each), then the parts flags name.
func (r *fuzzReader) report(m *reportsModel) *speakerv1.Report {
	flags := r.byte()
	rep := &speakerv1.Report{Node: fuzzNode, Full: flags&rFull != 0}
	rep.AppliedVersion = r.appliedVersion(m)
	rep.HeartbeatSeq = uint64(r.byte())
	rep.Vips = r.vips()
	if flags&rVersion != 0 {
		rep.Version = r.pick(fuzzVersions)
	}
	if flags&rCapabilities != 0 {
		bits := r.byte()
		for i, c := range fuzzCaps {
			if bits&(1<<i) != 0 {
				rep.Capabilities = append(rep.Capabilities, c)
			}
		}
		if bits&0x80 != 0 {
			rep.Capabilities = append(rep.Capabilities, rep.Capabilities...) // each twice
		}
	}
	if flags&rInterfaces != 0 {
		for range r.byte() % 6 {
			b := r.byte()
			i := &speakerv1.InterfaceStatus{Default: b&1 != 0, Up: b&2 != 0}
			i.Name = r.pick(fuzzInterfaces)
			i.Error = r.pick(fuzzErrors)
			rep.Interfaces = append(rep.Interfaces, i)
		}
	}
	if flags&rBGP != 0 {
		for range r.byte() % 6 {
			rep.BgpSessions = append(rep.BgpSessions, r.bgpSession())
		}
	}
	if flags&rIgnored != 0 {
		rep.IgnoredInstructions = uint64(r.byte())
	}
	if flags&rDelta != 0 {
		rep.VipsDelta = true
		for range r.byte() % 8 {
			rep.VipsGone = append(rep.VipsGone, r.pick(fuzzVIPs))
		}
	}
	return rep
}

// appliedVersion is the report's applied_version, chosen by a byte among
// the interesting ones: confirming what was sent, lagging, ahead of it,
// behind what the speaker confirmed before, or anything.
func (r *fuzzReader) appliedVersion(m *reportsModel) uint64 {
	switch b := r.byte(); b % 8 {
	case 0:
		return 0
	case 1:
		return m.sent
	case 2:
		return m.sent - 1
	case 3:
		return m.sent + 1
	case 4:
		return m.applied - 1
	case 5:
		return r.uint64()
	case 6:
		return math.MaxUint64
	default:
		return uint64(b >> 3)
	}
}

// vips reads a count byte: below 0x80 up to 15 VIPs follow, each an
// address, a state and an error; from 0x80 one VIP follows, repeated
// (bit 6) or on generated addresses, 16 to 1024 times.
func (r *fuzzReader) vips() []*speakerv1.VIPStatus {
	n := r.byte()
	if n&0x80 == 0 {
		var out []*speakerv1.VIPStatus
		for range n % 16 {
			out = append(out, r.vip())
		}
		return out
	}
	v := r.vip()
	out := make([]*speakerv1.VIPStatus, 0, int(n&0x3f+1)*16)
	for i := range cap(out) {
		c := &speakerv1.VIPStatus{Address: v.GetAddress(), State: v.GetState(), Error: v.GetError()}
		if n&0x40 == 0 {
			a := netip.MustParseAddr("2001:db8::").As16()
			binary.BigEndian.PutUint16(a[14:], uint16(i))
			c.Address = netip.AddrFrom16(a).String()
		}
		out = append(out, c)
	}
	return out
}

func (r *fuzzReader) vip() *speakerv1.VIPStatus {
	v := &speakerv1.VIPStatus{Address: r.pick(fuzzVIPs)}
	switch b := r.byte(); b % 4 {
	case 3:
		v.State = speakerv1.VIPStatus_State(b) // unknown to this CCM
	default:
		v.State = speakerv1.VIPStatus_State(b % 4)
	}
	v.Error = r.pick(fuzzErrors)
	return v
}

func (r *fuzzReader) bgpSession() *speakerv1.BGPSessionStatus {
	s := &speakerv1.BGPSessionStatus{Peer: fuzzPeers[int(r.byte())%len(fuzzPeers)]}
	b := r.byte()
	s.State = r.pick(fuzzBGPStates)
	s.LastError = r.pick(fuzzErrors)
	s.Advertised = uint32(r.byte())
	s.SinceUnixMs = int64(b >> 2)
	if b&1 != 0 {
		s.Bfd = &speakerv1.BFDStatus{State: r.pick(fuzzBFDStates), Flaps: uint64(r.byte())}
	}
	return s
}

// rawReport reads a length byte and that many bytes, and unmarshals them;
// nil when they are not a Report. Peers are replaced by ones of fuzzPeers.
func (r *fuzzReader) rawReport() *speakerv1.Report {
	rep := &speakerv1.Report{}
	if err := proto.Unmarshal(r.bytes(int(r.byte())), rep); err != nil {
		return nil
	}
	for _, s := range rep.GetBgpSessions() {
		if s != nil {
			s.Peer = fuzzPeers[len(s.GetPeer())%len(fuzzPeers)]
		}
	}
	return rep
}

// reportsModel is what a session's State must be, from what its documentation
// and record's say: a report of the current stream connects the speaker,
// raises Applied to its applied_version, sets Version and Capabilities (a
// speaker listing none has LegacyCapabilities), and clears Fenced and
// Stopped; a full report replaces Announcing (its ANNOUNCING VIPs that are
// addresses), Failed (its FAILED VIPs), health (the default interface's, or
// every interface's when none is marked default) and BGPSessions. The first
// report of a stream is Initial; a snapshot sets Sent to 1 and Applied to 0;
// a failed stream disconnects the speaker.
type reportsModel struct {
	connected, reported, healthy bool
	announcing, initial          []netip.Addr
	failed                       map[string]string
	conflicts                    map[string]string // canonical address → claimant (unknownMAC: the reader names none)
	yielded                      []netip.Addr
	applied, sent                uint64
	version                      string
	capabilities                 []string
	bgp                          []*speakerv1.BGPSessionStatus
	fenced, stopped              bool
	peers                        map[string]bool // configured on the speaker: only their sessions count

	changes    int  // OnChange calls so far
	bgpChanges int  // OnBGPChange calls so far
	draining   bool // the Node was deleted while its speaker was connected
	drained    bool // a report confirmed that the draining speaker withdrew everything
}

// record takes in r as the session should; it returns whether OnChange is
// due. dirty says whether the CCM has changes it did not send yet. placed
// are the VIPs placed on the node (desired or not yet sent); nil for the
// first report of a stream, which may name any VIP. A later report's VIPs
// count only when placed, or Initial, or named by the report before.
func (m *reportsModel) record(r *speakerv1.Report, dirty bool, placed map[netip.Addr]bool) bool {
	wasConnected, wasHealthy := m.connected, m.healthy
	m.applied = max(m.applied, r.GetAppliedVersion())
	if r.GetVersion() != "" || len(r.GetCapabilities()) > 0 {
		m.version = clip(r.GetVersion(), maxVersionLen)
	}
	m.capabilities = r.GetCapabilities()
	if len(m.capabilities) == 0 {
		m.capabilities = speakerv1.LegacyCapabilities
	}
	m.capabilities = boundCapabilities(m.capabilities)
	m.fenced, m.stopped = false, false
	changed := false
	if r.GetFull() {
		// Only addresses, each once, keyed canonically; only sessions
		// with configured peers, each once; text clipped.
		known := func(a netip.Addr) bool {
			_, failed := m.failed[a.String()]
			_, conflict := m.conflicts[a.String()]
			return placed == nil || placed[a] || failed || conflict || slices.Contains(m.initial, a) || slices.Contains(m.announcing, a) || slices.Contains(m.yielded, a)
		}
		var announcing, yielded []netip.Addr
		failed, conflicts := map[string]string{}, map[string]string{}
		// A report of changes (not a stream's first) starts from what the
		// speaker reported before, without the addresses it names.
		delta := placed != nil && r.GetVipsDelta()
		named := map[netip.Addr]bool{}
		seen := map[netip.Addr]bool{}
		parse := func(s string) (netip.Addr, bool) {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" || seen[a] {
				return a, false
			}
			seen[a] = true
			return a, known(a)
		}
		for _, v := range r.GetVips() {
			if a, ok := parse(v.GetAddress()); ok {
				named[a] = true
			}
		}
		if delta {
			for _, g := range r.GetVipsGone() {
				if a, ok := parse(g); ok {
					named[a] = true
				}
			}
			for _, a := range m.announcing {
				if !named[a] {
					announcing = append(announcing, a)
				}
			}
			for _, a := range m.yielded {
				if !named[a] {
					yielded = append(yielded, a)
				}
			}
			for k, e := range m.failed {
				if !named[netip.MustParseAddr(k)] {
					failed[k] = e
				}
			}
			for k, e := range m.conflicts {
				if !named[netip.MustParseAddr(k)] {
					conflicts[k] = e
				}
			}
		}
		clear(seen)
		for _, v := range r.GetVips() {
			a, err := netip.ParseAddr(v.GetAddress())
			if err != nil || a.Zone() != "" || seen[a] {
				continue
			}
			seen[a] = true
			if !named[a] {
				continue
			}
			switch v.GetState() {
			case speakerv1.VIPStatus_ANNOUNCING:
				announcing = append(announcing, a)
			case speakerv1.VIPStatus_FAILED:
				failed[a.String()] = clip(v.GetError(), maxTextLen)
			case speakerv1.VIPStatus_CONFLICT:
				conflicts[a.String()] = unknownMAC // the reader names no claimant
			case speakerv1.VIPStatus_YIELDED:
				yielded = append(yielded, a)
			}
		}
		slices.SortFunc(announcing, netip.Addr.Compare)
		m.announcing = announcing
		slices.SortFunc(yielded, netip.Addr.Compare)
		changed = !maps.Equal(failed, m.failed) || !maps.Equal(conflicts, m.conflicts) || !slices.Equal(yielded, m.yielded)
		m.conflicts, m.yielded = conflicts, yielded
		m.failed = failed
		m.healthy = true
		hasDefault := slices.ContainsFunc(r.GetInterfaces(), (*speakerv1.InterfaceStatus).GetDefault)
		for _, i := range r.GetInterfaces() {
			if (i.GetDefault() || !hasDefault) && i.GetError() != "" {
				m.healthy = false
			}
		}
		var sessions []*speakerv1.BGPSessionStatus
		for _, s := range r.GetBgpSessions() {
			if m.peers[s.GetPeer()] && !slices.ContainsFunc(sessions, func(o *speakerv1.BGPSessionStatus) bool { return o.GetPeer() == s.GetPeer() }) {
				sessions = append(sessions, clipSession(s))
			}
		}
		if !slices.EqualFunc(sessions, m.bgp, protoEqual) {
			m.bgp = sessions
			m.bgpChanges++
		}
	}
	m.connected, m.reported = true, true
	if m.draining && m.applied >= m.sent && !dirty && len(m.announcing) == 0 {
		m.drained = true
	}
	return !wasConnected || wasHealthy != m.healthy || changed
}

func protoEqual(a, b *speakerv1.BGPSessionStatus) bool { return proto.Equal(a, b) }

// disconnect is a failed stream; it returns whether OnChange is due.
func (m *reportsModel) disconnect() bool {
	was := m.connected
	m.connected, m.healthy = false, false
	return was
}

// state is the State the model says, but for Since and LastReport.
func (m *reportsModel) state() State {
	return State{
		Connected: m.connected, Healthy: m.healthy, Announcing: NewAddrSet(m.announcing), Initial: m.initial,
		Failed: m.failed, Applied: m.applied, Sent: m.sent, Reported: m.reported,
		Version: m.version, Capabilities: m.capabilities, Fenced: m.fenced, Stopped: m.stopped, BGPSessions: m.bgp,
	}
}

// sameState compares what the model knows of a State (not Problem's text,
// Since and LastReport); it is cheap, unlike cmp.Diff.
func sameState(want, got State) bool {
	return want.Connected == got.Connected && want.Healthy == got.Healthy &&
		slices.Equal(want.Announcing.Slice(), got.Announcing.Slice()) && slices.Equal(want.Initial, got.Initial) &&
		maps.Equal(want.Failed, got.Failed) && want.Applied == got.Applied && want.Sent == got.Sent &&
		want.Reported == got.Reported && want.Version == got.Version &&
		slices.Equal(want.Capabilities, got.Capabilities) && want.Fenced == got.Fenced && want.Stopped == got.Stopped &&
		slices.EqualFunc(want.BGPSessions, got.BGPSessions, protoEqual)
}

var stateDiffOpts = []cmp.Option{
	protocmp.Transform(),
	cmp.Comparer(func(a, b netip.Addr) bool { return a == b }),
	cmp.Transformer("Slice", AddrSet.Slice),
	cmpopts.EquateEmpty(),
	cmpopts.IgnoreFields(State{}, "Problem", "Since", "LastReport"),
}

// fuzzMetrics gathers the current harness's Manager's metrics as /metrics
// does, from a registry of their own (one per fuzzing process: inputs run
// one at a time).
var fuzzMetrics struct {
	once sync.Once
	reg  metrics.KubeRegistry
	c    managerCollector
}

// fuzzStream is the CCM's end of a Sync stream: Recv is the harness.
type fuzzStream struct {
	grpc.ClientStream
	recv func() (*speakerv1.Report, error)
	sent int
}

func (s *fuzzStream) Send(*speakerv1.Instruction) error { s.sent++; return nil }

func (s *fuzzStream) Recv() (*speakerv1.Report, error) { return s.recv() }

// reportsHarness runs one FuzzReports input through a session, as
// session.stream and session.sendLoop do, minus the network.
type reportsHarness struct {
	t    *testing.T
	in   *fuzzReader
	m    *Manager
	s    *session
	stop context.CancelFunc

	want       reportsModel
	changes    int                 // OnChange calls seen
	bgpChanges int                 // OnBGPChange calls seen
	sending    bool                // the snapshot went out: CCM changes are sent at once
	removed    bool                // RemoveNode was called
	over       bool                // the session ended
	floor      uint64              // Applied at the last check: it must not go back on a stream
	reports    int                 // reports taken in, for messages
	awaiting   []*speakerv1.Report // reports that arrived before the leader was ready
	last       *speakerv1.Report   // the last report, for messages
}

func newReportsHarness(t *testing.T, data []byte) *reportsHarness {
	in := &fuzzReader{data: data}
	ctx, stop := context.WithCancel(klog.NewContext(context.Background(), logr.Discard()))
	h := &reportsHarness{t: t, in: in, stop: stop}
	h.m = New(ctx, Options{})
	fuzzMetrics.once.Do(func() {
		fuzzMetrics.reg = metrics.NewKubeRegistry()
		fuzzMetrics.reg.CustomMustRegister(&fuzzMetrics.c)
	})
	fuzzMetrics.c.m = h.m
	h.m.OnChange(func(node string) {
		if node != fuzzNode {
			t.Errorf("OnChange(%q), want %q", node, fuzzNode)
		}
		h.changes++
	})
	h.m.OnBGPChange(func(string) { h.bgpChanges++ })
	if in.byte()&1 != 0 {
		h.m.SetReady()
	}
	h.s = newTestSession(h.m, fuzzNode)
	return h
}

// close lets the goroutine of RemoveNode end.
func (h *reportsHarness) close() {
	h.m.mu.Lock()
	h.s.closeDrained()
	h.m.mu.Unlock()
	h.stop()
}

// stream runs one stream of the session: the first report, waiting for the
// leader, the snapshot, then reports and the CCM's changes until the
// stream fails; then the session is disconnected.
func (h *reportsHarness) stream() {
	gen, addr := h.s.begin()
	ctx := context.Background()
	wd := newWatchdog(h.m.opts.Heartbeat, h.m.opts.Misses, h.m.isReady)
	st := &fuzzStream{}
	var firstChange bool
	st.recv = func() (*speakerv1.Report, error) {
		if !h.in.more() {
			return nil, io.EOF
		}
		r := h.in.report(&h.want)
		firstChange = h.deliverFirst(r)
		return r, nil
	}
	var changed bool
	first, err := st.Recv()
	if err == nil {
		changed = h.s.takeFirstReport(gen, first)
		if changed != firstChange {
			h.t.Fatalf("first report %v: takeFirstReport says changed %v, want %v", h.last, changed, firstChange)
		}
		h.want.initial = h.want.announcing
		h.check()
		err = h.awaitReady()
	}
	if err == nil {
		if err := h.s.sendSnapshot(ctx, st, addr, h.s.m.Heartbeat()); err != nil {
			h.t.Fatalf("sendSnapshot: %v", err)
		}
		h.want.sent, h.want.applied, h.floor, h.sending = 1, 0, 0, true
		if changed { // as session.stream does
			h.s.m.changed(h.s.node)
			h.want.changes++
		}
		h.check()
		st.recv = h.next
		errs := make(chan error, 1)
		h.s.receive(ctx, st, gen, wd, nil, errs, &renewal{tokens: make(chan string, 1)})
		recvErr := <-errs
		reason := speakerv1.StreamErrorReason(recvErr)
		err = h.s.streamError(addr, recvErr)
		h.want.fenced, h.want.stopped = reason == speakerv1.ReasonFenced, reason == speakerv1.ReasonShuttingDown
	}
	h.sending = false
	h.s.end()
	if h.s.setDown(err) { // as session.run does
		h.s.m.changed(h.s.node)
	}
	if h.want.disconnect() {
		h.want.changes++
	}
	h.awaiting = nil
	h.check()
}

// awaitReady runs steps until the leader is ready; reports that arrive
// meanwhile wait, as they do in the stream, until the snapshot went out.
func (h *reportsHarness) awaitReady() error {
	for !h.m.isReady() {
		r, err := h.step()
		if errors.Is(err, errReady) {
			continue
		}
		if err != nil {
			return err
		}
		h.awaiting = append(h.awaiting, r)
	}
	return nil
}

// next is the stream's Recv once the snapshot went out: it checks what the
// last report did, then runs steps up to the next report.
func (h *reportsHarness) next() (*speakerv1.Report, error) {
	h.check()
	if len(h.awaiting) > 0 {
		r := h.awaiting[0]
		h.awaiting = h.awaiting[1:]
		h.want.changes += b2i(h.deliver(r))
		return r, nil
	}
	r, err := h.step()
	if err != nil {
		return nil, err
	}
	h.want.changes += b2i(h.deliver(r))
	return r, nil
}

// deliver updates the model for r, which the session records next; it
// returns whether OnChange is due.
func (h *reportsHarness) deliver(r *speakerv1.Report) bool {
	h.m.mu.Lock()
	dirty := len(h.s.dirty) > 0
	placed := map[netip.Addr]bool{}
	for _, a := range slices.Concat(slices.Collect(maps.Keys(h.s.desired)), slices.Collect(maps.Keys(h.s.dirty))) {
		if addr, err := netip.ParseAddr(a); err == nil {
			placed[addr] = true
		}
	}
	h.m.mu.Unlock()
	h.reports++
	h.last = r
	return h.want.record(r, dirty, placed)
}

// deliverFirst is deliver for the first report of a stream: any VIP
// counts (the harness's Manager has no Options.Allocated).
func (h *reportsHarness) deliverFirst(r *speakerv1.Report) bool {
	h.m.mu.Lock()
	dirty := len(h.s.dirty) > 0
	h.m.mu.Unlock()
	h.reports++
	h.last = r
	return h.want.record(r, dirty, nil)
}

// step runs operations until one is a report, which it returns, or the
// stream fails.
func (h *reportsHarness) step() (*speakerv1.Report, error) {
	for {
		if h.over || !h.in.more() {
			return nil, io.EOF
		}
		switch op := h.in.byte() % opCount; op {
		case opStale:
			h.stale(h.in.byte())
		case opAssign:
			a := &speakerv1.Announcement{Address: fuzzVIPs[int(h.in.byte())%4], Service: "default/svc"}
			if b := h.in.byte(); b&1 != 0 {
				a.BgpOnly = true
				a.Bgp = []*speakerv1.BGPAdvertisement{{Peer: fuzzPeers[0], PrefixLength: uint32((b >> 1) % 33)}}
			}
			h.m.Assign(fuzzNode, a)
			h.send()
		case opUnassign:
			h.m.Unassign(fuzzNode, h.in.pick(fuzzVIPs))
			h.send()
		case opSetBGP:
			var cfg *speakerv1.BGPConfig
			if n := h.in.byte() % 4; n > 0 {
				cfg = &speakerv1.BGPConfig{RouterId: "192.0.2.10", Asn: 64512}
				for i := range n {
					cfg.Peers = append(cfg.Peers, &speakerv1.BGPPeer{Name: fmt.Sprint("peer-", i), Address: fuzzPeers[i], PeerAsn: 64513})
				}
			}
			h.m.SetBGP(fuzzNode, cfg)
			if !h.removed && !h.want.draining {
				h.want.peers = map[string]bool{}
				for _, p := range cfg.GetPeers() {
					h.want.peers[p.GetAddress()] = true
				}
			}
			h.send()
		case opRemove:
			if h.removed {
				continue
			}
			h.removed = true
			h.want.draining = h.want.connected && h.m.isReady()
			h.m.RemoveNode(fuzzNode)
			if !h.want.draining {
				h.over = true // the session is cancelled
				return nil, io.EOF
			}
			h.send()
		case opEnd:
			return nil, streamEnds[int(h.in.byte())%len(streamEnds)]
		case opReady:
			h.m.SetReady()
			if !h.sending {
				return nil, errReady
			}
		case opRaw:
			if r := h.in.rawReport(); r != nil {
				return r, nil
			}
		default:
			return h.in.report(&h.want), nil
		}
	}
}

// errReady ends awaitReady's step early; it is never a stream's error.
var errReady = errors.New("ready")

// send is session.sendLoop woken by a change: once the snapshot went out,
// the change goes out at once.
func (h *reportsHarness) send() {
	if !h.sending {
		return
	}
	u, redial := h.s.update()
	if redial {
		h.t.Fatal("update wants a redial; the address never changed")
	}
	if u == nil {
		return
	}
	if u.GetVersion() != h.want.sent+1 {
		h.t.Fatalf("update version %d after %d", u.GetVersion(), h.want.sent)
	}
	h.want.sent = u.GetVersion()
}

// stale has the session record a report of another stream (the one
// before, one before that, one not begun yet, or the first one, as b says):
// it must change nothing.
func (h *reportsHarness) stale(b byte) {
	r := h.in.report(&h.want)
	h.m.mu.Lock()
	gen := []uint64{h.s.gen - 1, h.s.gen - 2, h.s.gen + 1, 1}[b%4]
	if gen == h.s.gen {
		gen--
	}
	before := h.s.state
	h.m.mu.Unlock()
	if h.s.record(gen, r) {
		h.t.Fatalf("a report of another stream (gen %d) is a change: %v", gen, r)
	}
	h.m.mu.Lock()
	after := h.s.state
	h.m.mu.Unlock()
	if !sameState(before, after) || before.Problem != after.Problem || !before.LastReport.Equal(after.LastReport) || !before.Since.Equal(after.Since) {
		h.t.Fatalf("a report of another stream (gen %d) changed State (-before +after):\n%s", gen, cmp.Diff(before, after, stateDiffOpts[:4]...))
	}
}

// check compares the session's State with the model, and checks that
// State returns copies.
func (h *reportsHarness) check() {
	h.t.Helper()
	h.m.mu.Lock()
	raw := h.s.state
	h.m.mu.Unlock()
	h.checkState("the session's state", raw)
	if !h.removed {
		got, ok := h.m.State(fuzzNode)
		if !ok {
			h.t.Fatal("State: no session")
		}
		h.checkState("State", got)
		// Whatever a caller does to what State returned stays its own
		// (Announcing cannot be changed: its list is a copy).
		announcing := got.Announcing.Slice()
		for i := range announcing {
			announcing[i] = netip.MustParseAddr("198.51.100.1")
		}
		for i := range got.Initial {
			got.Initial[i] = netip.MustParseAddr("198.51.100.2")
		}
		if got.Failed != nil {
			got.Failed["198.51.100.3"] = "mutated"
		}
		for i := range got.Capabilities {
			got.Capabilities[i] = "mutated"
		}
		for i := range got.BGPSessions {
			got.BGPSessions[i] = &speakerv1.BGPSessionStatus{Peer: "mutated"}
		}
		again, _ := h.m.State(fuzzNode)
		h.checkState("State after changing what State returned before", again)
	}
	// What the speaker reported must not break /metrics. Gathering is
	// dear: while the stream runs, only the BGP sessions' series vary.
	if len(raw.BGPSessions) > 0 || !h.sending {
		if _, err := fuzzMetrics.reg.Gather(); err != nil {
			h.t.Fatalf("after report %d (%v): the speaker's metrics do not gather, /metrics would fail: %v", h.reports, h.last, err)
		}
	}
	if h.changes != h.want.changes {
		h.t.Fatalf("after report %d (%v): %d OnChange calls, want %d", h.reports, h.last, h.changes, h.want.changes)
	}
	if h.bgpChanges != h.want.bgpChanges {
		h.t.Fatalf("after report %d (%v): %d OnBGPChange calls, want %d", h.reports, h.last, h.bgpChanges, h.want.bgpChanges)
	}
	select {
	case <-h.s.drained:
		if !h.want.drained {
			h.t.Fatalf("after report %d (%v): the deleted node's session closed before its speaker confirmed the withdrawals", h.reports, h.last)
		}
		h.over = true
	default:
		if h.want.drained {
			h.t.Fatalf("after report %d (%v): the speaker confirmed every withdrawal, but the deleted node's session did not close", h.reports, h.last)
		}
	}
}

func (h *reportsHarness) checkState(what string, got State) {
	h.t.Helper()
	want := h.want.state()
	if !sameState(want, got) {
		h.t.Fatalf("after report %d (%v): %s (-want +got):\n%s", h.reports, h.last, what, cmp.Diff(want, got, stateDiffOpts...))
	}
	for a := range got.Announcing.All() {
		if !a.IsValid() {
			h.t.Fatalf("after report %d: %s: Announcing holds an invalid address: %v", h.reports, what, got.Announcing.Slice())
		}
	}
	if err := got.Announcing.check(); err != nil {
		h.t.Fatalf("after report %d (%v): %s: Announcing: %v", h.reports, h.last, what, err)
	}
	if (got.Problem == "") != got.Healthy || (got.Healthy && !got.Connected) {
		h.t.Fatalf("after report %d (%v): %s: Connected %v, Healthy %v, Problem %q: Problem must explain exactly !Connected or !Healthy",
			h.reports, h.last, what, got.Connected, got.Healthy, got.Problem)
	}
	if h.sending && got.Applied < h.floor {
		h.t.Fatalf("after report %d (%v): %s: Applied went back from %d to %d on one stream", h.reports, h.last, what, h.floor, got.Applied)
	}
	h.floor = got.Applied
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// seedReport is a report as FuzzReports inputs spell it (see
// fuzzReader.report); its fields are indexes into the tables above.
type seedReport struct {
	flags   byte // rFull, rVersion, …: which parts follow
	applied byte // see appliedVersion
	vips    []seedVIP
	version byte // fuzzVersions
	caps    byte // a bit per fuzzCaps
	ifaces  []seedIface
	bgp     []seedBGP
	ignored byte
	gone    []byte // fuzzVIPs, with rDelta
}

type seedVIP struct{ addr, state, err byte }

type seedIface struct{ flags, name, err byte } // flags: 1 default, 2 up

type seedBGP struct{ peer, flags, state, err, advertised, bfdState, bfdFlaps byte } // flags: 1 BFD

func (r seedReport) encode() []byte {
	b := []byte{r.flags, r.applied, 0, byte(len(r.vips))}
	for _, v := range r.vips {
		b = append(b, v.addr, v.state, v.err)
	}
	if r.flags&rVersion != 0 {
		b = append(b, r.version)
	}
	if r.flags&rCapabilities != 0 {
		b = append(b, r.caps)
	}
	if r.flags&rInterfaces != 0 {
		b = append(b, byte(len(r.ifaces)))
		for _, i := range r.ifaces {
			b = append(b, i.flags, i.name, i.err)
		}
	}
	if r.flags&rBGP != 0 {
		b = append(b, byte(len(r.bgp)))
		for _, s := range r.bgp {
			b = append(b, s.peer, s.flags, s.state, s.err, s.advertised)
			if s.flags&1 != 0 {
				b = append(b, s.bfdState, s.bfdFlaps)
			}
		}
	}
	if r.flags&rIgnored != 0 {
		b = append(b, r.ignored)
	}
	if r.flags&rDelta != 0 {
		b = append(append(b, byte(len(r.gone))), r.gone...)
	}
	return b
}

// Seed shorthands: applied versions, VIP states and well-formed reports.
const (
	appliedNone, appliedSent, appliedLagging, appliedAhead, appliedBack = 0, 1, 2, 3, 4
	vipAnnouncing, vipFailed                                            = byte(speakerv1.VIPStatus_ANNOUNCING), byte(speakerv1.VIPStatus_FAILED)
	speakerFlags                                                        = rFull | rVersion | rCapabilities | rInterfaces
	allCaps                                                             = 0b111 // layer2, fencing, bgp
)

// full is a full report of a current speaker with a healthy eth0 and
// the given VIPs (indexes of fuzzVIPs) announced.
func full(applied byte, vips ...byte) seedReport {
	r := seedReport{flags: speakerFlags, applied: applied, version: 1, caps: allCaps, ifaces: []seedIface{{flags: 3}}}
	for _, v := range vips {
		r.vips = append(r.vips, seedVIP{addr: v, state: vipAnnouncing})
	}
	return r
}

// changes is a full report of VIP changes (vips_delta): vips, and the
// addresses gone (indexes of fuzzVIPs).
func changes(applied byte, gone []byte, vips ...seedVIP) seedReport {
	r := full(applied)
	r.flags |= rDelta
	r.vips, r.gone = vips, gone
	return r
}

// heartbeat is the answer to a heartbeat: not full.
func heartbeat(applied byte) seedReport {
	return seedReport{flags: rVersion | rCapabilities, applied: applied, version: 1, caps: allCaps}
}

// seedInput joins a header (bit 0: ready) and parts: encoded reports and
// operations.
func seedInput(header byte, parts ...any) []byte {
	b := []byte{header}
	for _, p := range parts {
		switch p := p.(type) {
		case seedReport:
			b = append(b, p.encode()...)
		case byte:
			b = append(b, p)
		case int:
			b = append(b, byte(p))
		case []byte:
			b = append(b, p...)
		case string: // as pick reads it after 0xff
			b = append(append(b, byte(len(p))), p...)
		default:
			panic(fmt.Sprintf("seedInput: %T", p))
		}
	}
	return b
}

// reportSeeds are realistic sessions, and a few unusual ones.
func reportSeeds() [][]byte {
	const ready = 1
	raw, err := proto.Marshal(&speakerv1.Report{
		Node: fuzzNode, AppliedVersion: 1, Full: true, Version: "v0.4.0", Capabilities: []string{"layer2", "fencing", "bgp"},
		Vips:        []*speakerv1.VIPStatus{{Address: "192.0.2.1", State: speakerv1.VIPStatus_ANNOUNCING, Interfaces: []string{"eth0"}}},
		Interfaces:  []*speakerv1.InterfaceStatus{{Name: "eth0", Up: true, Default: true, Addresses: []string{"192.0.2.10/24"}}},
		BgpSessions: []*speakerv1.BGPSessionStatus{{Peer: "192.0.2.254", State: "Established", Advertised: 1, Bfd: &speakerv1.BFDStatus{State: "Up"}}},
	})
	if err != nil {
		panic(err)
	}
	bgpUp := seedBGP{peer: 0, flags: 1, state: 0, advertised: 1, bfdState: 0}
	bgpDown := seedBGP{peer: 0, flags: 1, state: 1, err: 1, bfdState: 1, bfdFlaps: 1}
	withBGP := func(r seedReport, s ...seedBGP) seedReport { r.flags |= rBGP; r.bgp = s; return r }
	return [][]byte{
		// A speaker reports its VIPs as changes: one is added, one fails,
		// one is gone; an address both named and gone counts once; a
		// stream's first report is complete though it says changes.
		seedInput(ready, full(appliedNone, 0, 1),
			opAssign, 2, 0, opReport, changes(appliedSent, nil, seedVIP{addr: 2, state: vipAnnouncing}),
			opReport, changes(appliedSent, nil, seedVIP{addr: 0, state: vipFailed, err: 1}),
			opUnassign, 1, opReport, changes(appliedSent, []byte{1}),
			opReport, changes(appliedSent, []byte{0}, seedVIP{addr: 0, state: vipAnnouncing}),
			opEnd, 0, changes(appliedNone, []byte{2}, seedVIP{addr: 3, state: vipAnnouncing})),
		// A speaker with one VIP is told to announce another, confirms,
		// answers heartbeats, and is told to withdraw the first.
		seedInput(ready, full(appliedNone, 0),
			opReport, full(appliedSent, 0),
			opAssign, 1, 0, opReport, full(appliedSent, 0, 1),
			opReport, heartbeat(appliedSent),
			opUnassign, 0, opReport, heartbeat(appliedLagging), opReport, full(appliedSent, 1)),
		// Reports before the leader is ready wait for the snapshot.
		seedInput(0, full(appliedNone, 0, 2), opReport, heartbeat(appliedNone), opAssign, 3, 0, opReady,
			opReport, full(appliedSent, 3), opReport, heartbeat(appliedSent)),
		// A VIP fails, the default interface breaks, and both recover.
		seedInput(ready, full(appliedNone),
			opAssign, 1, 0,
			opReport, seedReport{flags: speakerFlags, applied: appliedSent, version: 1, caps: allCaps,
				vips:   []seedVIP{{addr: 1, state: vipFailed, err: 2}},
				ifaces: []seedIface{{flags: 1, name: 0, err: 1}, {flags: 2, name: 1}}},
			opReport, full(appliedSent, 1)),
		// A speaker whose default interface is broken connects, and
		// answers a heartbeat before its first full report.
		seedInput(ready, seedReport{flags: speakerFlags, version: 2, caps: 1, ifaces: []seedIface{{flags: 1, err: 3}}},
			opEnd, 4, heartbeat(appliedNone), opReport, full(appliedSent)),
		// A BGP session with BFD goes down and comes back.
		seedInput(ready, withBGP(full(appliedNone), bgpUp),
			opSetBGP, 1, opReport, withBGP(full(appliedSent), bgpUp),
			opReport, withBGP(full(appliedSent), bgpDown),
			opReport, withBGP(full(appliedSent), bgpUp)),
		// The speaker follows a newer leader; reconnected, it shuts down.
		seedInput(ready, full(appliedNone, 0), opReport, full(appliedSent, 0), opEnd, 1,
			full(appliedNone, 0), opReport, full(appliedSent, 0), opEnd, 2,
			full(appliedNone)),
		// The Node is deleted: its speaker withdraws everything and
		// confirms.
		seedInput(ready, full(appliedNone, 0, 2), opReport, full(appliedSent, 0, 2),
			opRemove, opReport, heartbeat(appliedLagging), opReport, heartbeat(appliedSent), opReport, full(appliedSent)),
		// Versions that go ahead of what was sent, and backwards.
		seedInput(ready, full(appliedAhead, 0), opReport, full(appliedAhead, 0), opReport, heartbeat(appliedBack),
			opReport, heartbeat(6), opReport, heartbeat(appliedBack)),
		// Addresses no speaker should send: not canonical, mapped, zoned,
		// unspecified, prefixes, with leading zeros or spaces, empty,
		// garbage, in unknown states; and a string of the input.
		seedInput(ready, full(appliedNone, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
			opReport, seedReport{flags: rFull, vips: []seedVIP{{addr: 0, state: 7}, {addr: 0, state: vipAnnouncing}, {addr: 0, state: vipFailed, err: 1}, {addr: 0, state: vipFailed, err: 2}}},
			opReport, []byte{rFull, appliedNone, 0, 1, 0xff}, "1.2.3.4", vipAnnouncing, 0),
		// A thousand copies of one VIP, then a thousand VIPs.
		seedInput(ready, []byte{rFull, appliedNone, 0, 0xff, 0, vipAnnouncing, 0},
			opReport, []byte{rFull, appliedSent, 0, 0xbf, 0, vipAnnouncing, 0}, opReport, full(appliedSent)),
		// Reports of other streams, and a marshalled report.
		seedInput(ready, full(appliedNone, 0), opEnd, 0, full(appliedNone, 1),
			opStale, 0, full(appliedSent, 2), opStale, 2, full(appliedSent, 3),
			opRaw, len(raw), raw),
	}
}
