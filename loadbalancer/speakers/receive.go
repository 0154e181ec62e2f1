package speakers

import (
	"context"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// receive records the speaker's reports until the stream fails. lim
// paces them (nil: no limit): a report that comes too soon after others
// is merged into the next one. A report's enrollment token (the answer to
// an Attest) goes to rn before any merging.
func (s *session) receive(ctx context.Context, stream speakerv1.Speaker_SyncClient, gen uint64, wd *watchdog, lim *reportLimiter, errs chan<- error, rn *renewal) {
	var pending *speakerv1.Report
	for {
		r, err := stream.Recv()
		if err != nil {
			errs <- err
			return
		}
		wd.seen()
		s.m.reportsReceived.Add(1)
		reportsReceived.Inc()
		waited, err := lim.read(ctx, r)
		if err != nil {
			errs <- err
			return
		}
		if waited > 0 {
			wd.seen() // the pause is the CCM's, not the speaker's silence
		}
		if e := r.GetEnrollment(); e != nil {
			rn.offerToken(e.GetToken()) // the answer to an Attest
		}
		s.takeDHCPResults(r) // not held back by merging
		merged := merge(pending, r)
		if pending != nil && len(merged.GetVips())+len(merged.GetVipsGone()) > s.mergeLimit() {
			errs <- errMergeTooLarge
			return
		}
		if !lim.take() {
			if pending == nil {
				s.emit([]logLine{{msg: "Speaker reports faster than the CCM takes them in; merging its reports", kv: []any{"reportsPerSecond", reportRate}}})
			}
			pending = merged
			reportItemsIgnored.WithLabelValues(s.node, string(ignoredRateLimited)).Inc()
			continue
		}
		pending = nil
		if s.record(gen, merged) {
			s.m.changed(s.node)
		}
	}
}
