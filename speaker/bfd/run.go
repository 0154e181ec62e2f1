package bfd

import (
	"context"
	"net/netip"
	"time"
)

// handle processes one packet received by a listener at now (RFC 5880
// §6.8.6, with the TTL checks of RFC 5881 §5 and RFC 5883 §5).
func (s *Server) handle(b []byte, m Meta, multihop bool, now time.Time) {
	p, err := parsePacket(b)
	if err != nil {
		s.dropInvalid.Add(1)
		s.log.V(2).Info("BFD packet discarded", "from", m.Src, "reason", err.Error())
		return
	}
	if !multihop && m.TTL != 255 {
		s.dropTTL.Add(1)
		s.log.V(2).Info("BFD packet discarded", "from", m.Src, "ttl", m.TTL, "reason", errTTL.Error())
		return
	}
	src, dst := m.Src.Addr().Unmap().WithZone(""), m.Dst.Unmap().WithZone("")

	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.selectLocked(p, src, dst, multihop)
	if e == nil {
		s.dropUnknown.Add(1)
		s.log.V(2).Info("BFD packet discarded", "from", m.Src, "to", dst, "yourDiscriminator", p.YourDiscr, "reason", errUnknownPeer.Error())
		return
	}
	if multihop && m.TTL < minTTL(e.s.cfg.MaxHops) {
		s.dropTTL.Add(1)
		s.log.V(2).Info("BFD packet discarded", "from", m.Src, "ttl", m.TTL, "reason", errTTL.Error())
		return
	}
	if p.AuthPresent {
		s.dropAuth.Add(1)
		s.log.V(2).Info("BFD packet discarded", "from", m.Src, "reason", errAuthBit.Error())
		return
	}
	before := e.s.nextEvent()
	changed := e.s.receive(p, now)
	if changed {
		s.changedLocked(e)
	}
	// Wake the session's goroutine only when it must act sooner than its
	// timer says: a state change, a Final to send, an earlier event. A
	// packet that only pushes the Detection Time back needs nothing (the
	// timer, set for the next transmission, comes first), and waking 100
	// goroutines for every packet is most of the CPU BFD costs.
	if after := e.s.nextEvent(); changed || e.s.finalPending || before.IsZero() || !after.IsZero() && after.Before(before) {
		e.poke()
	}
}

// minTTL is the least TTL accepted by a multihop session.
func minTTL(maxHops uint8) int {
	if maxHops == 0 {
		return 255
	}
	return 256 - int(maxHops)
}

// selectLocked finds the session of a packet: by Your Discriminator when it
// is set, else by peer address, local address and hop mode. A session found
// by discriminator must also match the source and hop mode.
func (s *Server) selectLocked(p *packet, src, dst netip.Addr, multihop bool) *entry {
	if p.YourDiscr != 0 {
		e := s.byDiscr[p.YourDiscr]
		if e == nil || e.s.cfg.Peer.WithZone("") != src || e.s.cfg.Multihop != multihop {
			return nil
		}
		if l := e.s.cfg.Local.WithZone(""); l.IsValid() && dst.IsValid() && l != dst {
			return nil
		}
		return e
	}
	if e := s.sessions[key{src, dst, multihop}]; e != nil {
		return e
	}
	return s.sessions[key{src, netip.Addr{}, multihop}]
}

// changedLocked reports a state change of e.
func (s *Server) changedLocked(e *entry) {
	st := e.s.status()
	s.log.Info("BFD session state changed", "peer", st.Peer, "local", st.LocalAddr, "state", st.State.String(),
		"remoteState", st.RemoteState.String(), "diag", st.LocalDiag.String(), "reason", st.Reason)
	s.notify.push(st)
}

// run is the goroutine of session e: it sends its packets and watches its
// Detection Time with one timer, until e.quit.
func (s *Server) run(e *entry) {
	defer s.sessWG.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-e.quit:
			s.finish(e)
			return
		case <-e.kick:
		case <-t.C:
		}
		now := time.Now()
		var out []byte
		s.mu.Lock()
		if e.s.expire(now) {
			s.changedLocked(e)
		}
		if e.s.due(now) {
			out = appendPacket(e.buf[:0], e.s.transmit(now))
		}
		next := e.s.nextEvent()
		s.mu.Unlock()
		if out != nil {
			s.write(e, out)
		}
		if next.IsZero() {
			t.Stop()
		} else {
			t.Reset(next.Sub(now))
		}
	}
}

// write sends one packet of e. Errors (such as ICMP port unreachable from a
// peer without BFD) are only logged: the protocol copes with lost packets.
func (s *Server) write(e *entry, b []byte) {
	if err := e.conn.WritePacket(b); err != nil {
		s.log.V(1).Info("BFD send failed", "peer", e.peer, "error", err.Error())
	}
}

// finish ends session e: when graceful it sends AdminDown first; then it
// closes its socket and frees its discriminator.
func (s *Server) finish(e *entry) {
	if e.graceful {
		s.goodbye(e.ctx, e)
	}
	e.conn.Close()
	s.mu.Lock()
	if s.byDiscr[e.s.localDiscr] == e {
		delete(s.byDiscr, e.s.localDiscr)
	}
	s.mu.Unlock()
}

// goodbyePackets is how many AdminDown packets a leaving session sends when
// the peer is known.
const goodbyePackets = 3

// goodbye takes e to AdminDown (Diag 7) and sends it to the peer a few times:
// three packets at the current transmission interval, or spread over the
// Detection Time when that is shorter, stopping early at ctx's end or Close.
func (s *Server) goodbye(ctx context.Context, e *entry) {
	s.mu.Lock()
	n := 1
	if e.s.remoteDiscr != 0 {
		n = goodbyePackets
	}
	iv := e.s.txInterval()
	if iv == 0 {
		iv = e.s.useTx
	}
	if dt := e.s.detectTime(); dt > 0 && dt/goodbyePackets < iv {
		iv = dt / goodbyePackets
	}
	if e.s.adminDown(time.Now()) {
		s.changedLocked(e)
	}
	s.mu.Unlock()
	t := time.NewTimer(iv)
	defer t.Stop()
	for i := range n {
		if i > 0 {
			select {
			case <-t.C:
				t.Reset(iv)
			case <-ctx.Done():
				return
			case <-s.done:
				return
			}
		}
		s.mu.Lock()
		out := appendPacket(e.buf[:0], e.s.transmit(time.Now()))
		s.mu.Unlock()
		s.write(e, out)
	}
}
