package speaker

// Polling the BGP side: each maintenance pass (run.go) reads the sessions
// from gobgp, outside a.mu, and keeps them for the reports and /bgp; a
// failed apply is retried first.

import (
	"context"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// pollBGP refreshes the reported sessions (and retries a failed apply);
// it reports whether they changed. The caller holds a.applyMu, not a.mu:
// the calls into the BGP side (Apply, Sessions) run with a.mu released,
// and since every change of what the BGP side is given (the set-up, the
// exports, a.bgpErr) is made under a.applyMu, nothing changes between the
// call and the recording of its result (see bgpapply.go).
func (a *Agent) pollBGP() bool {
	if a.bgp == nil {
		return false
	}
	a.mu.Lock()
	failed := a.bgpErr != nil
	var (
		d    bgpDesired
		derr error
	)
	if failed { // retried; else nothing to build (O(VIPs))
		d, derr = a.desiredBGPLocked()
	}
	a.mu.Unlock()
	if failed {
		berr := a.applyBGP(d, derr)
		a.mu.Lock()
		a.recordBGPLocked(d, berr)
		a.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
	ss, err := a.bgp.Sessions(ctx)
	cancel()
	if err != nil {
		a.log.Error(err, "Cannot read the BGP sessions")
		return false
	}
	out := sessionStatuses(ss) // converted before taking a.mu
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.bgpErr != nil {
		for _, st := range out {
			if st.LastError == "" {
				st.LastError = a.bgpErr.Error()
			}
		}
	}
	if slices.EqualFunc(out, a.bgpSessions, func(x, y *speakerv1.BGPSessionStatus) bool { return proto.Equal(x, y) }) {
		return false
	}
	a.bgpSessions = out
	return true
}

// sessionStatuses is the BGP side's sessions as reported to the CCM,
// sorted by peer.
func sessionStatuses(ss []bgp.Session) []*speakerv1.BGPSessionStatus {
	var out []*speakerv1.BGPSessionStatus
	for _, s := range ss {
		st := &speakerv1.BGPSessionStatus{
			Peer: s.Peer.String(), State: s.State, LastError: s.LastError, Advertised: uint32(s.Advertised),
		}
		if !s.Since.IsZero() {
			st.SinceUnixMs = s.Since.UnixMilli()
		}
		if b := s.BFD; b != nil {
			st.Bfd = &speakerv1.BFDStatus{
				State: b.State, RemoteState: b.RemoteState, Reason: b.Reason, Flaps: b.Flaps,
				TransmitIntervalMs: uint32(b.TransmitInterval / time.Millisecond),
				DetectTimeMs:       uint32(b.DetectTime / time.Millisecond),
			}
			if !b.Since.IsZero() {
				st.Bfd.SinceUnixMs = b.Since.UnixMilli()
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y *speakerv1.BGPSessionStatus) int { return strings.Compare(x.Peer, y.Peer) })
	return out
}
