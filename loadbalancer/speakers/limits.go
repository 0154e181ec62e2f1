package speakers

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// What one speaker's reports may cost the CCM. A legitimate speaker
// reports once per heartbeat (5 a second by default) and once per update,
// each report small unless its VIPs or sessions changed; these bounds are
// far above that, and far below what would hurt the CCM.
const (
	// reportBaseBytes is a report's size without its VIPs and BGP
	// sessions: node, version, capabilities, interfaces and their
	// addresses.
	reportBaseBytes = 64 << 10
	// reportVIPBytes is the most one VIP's entry takes (address, state,
	// interfaces, the speaker's error, which may list --allowed-cidrs).
	reportVIPBytes = 1 << 10
	// reportPeerBytes is the most one BGP session's entry takes.
	reportPeerBytes = 1 << 10
	// reportVIPHeadroom and reportPeerHeadroom are entries allowed beyond
	// twice what is configured when the stream opens, so that VIPs and
	// peers added while it lasts fit: the limit is set once per stream.
	reportVIPHeadroom  = 1024
	reportPeerHeadroom = 64
	// nodeVIPHeadroom and nodePeerHeadroom are the entries a report may
	// have beyond its node's VIPs and peers once its stream's first report
	// was taken in (see nodeReportLimit): the limit follows the node's
	// state, which is placed before an update names it, so little is
	// needed.
	nodeVIPHeadroom  = 16
	nodePeerHeadroom = 16
	// defaultReportVIPs stands for the allocated VIPs when the Manager
	// has no Options.Allocated (tests).
	defaultReportVIPs = 4096

	// reportRate and reportBurst bound the reports taken in per second
	// (summarized and applied under the Manager's lock); reports that
	// come faster are merged into the next one (see merge) and counted.
	reportRate  = 200
	reportBurst = 200
	// reportBytesPerLimit is how many times its size limit a speaker may
	// send per second: reading waits beyond that (the speaker is slowed
	// by flow control), which bounds the CPU spent decoding its reports.
	reportBytesPerLimit = 2

	// logRate and logBurst bound the log lines one speaker's reports
	// cause (VIPs it cannot announce, sessions that went down, entries
	// ignored); lines beyond them are counted in the next one.
	logRate  = rate.Limit(1)
	logBurst = 20
)

// reportLimit is the largest first report of a stream the CCM accepts
// from a speaker configured with vips VIPs (or that many allocated in
// all, which a new leader's speaker may still announce) and peers BGP
// peers: what a legitimate report of twice that state, and the headroom,
// can take. Later reports are held to nodeReportLimit.
func reportLimit(vips, peers int) int {
	return reportBaseBytes + reportVIPBytes*(2*vips+reportVIPHeadroom) + reportPeerBytes*(2*peers+reportPeerHeadroom)
}

// nodeReportLimit is the largest report the CCM accepts from a speaker
// whose node has vips VIPs (placed, Initial or last reported) and peers
// BGP peers, once its stream's first report was taken in: what a
// legitimate report of that state can take, and the headroom.
func nodeReportLimit(vips, peers int) int {
	return reportBaseBytes + reportVIPBytes*(vips+nodeVIPHeadroom) + reportPeerBytes*(peers+nodePeerHeadroom)
}

// errReportTooLarge is why a stream failed on a report larger than the
// speaker's node explains (see nodeLimit).
var errReportTooLarge = errors.New("report larger than its node's VIPs and peers explain")

// reportLimit is the largest report the speaker may send on a new
// stream (see reportLimit): sized from its VIPs, or all allocated VIPs,
// and its peers. Once the stream's first report is taken in, the
// speaker's reports are held to its node's limit (see nodeLimit).
func (s *session) reportLimit() int {
	vips := defaultReportVIPs
	if a := s.m.opts.Allocated; a != nil {
		vips = a.Held()
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return reportLimit(max(vips, len(s.desired)+len(s.dirty)), len(s.bgp.GetPeers()))
}

// nodeLimit is the largest report the speaker may send on stream gen
// now (see nodeReportLimit): sized from its node's VIPs (nodeVIPCount) and peers
// once the stream's first report was taken in; until then, no limit but
// the stream's. It takes m.mu for a moment: the node's VIPs are placed
// before an update names them, so a legitimate report fits.
func (s *session) nodeLimit(gen uint64) int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.taken != gen {
		return math.MaxInt
	}
	return nodeReportLimit(s.nodeVIPCount(), len(s.bgp.GetPeers()))
}

// mergeLimit is how many VIPs reports merged into one (see merge) may
// name: those the node holds, and the headroom.
func (s *session) mergeLimit() int {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.nodeVIPCount() + nodeVIPHeadroom
}

// reportCodec decodes the reports of stream gen as gRPC's proto codec
// does, but refuses, before decoding it, a report larger than the
// speaker's node explains (nodeLimit): what a report may cost the CCM
// once decoded grows with the node's configured state, not the
// cluster's. The stream then fails and is opened again. (gRPC's
// MaxCallRecvMsgSize is set once per stream, for its first report.)
func (s *session) reportCodec(gen uint64) encoding.CodecV2 {
	return &limitCodec{CodecV2: encoding.GetCodecV2(grpcproto.Name), limit: func() int { return s.nodeLimit(gen) }}
}

// limitCodec is a codec whose Unmarshal refuses data over limit.
type limitCodec struct {
	encoding.CodecV2
	limit func() int
}

func (c *limitCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if n, limit := data.Len(), c.limit(); n > limit {
		return fmt.Errorf("%w: %d bytes, over the limit of %d", errReportTooLarge, n, limit)
	}
	return c.CodecV2.Unmarshal(data, v)
}

// reportLimiter paces one stream's reports (nil: no limit).
type reportLimiter struct {
	bytes   *rate.Limiter // bytes read per second
	reports *rate.Limiter // reports taken in per second
	limit   int
}

func newReportLimiter(limit int) *reportLimiter {
	return &reportLimiter{
		bytes:   rate.NewLimiter(rate.Limit(reportBytesPerLimit*limit), 2*limit),
		reports: rate.NewLimiter(reportRate, reportBurst),
		limit:   limit,
	}
}

// read waits, after a report of msg's size was read, until the stream's
// byte budget allows the next read; it says how long it waited.
func (l *reportLimiter) read(ctx context.Context, msg proto.Message) (time.Duration, error) {
	if l == nil {
		return 0, nil
	}
	n := min(proto.Size(msg), l.bytes.Burst())
	start := time.Now()
	if err := l.bytes.WaitN(ctx, n); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// take says whether a report may be taken in now.
func (l *reportLimiter) take() bool {
	return l == nil || l.reports.Allow()
}
