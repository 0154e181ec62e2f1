package speakers

import (
	"maps"
	"net/netip"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// State is what the CCM knows about one speaker.
type State struct {
	// Connected is true once the speaker's first report arrived on the
	// current stream, until the stream fails.
	Connected bool
	// Since is when Connected last changed.
	Since time.Time
	// LastReport is when the speaker last answered (any report, heartbeats
	// included).
	LastReport time.Time
	// Healthy is true while the speaker reports every interface usable.
	Healthy bool
	// Problem explains !Connected or !Healthy.
	Problem string
	// Announcing is the set of VIPs the speaker last reported announcing;
	// immutable, so it is shared without copying (see AddrSet).
	Announcing AddrSet
	// Initial lists the VIPs the speaker announced when the current (or
	// last) stream opened, before any instruction on it; sorted.
	Initial []netip.Addr
	// Failed maps VIPs the speaker could not announce to its error.
	Failed map[string]string
	// Applied is the version the speaker confirmed; Sent the newest sent.
	Applied, Sent uint64
	// Reported is true once the speaker answered at least once since the
	// Manager started, even if it is disconnected now.
	Reported bool
	// Version and Capabilities are what the speaker said of itself.
	Version      string
	Capabilities []string
	// Fenced is true when the speaker refused this leader because it
	// follows a newer one.
	Fenced bool
	// Stopped is true when the speaker said it was shutting down: it
	// withdrew every VIP before its stream ended.
	Stopped bool
	// BGPSessions are the speaker's BGP sessions as it last reported them.
	BGPSessions []*speakerv1.BGPSessionStatus
	// Restarting is true while a speaker that said it is restarting
	// (ReasonRestarting) is expected back: its node is up (the host still
	// refuses connections to the speaker's port rather than staying
	// silent) and the restart grace (Options.RestartGrace) has not run
	// out. The planner keeps the node's VIPs on it meanwhile.
	Restarting bool
	// DataPlane is the node's data-plane health as the speaker last
	// reported it (Report.data_plane); nil: unknown, taken as ready.
	DataPlane *speakerv1.DataPlane
	// Conflicts maps the VIPs the speaker found in use by another host
	// (VIPStatus CONFLICT) to that host's hardware address.
	Conflicts map[string]string
	// Claimed maps the VIPs the speaker announces (or YIELDED) that
	// another host claimed since to that host's hardware address
	// (VIPStatus.claimed_by).
	Claimed map[string]string
	// Yielded lists the VIPs the speaker gave up on its own while cut off
	// from the CCM (VIPStatus YIELDED); sorted.
	Yielded []netip.Addr
	// MACs are the hardware addresses of the speaker's interfaces, as it
	// reported them: a claim from one of them is a speaker's, not another
	// host's.
	MACs []string
}

// Has reports whether the speaker has capability c.
func (s State) Has(c string) bool { return slices.Contains(s.Capabilities, c) }

// View is State without its copies: its lists and maps are the
// Manager's own, to be read and never modified. That is safe because the
// Manager never changes them in place: a report replaces each whole, and
// Announcing is an AddrSet, which nothing modifies (a report's patch makes
// a new set that shares the unchanged chunks of the old). For
// readers of every node's state on every change (the planner's gather),
// where State's copies cost O(nodes) allocations per Service.
func (m *Manager) View(node string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return State{Problem: "no speaker session"}, false
	}
	return s.state, true
}

// State returns what is known of node's speaker.
func (m *Manager) State(node string) (State, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.sessions[node]
	if s == nil {
		return State{Problem: "no speaker session"}, false
	}
	st := s.state
	// Announcing is immutable: shared, not copied.
	st.Initial = slices.Clone(st.Initial)
	st.Failed = maps.Clone(st.Failed)
	st.Capabilities = slices.Clone(st.Capabilities)
	st.BGPSessions = slices.Clone(st.BGPSessions)
	st.Conflicts = maps.Clone(st.Conflicts)
	st.Claimed = maps.Clone(st.Claimed)
	st.Yielded = slices.Clone(st.Yielded)
	st.MACs = slices.Clone(st.MACs)
	return st, true
}
