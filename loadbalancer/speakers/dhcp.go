package speakers

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// DHCP exchanges: the CCM keeps the leases of DHCP-backed pools, and a
// speaker talks to the LAN's server for it (api/speaker/v1: DHCPExchange).
// An exchange goes out on the speaker's open stream and its result comes
// back in a later report; DHCP waits for it.

// Errors of DHCP, told apart with errors.Is.
var (
	// ErrNoDHCPSpeaker: the node has no connected speaker with the "dhcp"
	// capability.
	ErrNoDHCPSpeaker = errors.New("no connected speaker that runs DHCP exchanges")
	// ErrDHCPQueueFull: too many exchanges wait to be sent to the speaker.
	ErrDHCPQueueFull = errors.New("too many DHCP exchanges queued for the speaker")
	// ErrDHCPUnanswered: the speaker did not answer in time (or its
	// stream ended first).
	ErrDHCPUnanswered = errors.New("the speaker did not answer the DHCP exchange")
)

// dhcpQueue bounds the exchanges waiting to be sent to one speaker, and
// dhcpResultsPerReport how many results one report may carry (more are
// dropped: a speaker runs fewer at once).
const (
	dhcpQueue            = 64
	dhcpResultsPerReport = 256
)

// dhcpAnswerSlack is how long past the exchange's own timeout DHCP waits
// for the speaker's report.
const dhcpAnswerSlack = 2 * time.Second

// dhcpWaiter is one exchange awaiting its result from node.
type dhcpWaiter struct {
	node string
	ch   chan *speakerv1.DHCPResult
}

// DHCPNodes returns the nodes whose speakers are connected and run DHCP
// exchanges, sorted.
func (m *Manager) DHCPNodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for node, s := range m.sessions {
		if s.state.Connected && !s.draining && s.state.Has(speakerv1.CapabilityDHCP) {
			out = append(out, node)
		}
	}
	slices.Sort(out)
	return out
}

// DHCP runs ex on node's speaker and returns its result. It sets ex's id
// and term. It fails with ErrNoDHCPSpeaker, ErrDHCPQueueFull or
// ErrDHCPUnanswered (the exchange may then have happened: an ACQUIRE's
// lease is found again by its client identifier).
func (m *Manager) DHCP(ctx context.Context, node string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error) {
	ch := make(chan *speakerv1.DHCPResult, 1)
	m.mu.Lock()
	s := m.sessions[node]
	if s == nil || !s.state.Connected || s.draining || !s.state.Has(speakerv1.CapabilityDHCP) || s.dhcpOut == nil {
		m.mu.Unlock()
		return nil, fmt.Errorf("node %s: %w", node, ErrNoDHCPSpeaker)
	}
	m.dhcpSeq++
	ex.Id = m.dhcpSeq
	ex.Term = m.opts.Term
	if m.dhcpWait == nil {
		m.dhcpWait = map[uint64]dhcpWaiter{}
	}
	m.dhcpWait[ex.Id] = dhcpWaiter{node: node, ch: ch}
	out := s.dhcpOut
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		delete(m.dhcpWait, ex.Id)
		m.mu.Unlock()
	}()
	select {
	case out <- ex:
	default:
		return nil, fmt.Errorf("node %s: %w", node, ErrDHCPQueueFull)
	}
	wait := time.Duration(ex.GetTimeoutMs())*time.Millisecond + dhcpAnswerSlack
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case r := <-ch:
		return r, nil
	case <-t.C:
		return nil, fmt.Errorf("node %s, after %v: %w", node, wait, ErrDHCPUnanswered)
	case <-ctx.Done():
		return nil, fmt.Errorf("node %s: %w: %w", node, ErrDHCPUnanswered, ctx.Err())
	}
}

// takeDHCPResults hands the results r carries to the exchanges that wait
// for them from this session's node and removes them from r: a result
// for an exchange not asked of this node, or no longer awaited, is
// dropped.
func (s *session) takeDHCPResults(r *speakerv1.Report) {
	results := r.GetDhcp()
	if len(results) == 0 {
		return
	}
	r.Dhcp = nil
	if len(results) > dhcpResultsPerReport {
		results = results[:dhcpResultsPerReport]
	}
	s.m.mu.Lock()
	defer s.m.mu.Unlock()
	for _, res := range results {
		w, ok := s.m.dhcpWait[res.GetId()]
		if !ok || w.node != s.node {
			continue
		}
		delete(s.m.dhcpWait, res.GetId())
		w.ch <- res // buffered, one result per waiter
	}
}
