package speakers

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

// A speaker with the "restart" capability that is stopped (SIGTERM) ends
// its stream with ReasonRestarting and withdraws nothing: a new process
// on the same node takes over. Meanwhile the CCM holds the speaker
// restarting (State.Restarting, which keeps its VIPs on its node) while
// its host is up, which a dial to the speaker's port tells: the host's
// kernel refuses it (RST). A dial that gets no answer within the loss
// limit, or finds no route to the host, means the host went away; the
// restart grace bounds the wait in any case.

// restartRedial is how often the session dials a restarting speaker.
const restartRedial = 100 * time.Millisecond

// restartProbes counts the dials to restarting speakers, for tests that
// wait for the session to have tried.
var restartProbes atomic.Uint64

// errRestarting ends a stream whose speaker said it is restarting.
var errRestarting = errors.New("speaker restarting")

// dialOutcome is what a dial to a restarting speaker's port tells of its
// host.
type dialOutcome int

const (
	// dialUnknown: an error that tells nothing of the host (the wait goes
	// on, bounded by the restart grace).
	dialUnknown dialOutcome = iota
	// dialRefused: the host is up, its speaker not yet.
	dialRefused
	// dialListening: a process listens again: try a stream.
	dialListening
	// dialGone: no answer in time, or no route: the host went away.
	dialGone
)

// classifyDial tells what a failed dial says of the host, by the error's
// type.
func classifyDial(err error) dialOutcome {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return dialRefused
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH),
		errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return dialGone
	}
	return dialUnknown
}

// startRestart records that the speaker ended its stream with
// ReasonRestarting; it reports whether its state changed.
func (s *session) startRestart(err error) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	was := s.state.Connected
	s.state.Connected, s.state.Healthy, s.state.Stopped = false, false, false
	s.state.Problem = err.Error()
	if was {
		s.state.Since = time.Now()
	}
	if s.state.Restarting {
		return was
	}
	s.state.Restarting = true
	s.restartUntil = time.Now().Add(s.m.opts.RestartGrace)
	s.log.Info("Speaker restarting: its VIPs stay on its node while its host refuses connections", "restartGrace", s.m.opts.RestartGrace)
	return true
}

// endRestart ends the wait for a restarting speaker (its VIPs may move);
// it reports whether it was restarting.
func (s *session) endRestart(why string) bool {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	if !s.state.Restarting {
		return false
	}
	s.state.Restarting = false
	s.state.Problem = why
	s.state.Since = time.Now()
	s.log.Info("Restarting speaker not coming back: its VIPs may move", "reason", why)
	return true
}

// restarting reports whether the speaker is restarting, and its address.
func (s *session) restarting() (bool, time.Time, string) {
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	return s.state.Restarting, s.restartUntil, net.JoinHostPort(s.addr.String(), strconv.Itoa(s.m.opts.Port))
}

// awaitRestart dials the restarting speaker every restartRedial until a
// process listens on its port again (the caller then opens a stream),
// its host is gone, the restart grace runs out, or ctx ends.
func (s *session) awaitRestart(ctx context.Context) {
	for {
		on, until, addr := s.restarting()
		if !on {
			return
		}
		grace := time.NewTimer(time.Until(until))
		select {
		case <-ctx.Done():
			grace.Stop()
			return
		case <-grace.C:
			if s.endRestart("restart grace ran out") {
				s.m.changed(s.node)
			}
			return
		case <-time.After(restartRedial):
			grace.Stop()
		}
		switch s.probe(ctx, addr) {
		case dialListening:
			return
		case dialGone:
			if ctx.Err() == nil && s.endRestart("its host does not answer: gone") {
				s.m.changed(s.node)
			}
			return
		}
	}
}

// probe dials addr once, waiting at most the loss limit.
func (s *session) probe(ctx context.Context, addr string) dialOutcome {
	restartProbes.Add(1)
	ctx, cancel := context.WithTimeout(ctx, s.m.LossLimit())
	defer cancel()
	dial := s.m.opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	conn, err := dial(ctx, addr)
	if err != nil {
		return classifyDial(err)
	}
	conn.Close()
	return dialListening
}
