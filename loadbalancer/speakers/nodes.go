package speakers

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"time"

	"golang.org/x/time/rate"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// SetNode adds a speaker at addr, or moves it to a new address.
func (m *Manager) SetNode(node string, addr netip.Addr) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s != nil {
		if s.addr != addr {
			s.log.Info("Speaker address changed", "address", addr)
			s.addr = addr
			s.redial = true
			s.poke()
		}
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	s = &session{
		m: m, node: node, addr: addr, cancel: cancel,
		log:     m.log.WithValues("node", node),
		desired: map[string]*speakerv1.Announcement{},
		dirty:   map[string]bool{},
		oddKeys: map[string]bool{},
		wake:    make(chan struct{}, 1),
		drained: make(chan struct{}),
		state:   State{Problem: "not connected yet", Since: time.Now()},
		bgp:     m.bgp[node],
		logs:    rate.NewLimiter(logRate, logBurst),
		dhcpOut: make(chan *speakerv1.DHCPExchange, dhcpQueue),
	}
	s.setPeers(s.bgp)
	m.sessions[node] = s
	m.repaceLocked()
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		s.run(ctx)
	}()
}

// drainTimeout bounds how long RemoveNode's session waits for the speaker
// to confirm it withdrew everything.
const drainTimeout = 3 * time.Second

// RemoveNode ends the session with node's speaker (its Node was deleted).
// A connected speaker is first told to withdraw everything; the session
// closes once it confirms, or after drainTimeout.
func (m *Manager) RemoveNode(node string) {
	m.mu.Lock()
	s := m.sessions[node]
	delete(m.sessions, node)
	if s == nil {
		m.mu.Unlock()
		return
	}
	m.repaceLocked()
	peers := s.bgp.GetPeers()
	connected := s.state.Connected && m.isReady()
	if connected {
		for a := range s.desired {
			s.dirty[a] = true
		}
		for a := range s.state.Announcing.All() {
			s.dirty[a.String()] = true
		}
		clear(s.desired)
		if s.bgp != nil {
			s.bgp, s.bgpDirty = nil, true // close its BGP sessions too
		}
		s.draining = true
		s.poke()
	}
	m.mu.Unlock()
	deleteNodeSeries(node, peers)
	if !connected {
		s.cancel()
		return
	}
	s.log.Info("Node deleted: telling its speaker to withdraw every VIP")
	go func() {
		select {
		case <-s.drained:
		case <-time.After(drainTimeout):
			s.log.Info("Speaker of a deleted node did not confirm its withdrawals in time; closing its stream", "timeout", drainTimeout)
		}
		s.cancel()
	}()
}

// Nodes returns the nodes with a session.
func (m *Manager) Nodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Sorted(maps.Keys(m.sessions))
}
