package bfd

import (
	"fmt"
	"net/netip"
	"time"
)

// Reasons reported in Status.Reason.
const (
	reasonNoPacket  = "no BFD packet from the peer yet (does the router run BFD for this neighbor?)"
	reasonInit      = "the peer answered; waiting for it to confirm (three-way handshake in progress)"
	reasonPeerAdmin = "the peer turned BFD off (AdminDown)"
	reasonLocal     = "administratively down (session removed or BFD shutting down)"
	reasonStaleUp   = "the peer still reports Up from an earlier session; waiting for its detection time to expire"
)

// session is the protocol state of one BFD session (the variables of RFC 5880
// §6.8.1 plus timer bookkeeping). It does no I/O and reads no clock: every
// method that depends on time takes now. It is not safe for concurrent use.
type session struct {
	cfg       Config
	localAddr netip.Addr

	state, remoteState State
	localDiag          Diag
	remoteDiag         Diag
	localDiscr         uint32
	remoteDiscr        uint32
	remoteMinRx        time.Duration
	remoteMinTx        time.Duration
	remoteMult         uint8
	remoteDemand       bool
	remoteCPI          bool

	// advTx and advRx are the intervals advertised in our packets; useTx and
	// useRx the ones in effect for transmission and detection. They differ
	// only during a Poll Sequence (RFC 5880 §6.8.3).
	advTx, advRx time.Duration
	useTx, useRx time.Duration
	polling      bool
	finalPending bool

	lastRx, lastTx, nextTx time.Time
	since                  time.Time
	flaps                  uint64
	reason                 string

	// rand returns a number in [0, 1) for the jitter.
	rand func() float64
}

// newSession returns a session in state Down with local discriminator discr,
// due to send its first packet at now.
func newSession(cfg Config, discr uint32, now time.Time, rnd func() float64) *session {
	s := &session{
		cfg:         cfg,
		localAddr:   cfg.Local,
		state:       Down,
		remoteState: Down,
		localDiscr:  discr,
		remoteMinRx: time.Microsecond, // RFC 5880 §6.8.1: initialized to 1
		since:       now,
		reason:      reasonNoPacket,
		nextTx:      now,
		rand:        rnd,
	}
	s.advTx = advertisedTx(cfg.DesiredMinTx, Down)
	s.advRx = cfg.RequiredMinRx
	s.useTx, s.useRx = s.advTx, s.advRx
	return s
}

// txInterval is the negotiated periodic transmission interval before jitter,
// 0 when periodic transmission must stop (the remote asks for no packets, or
// it runs Demand mode and both sides are Up).
func (s *session) txInterval() time.Duration {
	if s.remoteDemand && s.state == Up && s.remoteState == Up {
		return 0
	}
	return txInterval(s.useTx, s.remoteMinRx)
}

// detectTime is the Detection Time in use, 0 while the remote is unknown.
func (s *session) detectTime() time.Duration {
	if s.remoteDiscr == 0 {
		return 0
	}
	return detectTime(s.remoteMult, s.useRx, s.remoteMinTx)
}

// setState enters st at now, counting flaps and resetting the timers that
// depend on the state.
func (s *session) setState(st State, now time.Time) {
	if st == s.state {
		return
	}
	if s.state == Up {
		if st == Down {
			s.flaps++
		}
		s.polling = false // the peer will not answer a poll of a dead session
	}
	s.state = st
	s.since = now
	s.retime(now)
}

// retime brings the advertised intervals in line with the configuration and
// the state, following RFC 5880 §6.8.3: a change while Up is announced with a
// Poll Sequence, an increased Desired Min TX keeps the old transmission
// interval and a decreased Required Min RX keeps the old detection time until
// the sequence ends. Changes wait while a sequence is under way.
func (s *session) retime(now time.Time) {
	if s.polling {
		return
	}
	tx := advertisedTx(s.cfg.DesiredMinTx, s.state)
	rx := s.cfg.RequiredMinRx
	if tx == s.advTx && rx == s.advRx {
		return
	}
	up := s.state == Up
	s.advTx, s.advRx = tx, rx
	if !up || tx < s.useTx {
		s.useTx = tx
	}
	if !up || rx > s.useRx {
		s.useRx = rx
	}
	s.polling = up
	s.reschedule(now)
}

// endPoll terminates the Poll Sequence: the advertised intervals take effect,
// and changes that waited start the next sequence.
func (s *session) endPoll(now time.Time) {
	s.polling = false
	s.useTx, s.useRx = s.advTx, s.advRx
	s.retime(now)
	s.reschedule(now)
}

// reschedule moves the next periodic transmission earlier when the interval
// has become shorter than what is left to wait.
func (s *session) reschedule(now time.Time) {
	iv := s.txInterval()
	if iv == 0 {
		return
	}
	if next := s.lastTx.Add(iv); s.nextTx.IsZero() || next.Before(s.nextTx) {
		s.nextTx = next
	}
}

// setConfig applies new timers (and MaxHops) to the session; the key fields
// (Peer, Local, Multihop) are those of the session already.
func (s *session) setConfig(cfg Config, now time.Time) {
	s.cfg = cfg
	s.retime(now)
}

// receive processes a packet already checked by parsePacket and selected for
// this session, from RFC 5880 §6.8.6 after the A-bit check. It reports whether
// the state changed.
func (s *session) receive(p *packet, now time.Time) (changed bool) {
	s.lastRx = now
	s.remoteDiscr = p.MyDiscr
	s.remoteState = p.State
	s.remoteDiag = p.Diag
	s.remoteDemand = p.Demand
	s.remoteCPI = p.ControlPlaneIndependent
	s.remoteMinRx = p.RequiredMinRx
	s.remoteMinTx = p.DesiredMinTx
	s.remoteMult = p.DetectMult
	if p.Final && s.polling {
		s.endPoll(now)
	}
	if s.state == AdminDown {
		return false
	}
	old := s.state
	if p.State == AdminDown {
		if s.state != Down {
			s.localDiag = DiagNeighborDown
			s.setState(Down, now)
		}
		s.reason = reasonPeerAdmin
	} else {
		switch s.state {
		case Down:
			switch p.State {
			case Down:
				s.setState(Init, now)
				s.reason = reasonInit
			case Init:
				s.setState(Up, now)
			case Up:
				s.reason = reasonStaleUp
			}
		case Init:
			if p.State == Init || p.State == Up {
				s.setState(Up, now)
			}
		case Up:
			if p.State == Down {
				s.localDiag = DiagNeighborDown
				s.setState(Down, now)
				s.reason = fmt.Sprintf("the peer reported the session down (%s)", p.Diag)
			}
		}
	}
	if s.state == Up && old != Up {
		s.localDiag = DiagNone
		s.reason = ""
	}
	if p.Poll {
		s.finalPending = true
	}
	s.reschedule(now)
	return s.state != old
}

// expire checks the Detection Time at now (RFC 5880 §6.8.4): when it has
// passed without a packet the remote is forgotten and an Init or Up session
// goes Down with Diag 1. It reports whether the state changed.
func (s *session) expire(now time.Time) (changed bool) {
	dt := s.detectTime()
	if dt == 0 || now.Before(s.lastRx.Add(dt)) {
		return false
	}
	s.remoteDiscr = 0
	s.remoteMinRx = time.Microsecond
	s.remoteDemand = false
	s.reschedule(now)
	if s.state != Init && s.state != Up {
		return false
	}
	s.localDiag = DiagDetectionExpired
	s.setState(Down, now)
	s.reason = fmt.Sprintf("detection time expired after %v", dt)
	return true
}

// adminDown takes the session to AdminDown with Diag 7, before it is removed.
func (s *session) adminDown(now time.Time) (changed bool) {
	if s.state == AdminDown {
		return false
	}
	s.localDiag = DiagAdminDown
	s.polling = false
	s.setState(AdminDown, now)
	s.reason = reasonLocal
	return true
}

// due reports whether a packet must be sent at now: a Final answers a Poll
// at once, and periodic packets follow the (jittered) interval.
func (s *session) due(now time.Time) bool {
	return s.finalPending || (s.txInterval() > 0 && !now.Before(s.nextTx))
}

// nextEvent is when the session next needs attention: its next periodic
// packet or the end of its Detection Time; zero for never.
func (s *session) nextEvent() time.Time {
	var next time.Time
	if s.txInterval() > 0 {
		next = s.nextTx
	}
	if dt := s.detectTime(); dt > 0 {
		if d := s.lastRx.Add(dt); next.IsZero() || d.Before(next) {
			next = d
		}
	}
	return next
}

// transmit returns the packet to send at now and schedules the next periodic
// one (RFC 5880 §6.8.7). A pending Final is sent without the Poll bit.
func (s *session) transmit(now time.Time) *packet {
	p := s.packet()
	s.finalPending = false
	s.lastTx = now
	s.nextTx = time.Time{}
	if iv := s.txInterval(); iv > 0 {
		s.nextTx = now.Add(jitter(iv, s.cfg.DetectMultiplier, s.rand()))
	}
	return p
}

// packet is the Control packet the session sends now.
func (s *session) packet() *packet {
	return &packet{
		Version:       version,
		Diag:          s.localDiag,
		State:         s.state,
		Poll:          s.polling && !s.finalPending,
		Final:         s.finalPending,
		DetectMult:    s.cfg.DetectMultiplier,
		Length:        headerLen,
		MyDiscr:       s.localDiscr,
		YourDiscr:     s.remoteDiscr,
		DesiredMinTx:  s.advTx,
		RequiredMinRx: s.advRx,
	}
}

// status reports the session.
func (s *session) status() Status {
	st := Status{
		Config:                        s.cfg,
		LocalAddr:                     s.localAddr,
		State:                         s.state,
		RemoteState:                   s.remoteState,
		LocalDiag:                     s.localDiag,
		RemoteDiag:                    s.remoteDiag,
		LocalDiscr:                    s.localDiscr,
		RemoteDiscr:                   s.remoteDiscr,
		Since:                         s.since,
		TxInterval:                    s.txInterval(),
		DetectTime:                    s.detectTime(),
		RemoteMinRx:                   s.remoteMinRx,
		RemoteMinTx:                   s.remoteMinTx,
		RemoteMultiplier:              s.remoteMult,
		RemoteControlPlaneIndependent: s.remoteCPI,
		Flaps:                         s.flaps,
		Reason:                        s.reason,
	}
	if s.state == Up {
		st.Reason = ""
	}
	return st
}
