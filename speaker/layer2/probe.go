package layer2

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// Defaults of the probe sent by Probe (RFC 5227 and RFC 4862 wait seconds;
// on a LAN, tens of milliseconds are enough for a host to answer).
const (
	// DefaultProbeRounds is the default number of probe rounds.
	DefaultProbeRounds = 2
	// DefaultProbeInterval is the default delay between two rounds.
	DefaultProbeInterval = 15 * time.Millisecond
	// DefaultProbeWait is the default wait for answers after the last round.
	DefaultProbeWait = 25 * time.Millisecond
)

// Pacing of the probes: after every probeBurst frames, Probe pauses for
// probePause, so that a probe of many addresses neither fills the socket's
// send buffer (blocking the writes) nor the transmit queue (dropping frames).
const (
	probeBurst = 64
	probePause = 500 * time.Microsecond
)

// WithProbe sets the probe sent by Probe: rounds (at least 1), interval
// between rounds, wait after the last (default DefaultProbeRounds,
// DefaultProbeInterval, DefaultProbeWait).
func WithProbe(rounds int, interval, wait time.Duration) Option {
	return func(c *config) {
		c.probeRounds = rounds
		c.probeInterval = interval
		c.probeWait = wait
	}
}

// probeSession collects the claims of the addresses of one Probe call.
type probeSession struct {
	mu    sync.Mutex
	want  int                     // number of addresses probed
	found map[netip.Addr]Claim    // first claim of each claimed address
	all   chan struct{}           // closed once every address is claimed
	addrs map[netip.Addr]struct{} // the addresses probed (read-only)
}

// record records c (of an address of s): the first claim of an address wins.
func (s *probeSession) record(c Claim) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.found[c.Addr]; ok {
		return
	}
	s.found[c.Addr] = c
	if len(s.found) == s.want {
		close(s.all)
	}
}

// claimed reports whether a claim of a has been recorded.
func (s *probeSession) claimed(a netip.Addr) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.found[a]
	return ok
}

// result returns a copy of the claims recorded.
func (s *probeSession) result() map[netip.Addr]Claim {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.found)
}

// Probe checks the LAN for other hosts using addrs, all together, and
// returns those another host answered for, claimed, or probed at the same
// time, with the first such claim of each. IPv4 addresses are probed with
// ARP probes (RFC 5227: requests from sender IP 0.0.0.0, broadcast), IPv6
// ones with duplicate address detection Neighbor Solicitations (RFC 4862:
// from :: to the solicited-node group of the address, whose group Probe joins
// meanwhile): rounds of one probe per address, interval apart, then a wait
// for answers (see WithProbe). It returns early once every address is
// claimed. Probe does not announce; an address may be announced and probed
// at once (frames from this interface's MAC are never claims).
//
// It opens the sockets of the families of addrs if needed (in the network
// namespace of the calling goroutine's thread, as Announce). It holds no lock
// while waiting, and ctx bounds it. On error (ctx done, Close, a failed
// write) it returns the claims seen until then with the error.
func (r *Responder) Probe(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Claim, error) {
	s := &probeSession{
		found: make(map[netip.Addr]Claim),
		all:   make(chan struct{}),
		addrs: make(map[netip.Addr]struct{}, len(addrs)),
	}
	var v4, v6 []netip.Addr
	for _, addr := range addrs {
		a, err := normalize(addr)
		if err != nil {
			return nil, fmt.Errorf("layer2: probe %s on %s: %w", addr, r.ifi.Name, err)
		}
		if _, dup := s.addrs[a]; dup {
			continue
		}
		s.addrs[a] = struct{}{}
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	s.want = len(s.addrs)
	if s.want == 0 {
		return map[netip.Addr]Claim{}, nil
	}

	arpc, ndpc, joined, err := r.startProbe(s, len(v4) > 0, v6)
	if err != nil {
		return nil, fmt.Errorf("layer2: probe on %s: %w", r.ifi.Name, err)
	}
	defer r.endProbe(s, joined)
	r.log.V(1).Info("Probing", "addresses", s.want)

	start := time.Now()
	for round := range r.probeRounds {
		if round > 0 {
			stop, err := r.probeSleep(ctx, s, time.Until(start.Add(time.Duration(round)*r.probeInterval)))
			if err != nil {
				return s.result(), fmt.Errorf("layer2: probe on %s: %w", r.ifi.Name, err)
			}
			if stop {
				return s.result(), nil
			}
		}
		if err := r.probeRound(ctx, s, arpc, ndpc, v4, v6); err != nil {
			return s.result(), fmt.Errorf("layer2: probe on %s: %w", r.ifi.Name, err)
		}
	}
	if _, err := r.probeSleep(ctx, s, r.probeWait); err != nil {
		return s.result(), fmt.Errorf("layer2: probe on %s: %w", r.ifi.Name, err)
	}
	return s.result(), nil
}

// startProbe registers s for the claims of its addresses, opens the sockets
// of the families probed if needed and joins the solicited-node groups of
// the IPv6 addresses v6. It returns the sockets and the addresses whose
// group was joined (to leave in endProbe). Failing to join a group is not an
// error: answers to the probes (sent to all nodes) are received anyway, only
// another host's simultaneous probe might not be.
func (r *Responder) startProbe(s *probeSession, v4 bool, v6 []netip.Addr) (*arpConn, *ndpConn, []netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil, nil, nil, ErrClosed
	}
	if v4 {
		if err := r.openFamilyLocked(true); err != nil {
			return nil, nil, nil, err
		}
	}
	var joined []netip.Addr
	if len(v6) > 0 {
		if err := r.openFamilyLocked(false); err != nil {
			return nil, nil, nil, err
		}
		var failed int
		var firstErr error
		for _, a := range v6 {
			if err := r.ndp.join(a); err != nil {
				failed++
				firstErr = cmp.Or(firstErr, err)
				continue
			}
			joined = append(joined, a)
		}
		if failed > 0 {
			r.log.Info("Probing without joining some solicited-node groups: another host's simultaneous probe of those addresses may go unseen",
				"addresses", failed, "error", firstErr.Error())
		}
	}
	for a := range s.addrs {
		r.probing[a] = append(r.probing[a], s)
	}
	return r.arp, r.ndp, joined, nil
}

// endProbe unregisters s and leaves the groups joined by startProbe.
func (r *Responder) endProbe(s *probeSession, joined []netip.Addr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for a := range s.addrs {
		l := slices.DeleteFunc(r.probing[a], func(x *probeSession) bool { return x == s })
		if len(l) == 0 {
			delete(r.probing, a)
		} else {
			r.probing[a] = l
		}
	}
	if r.closed {
		return // the sockets, and their memberships, are gone
	}
	for _, a := range joined {
		if err := r.ndp.leave(a); err != nil {
			r.log.Error(err, "Leaving a solicited-node group after probing failed", "address", a)
		}
	}
}

// probeRound sends one probe for each address of v4 and v6 not claimed yet,
// paced. It holds no lock.
func (r *Responder) probeRound(ctx context.Context, s *probeSession, arpc *arpConn, ndpc *ndpConn, v4, v6 []netip.Addr) error {
	sent := 0
	pace := func() error {
		sent++
		if sent%probeBurst != 0 {
			return nil
		}
		_, err := r.probeSleep(ctx, nil, probePause)
		return err
	}
	send := func(addrs []netip.Addr, probe func(netip.Addr) error, o op) error {
		for _, a := range addrs {
			if s.claimed(a) {
				continue
			}
			err := probe(a)
			r.health.set(o, err)
			if err != nil {
				if r.isClosed() {
					return ErrClosed
				}
				return err
			}
			if err := pace(); err != nil {
				return err
			}
		}
		return nil
	}
	if len(v4) > 0 {
		if err := send(v4, arpc.probe, opWriteARP); err != nil {
			return err
		}
	}
	if len(v6) > 0 {
		if err := send(v6, ndpc.dad, opWriteNDP); err != nil {
			return err
		}
	}
	return nil
}

// probeSleep waits for d, or until every address of s (if not nil) is
// claimed (then it reports stop), ctx is done or the Responder is closed
// (then it returns an error).
func (r *Responder) probeSleep(ctx context.Context, s *probeSession, d time.Duration) (stop bool, err error) {
	var all chan struct{}
	if s != nil {
		all = s.all
	}
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-t.C:
		return false, nil
	case <-all:
		return true, nil
	case <-ctx.Done():
		return false, ctx.Err()
	case <-r.done:
		return false, ErrClosed
	}
}
