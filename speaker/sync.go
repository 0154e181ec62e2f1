package speaker

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"time"

	"google.golang.org/grpc/codes"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// streamState is one open Sync stream.
type streamState struct {
	term    uint64 // term of the snapshot it sent, 0 before one
	cancel  context.CancelCauseFunc
	ignored uint64              // instructions of unknown kinds
	chain   []*x509.Certificate // what the CCM presented in the TLS handshake
	// lastHeard is when the stream last sent an instruction (heartbeats
	// included).
	lastHeard time.Time
	// fullGen is the agent's state generation (Agent.gen) when the
	// stream's latest full report was taken.
	fullGen uint64
	// deltas is true once the stream's snapshot asked for VIP changes
	// (Snapshot.vip_deltas); base is then what the stream's latest report
	// naming VIPs said of each (nil before one).
	deltas bool
	base   map[netip.Addr]vipReport
	// seen is the number of the first entry of the agent's VIP change
	// log (vipChanges) that base does not take into account.
	seen uint64
}

// instructionQueue bounds the instructions read from a stream but not yet
// applied: the receive goroutine answers heartbeats while an apply runs,
// and stops reading (gRPC flow control then holds the CCM) only when this
// many wait.
const instructionQueue = 256

// errFenced is returned for instructions of a leader older than the one
// the speaker follows.
var errFenced = errors.New("fenced")

// Sync implements the Speaker service: it reports the current state, then
// applies instructions in order and answers each with a Report; changes of
// its own (interface health, a VIP that failed or recovered) are reported
// as they happen. A stream that sends a Snapshot of a term at least as high
// as any seen takes over from earlier streams; a stream of a lower term is
// refused with FailedPrecondition, and so are streams of lower terms still
// open when a higher term takes over.
func (a *Agent) Sync(stream speakerv1.Speaker_SyncServer) error {
	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	chain := peerChain(stream.Context())
	id, ending := a.openStream(cancel, chain)
	defer a.closeStream(id)
	if ending != nil {
		return endStatus(ending) // stopping: no new streams
	}
	// Checked again now that the stream is registered: a trust change
	// after the handshake but before then is not missed (recheckTrust).
	if err := a.verifyStream(chain); err != nil {
		a.log.Info("Refusing a CCM stream: its certificate is no longer trusted", "stream", id, "subject", subjectOf(chain), "err", err.Error())
		return speakerv1.StreamError(codes.Unauthenticated, speakerv1.ReasonUntrusted, err.Error())
	}
	defer func() {
		// Announcements and BGP sessions stay as they are: only a CCM's
		// instruction or shutting down withdraws them.
		a.log.Info("CCM stream ended; keeping every announcement", "stream", id, "cause", context.Cause(ctx))
	}()

	rp := &reporter{a: a, id: id, stream: stream}
	// The first report offers the enrollment token; later ones compare
	// with it as if it had none.
	a.mu.Lock()
	changed := a.changed // before the first report: no change is missed
	a.mu.Unlock()
	if err := rp.sendFirst(); err != nil {
		return err
	}
	sendIfChanged := func() error { return rp.sendState(true) }
	go a.reportChanges(ctx, id, changed, sendIfChanged)

	instructions := make(chan *speakerv1.Instruction, instructionQueue)
	recvErr := make(chan error, 1)
	go func() {
		for {
			in, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			a.heardFrom(id, in)
			if hb, ok := in.GetKind().(*speakerv1.Instruction_Heartbeat); ok {
				// Answered at once, never behind an apply: the CCM
				// counts a late answer as a lost speaker.
				instructionsTotal.WithLabelValues("heartbeat", "applied").Inc()
				r := a.report(id, false)
				r.HeartbeatSeq = hb.Heartbeat.GetSeq()
				if err := rp.send(r); err != nil {
					recvErr <- err
					return
				}
				continue
			}
			select {
			case instructions <- in:
			case <-ctx.Done():
				return
			}
		}
	}()
	var next *speakerv1.Instruction
	for {
		in := next
		next = nil
		if in == nil {
			select {
			case <-ctx.Done():
				return endStatus(context.Cause(ctx))
			case err := <-recvErr:
				if errors.Is(err, context.Canceled) || ctx.Err() != nil {
					return nil
				}
				return err
			case in = <-instructions:
			}
		}
		// A snapshot or update followed by an update already queued is
		// answered by the later one's report (its applied version covers
		// both): when the CCM moves many VIPs at once, a full report per
		// update would slow applying them down.
		answer := true
		if isApply(in) {
			select {
			case next = <-instructions:
				_, isUpdate := next.GetKind().(*speakerv1.Instruction_Update)
				answer = !isUpdate
			default:
			}
		}
		if err := a.handle(id, in, rp, answer); err != nil {
			return err
		}
	}
}

// isApply reports whether in is a Snapshot or an Update.
func isApply(in *speakerv1.Instruction) bool {
	switch in.GetKind().(type) {
	case *speakerv1.Instruction_Snapshot, *speakerv1.Instruction_Update:
		return true
	}
	return false
}

// endStatus is the status a stream ended by cause ends with.
func endStatus(cause error) error {
	switch c := cause; {
	case errors.Is(c, errClosing):
		return speakerv1.StreamError(codes.Unavailable, speakerv1.ReasonShuttingDown, c.Error())
	case errors.Is(c, errRestarting):
		return speakerv1.StreamError(codes.Unavailable, speakerv1.ReasonRestarting, c.Error())
	case errors.Is(c, errFenced):
		return speakerv1.StreamError(codes.FailedPrecondition, speakerv1.ReasonFenced, c.Error())
	case errors.Is(c, errUntrusted):
		return speakerv1.StreamError(codes.Unauthenticated, speakerv1.ReasonUntrusted, c.Error())
	}
	return nil
}

// handle applies one instruction and answers it (heartbeats are answered
// by Sync's receive goroutine); a snapshot or update only when answer is
// true.
func (a *Agent) handle(id uint64, in *speakerv1.Instruction, rp *reporter, answer bool) error {
	switch k := in.GetKind().(type) {
	case *speakerv1.Instruction_Snapshot:
		if err := a.applySnapshot(id, k.Snapshot); err != nil {
			instructionsTotal.WithLabelValues("snapshot", resultOf(err)).Inc()
			return refusal(err)
		}
		instructionsTotal.WithLabelValues("snapshot", "applied").Inc()
		if !answer {
			return nil
		}
		return rp.sendState(false)
	case *speakerv1.Instruction_Certificate:
		a.installCertificate(k.Certificate)
		a.recheckTrust() // may end this very stream
		return rp.send(a.report(id, false))
	case *speakerv1.Instruction_Attest:
		// Only an authenticated CCM opens streams: it gets the token it
		// renews the node certificate with.
		r := a.report(id, false)
		r.Enrollment = a.enrollment()
		instructionsTotal.WithLabelValues("attest", resultOfAttest(r.Enrollment)).Inc()
		return rp.send(r)
	case *speakerv1.Instruction_Dhcp:
		// Runs on its own; bounded in time (its timeout) and number.
		return a.handleDHCP(context.Background(), id, k.Dhcp, rp)
	case *speakerv1.Instruction_Update:
		if err := a.applyUpdate(id, k.Update); err != nil {
			instructionsTotal.WithLabelValues("update", resultOf(err)).Inc()
			return refusal(err)
		}
		instructionsTotal.WithLabelValues("update", "applied").Inc()
		if !answer {
			return nil
		}
		return rp.sendState(false)
	default:
		// A newer CCM sent something this speaker does not know: ignore
		// it, keep the stream, and say so in the answer.
		instructionsTotal.WithLabelValues("unknown", "ignored").Inc()
		a.mu.Lock()
		s := a.streams[id]
		if s != nil {
			s.ignored++
			if s.ignored == 1 {
				a.log.Info("Ignoring instructions of a kind this speaker does not know; upgrade the speaker to match the CCM", "capabilities", Capabilities)
			}
		}
		a.mu.Unlock()
		return rp.sendState(false)
	}
}

// refusal is the status that ends a stream whose instruction was refused.
func refusal(err error) error {
	if errors.Is(err, errFenced) {
		return speakerv1.StreamError(codes.FailedPrecondition, speakerv1.ReasonFenced, err.Error())
	}
	return speakerv1.StreamError(codes.FailedPrecondition, speakerv1.ReasonRefused, err.Error())
}

func resultOfAttest(e *speakerv1.Enrollment) string {
	if e == nil {
		return "refused"
	}
	return "applied"
}

func resultOf(err error) string {
	if errors.Is(err, errFenced) {
		return "fenced"
	}
	return "refused"
}

// reportChanges sends stream id a report whenever the agent's state
// changes (ch, then the channels that replace it, close), until ctx ends;
// not when the stream's latest full report already shows the state of
// now (an apply's answer does): building one is O(VIPs).
func (a *Agent) reportChanges(ctx context.Context, id uint64, ch <-chan struct{}, sendIfChanged func() error) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
		// The next channel before the report: a change after the report
		// was taken closes it, and is not missed.
		a.mu.Lock()
		ch = a.changed
		s := a.streams[id]
		current := s != nil && s.fullGen == a.gen
		a.mu.Unlock()
		if current {
			continue
		}
		if err := sendIfChanged(); err != nil {
			return
		}
	}
}

// openStream registers a stream; ending is why the agent no longer takes
// streams (Close, Restart), nil while it does.
func (a *Agent) openStream(cancel context.CancelCauseFunc, chain []*x509.Certificate) (id uint64, ending error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.nextStream++
	a.streams[a.nextStream] = &streamState{cancel: cancel, chain: chain}
	return a.nextStream, a.ending
}

func (a *Agent) closeStream(id uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.streams, id)
}

// acceptTermLocked checks the term of a snapshot of stream id and, when it
// is accepted, ends the open streams of lower terms.
func (a *Agent) acceptTermLocked(id uint64, term uint64, leader string) error {
	if term < a.term {
		return fmt.Errorf("%w: term %d of leader %q is older than term %d of leader %q, which this speaker follows", errFenced, term, leader, a.term, a.leader)
	}
	if term > a.term && a.term != 0 {
		a.log.Info("Following a new CCM leader", "leader", leader, "term", term, "previousLeader", a.leader, "previousTerm", a.term)
	}
	a.term, a.leader = term, leader
	if s := a.streams[id]; s != nil {
		s.term = term
	}
	for other, s := range a.streams {
		if other != id && s.term != 0 && s.term < term {
			s.cancel(fmt.Errorf("%w: leader %q of term %d took over", errFenced, leader, term))
		}
	}
	return nil
}
