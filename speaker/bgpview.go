package speaker

// The /bgp view: BGPState, what the agent shows of its BGP side (the
// sessions as last polled, the routes it advertises and to whom), built
// from the agent's state under a.mu without calling the BGP side.

import (
	"slices"
	"strings"
	"time"
)

// BGPState is what /bgp shows: the sessions as last polled, and each
// advertised route with the peers it goes to. Passwords are not in it.
type BGPState struct {
	Sessions []BGPSessionView `json:"sessions"`
	Routes   []BGPRouteView   `json:"routes"`
	Error    string           `json:"error,omitempty"`
}

// BGPSessionView is one session in BGPState.
type BGPSessionView struct {
	Peer       string   `json:"peer"`
	State      string   `json:"state"`
	LastError  string   `json:"lastError,omitempty"`
	Advertised uint32   `json:"advertised"`
	BFD        *BFDView `json:"bfd,omitempty"`
}

// BFDView is a session's BFD session in BGPState.
type BFDView struct {
	State            string `json:"state"`
	RemoteState      string `json:"remoteState"`
	Reason           string `json:"reason,omitempty"`
	TransmitInterval string `json:"transmitInterval"`
	DetectTime       string `json:"detectTime"`
	Flaps            uint64 `json:"flaps"`
}

// BGPRouteView is one advertised route in BGPState.
type BGPRouteView struct {
	Prefix           string   `json:"prefix"`
	Peer             string   `json:"peer"`
	Communities      []string `json:"communities,omitempty"`
	LargeCommunities []string `json:"largeCommunities,omitempty"`
	LocalPref        *uint32  `json:"localPref,omitempty"`
	MED              *uint32  `json:"med,omitempty"`
}

// BGPState reports the BGP side for /bgp.
func (a *Agent) BGPState() BGPState {
	a.mu.Lock()
	defer a.mu.Unlock()
	st := BGPState{Sessions: []BGPSessionView{}, Routes: []BGPRouteView{}}
	if a.bgpErr != nil {
		st.Error = a.bgpErr.Error()
	}
	for _, s := range a.bgpSessions {
		v := BGPSessionView{Peer: s.GetPeer(), State: s.GetState(), LastError: s.GetLastError(), Advertised: s.GetAdvertised()}
		if b := s.GetBfd(); b != nil {
			v.BFD = &BFDView{State: b.GetState(), RemoteState: b.GetRemoteState(), Reason: b.GetReason(), Flaps: b.GetFlaps(),
				TransmitInterval: (time.Duration(b.GetTransmitIntervalMs()) * time.Millisecond).String(),
				DetectTime:       (time.Duration(b.GetDetectTimeMs()) * time.Millisecond).String()}
		}
		st.Sessions = append(st.Sessions, v)
	}
	// The set-up alone: building a Desired would copy or patch the exports.
	if d, err := a.bgpSetupLocked(); a.bgp == nil || err != nil || len(d.Peers) == 0 || a.exports.err() != nil {
		return st
	}
	for e, attrs := range a.exports.exports {
		st.Routes = append(st.Routes, BGPRouteView{Prefix: e.Prefix.String(), Peer: e.Peer.String(),
			Communities: attrs.Communities, LargeCommunities: attrs.LargeCommunities, LocalPref: attrs.LocalPref, MED: attrs.MED})
	}
	slices.SortFunc(st.Routes, func(x, y BGPRouteView) int {
		if c := strings.Compare(x.Prefix, y.Prefix); c != 0 {
			return c
		}
		return strings.Compare(x.Peer, y.Peer)
	})
	return st
}
