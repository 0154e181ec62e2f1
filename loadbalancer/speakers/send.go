package speakers

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// sendSnapshot sends everything desired now, as version 1 of this stream.
// It names the stream's heartbeat interval.
func (s *session) sendSnapshot(ctx context.Context, stream speakerv1.Speaker_SyncClient, addr string, interval time.Duration) error {
	s.m.mu.Lock()
	snap := &speakerv1.Snapshot{Version: 1, Leader: s.m.opts.Leader, Term: s.m.opts.Term, Bgp: s.bgp, HeartbeatIntervalMs: uint32(interval.Milliseconds()), VipDeltas: true}
	for _, a := range slices.Sorted(maps.Keys(s.desired)) {
		snap.Announcements = append(snap.Announcements, s.desired[a])
	}
	clear(s.dirty)
	s.bgpDirty = false
	s.state.Sent = 1
	s.state.Applied = 0
	s.m.mu.Unlock()
	if err := s.maySend(ctx); err != nil {
		return err
	}
	if err := stream.Send(&speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}}); err != nil {
		return cause(ctx, fmt.Errorf("sending snapshot to %s: %w", addr, err))
	}
	return nil
}

// sendLoop sends heartbeats and updates, and keeps the speaker's identity
// (rn), until the stream fails. It tells wd of every heartbeat written,
// and of a new interval (see repace).
func (s *session) sendLoop(ctx context.Context, stream speakerv1.Speaker_SyncClient, addr string, recvErr <-chan error, rn *renewal, wd *watchdog) error {
	hb := time.NewTicker(wd.interval())
	defer hb.Stop()
	var seq uint64
	// takes: whether the speaker takes Heartbeat.interval_ms (its
	// capabilities, fixed for the stream), asked once.
	takes := s.takesInterval()
	for {
		var (
			in  *speakerv1.Instruction
			err error
		)
		select {
		case <-rn.rotated:
			in = rn.onRotated()
		case <-rn.revoked:
			err = rn.onRevoked()
		case <-rn.due.C:
			in, err = rn.onDue(ctx)
		case token := <-rn.tokens:
			rn.onToken(ctx, token)
		case res := <-rn.results:
			in, err = rn.onResult(res)
		case <-rn.expiry.C:
			err = rn.onExpired()
		case <-ctx.Done():
			return cause(ctx, ctx.Err())
		case err := <-recvErr:
			return cause(ctx, s.streamError(addr, err))
		case <-hb.C:
			seq++
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Heartbeat{Heartbeat: s.repace(seq, takes, hb, wd)}}
		case ex := <-s.dhcpOut:
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Dhcp{Dhcp: ex}}
		case <-s.wake:
			upd, redial := s.update()
			if redial {
				return errors.New("speaker address changed")
			}
			if upd == nil {
				continue
			}
			in = &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: upd}}
		}
		if err != nil {
			return err
		}
		if in == nil {
			continue
		}
		if err := s.maySend(ctx); err != nil {
			return err
		}
		wd.sendBegins()
		err = stream.Send(in)
		wd.sendEnds()
		if err != nil {
			// The speaker may have ended the stream (restarting, shutting
			// down): its reason comes with Recv's error, not Send's.
			select {
			case rerr := <-recvErr:
				return cause(ctx, s.streamError(addr, rerr))
			case <-time.After(s.m.LossLimit()):
			case <-ctx.Done():
			}
			return cause(ctx, fmt.Errorf("sending to %s: %w", addr, err))
		}
		if in.GetHeartbeat() != nil {
			wd.sentHeartbeat()
			s.m.heartbeatsSent.Add(1)
			heartbeatsSent.Inc()
		}
	}
}

// maySend says whether an instruction may go out: nothing does once this
// CCM stopped leading, or may have.
func (s *session) maySend(ctx context.Context) error {
	if ctx.Err() != nil {
		return cause(ctx, ctx.Err())
	}
	if s.m.opts.Valid != nil {
		if err := s.m.opts.Valid(); err != nil {
			return err
		}
	}
	return nil
}

// update builds the next Update from the dirty VIPs.
func (s *session) update() (*speakerv1.Update, bool) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if s.redial {
		return nil, true
	}
	if len(s.dirty) == 0 && !s.bgpDirty {
		return nil, false
	}
	s.state.Sent++
	u := &speakerv1.Update{Version: s.state.Sent, Term: s.m.opts.Term}
	if s.bgpDirty {
		// Present replaces the set-up; present and empty closes every
		// session.
		u.Bgp = s.bgp
		if u.Bgp == nil {
			u.Bgp = &speakerv1.BGPConfig{}
		}
		s.bgpDirty = false
	}
	for _, a := range slices.Sorted(maps.Keys(s.dirty)) {
		if d := s.desired[a]; d != nil {
			u.Announce = append(u.Announce, d)
		} else {
			u.Withdraw = append(u.Withdraw, a)
		}
	}
	clear(s.dirty)
	return u, false
}
