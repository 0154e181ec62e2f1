package speaker

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/speaker/bgp"
)

// BGPSpeaker is the agent's BGP side (bgp.Speaker; a fake in tests).
type BGPSpeaker interface {
	Apply(ctx context.Context, d bgp.Desired) error
	Sessions(ctx context.Context) ([]bgp.Session, error)
	Stop(ctx context.Context, graceful bool) error
}

// WithBGP gives the agent a BGP side: it then lists the "bgp" capability
// and advertises VIPs to the peers the CCM names.
func WithBGP(b BGPSpeaker) Option { return func(a *Agent) { a.bgp = b } }

// bgpTimeout bounds one reconciliation of the BGP side.
const bgpTimeout = 10 * time.Second

// bgpDesired is what the BGP side should hold, and the generation of
// the agent's exports it was taken at (see exportIndex.applied).
type bgpDesired struct {
	bgp.Desired
	gen uint64
}

// desiredBGPLocked is what the BGP side should hold. Its exports are a
// patch (bgp.Desired.Changed): those of the prefixes changed since the BGP
// side last applied them, unless that apply failed or was not made (then
// the full table, Changed nil). They go also without peers, so that the
// BGP side's table always equals a.exports once an apply succeeded (which
// marks every change up to d.gen applied).
func (a *Agent) desiredBGPLocked() (bgpDesired, error) {
	if a.bgp == nil {
		return bgpDesired{}, nil
	}
	d := bgpDesired{gen: a.exports.gen}
	var err error
	if d.Desired, err = a.bgpSetupLocked(); err != nil {
		return d, err
	}
	if len(d.Peers) > 0 {
		if err := a.exports.err(); err != nil {
			return d, err
		}
	}
	a.bgpExportsLocked(&d.Desired)
	return d, nil
}

// bgpSetupLocked is the CCM's BGP set-up as a Desired without exports
// (nothing when there are no peers), or why it cannot be applied.
func (a *Agent) bgpSetupLocked() (bgp.Desired, error) {
	cfg := a.bgpCfg
	if cfg == nil || len(cfg.GetPeers()) == 0 {
		return bgp.Desired{}, nil
	}
	d := bgp.Desired{ASN: cfg.GetAsn()}
	var err error
	if d.RouterID, err = netip.ParseAddr(cfg.GetRouterId()); err != nil {
		return d, fmt.Errorf("router ID %q: %w", cfg.GetRouterId(), err)
	}
	if s := cfg.GetNextHopV6(); s != "" {
		if d.NextHopV6, err = netip.ParseAddr(s); err != nil {
			return d, fmt.Errorf("IPv6 next hop %q: %w", s, err)
		}
	}
	for _, p := range cfg.GetPeers() {
		peer, err := bgpPeer(p)
		if err != nil {
			return d, err
		}
		d.Peers = append(d.Peers, peer)
	}
	return d, nil
}

// bgpExportsLocked sets d's exports: a patch of the changes since the BGP
// side last applied the exports, O(change); the full table (O(exports))
// when its last apply failed or was not made (a.bgpErr), as the BGP side
// then may not hold the previous Desired the patch would apply to.
func (a *Agent) bgpExportsLocked(d *bgp.Desired) {
	if a.bgpErr == nil {
		d.Exports, d.Changed = a.exports.patch()
		return
	}
	d.Exports, d.Changed = maps.Clone(a.exports.exports), nil
}

func bgpPeer(p *speakerv1.BGPPeer) (bgp.Peer, error) {
	addr, err := netip.ParseAddr(p.GetAddress())
	if err != nil {
		return bgp.Peer{}, fmt.Errorf("peer %s: address %q: %w", p.GetName(), p.GetAddress(), err)
	}
	peer := bgp.Peer{
		Address:       addr,
		Port:          uint16(p.GetPort()),
		PeerASN:       p.GetPeerAsn(),
		MyASN:         p.GetMyAsn(),
		HoldTime:      time.Duration(p.GetHoldTimeSeconds()) * time.Second,
		KeepaliveTime: time.Duration(p.GetKeepaliveSeconds()) * time.Second,
		ConnectRetry:  time.Duration(p.GetConnectRetrySeconds()) * time.Second,
		EBGPMultihop:  uint8(min(p.GetEbgpMultihop(), 255)),
		Password:      p.GetPassword(),
	}
	if b := p.GetBfd(); b != nil {
		peer.BFD = bgp.BFDTimers{
			ReceiveInterval:  time.Duration(b.GetReceiveIntervalMs()) * time.Millisecond,
			TransmitInterval: time.Duration(b.GetTransmitIntervalMs()) * time.Millisecond,
			Multiplier:       uint8(min(b.GetDetectMultiplier(), 255)),
		}
	}
	if g := p.GetGracefulRestart(); g != nil {
		peer.RestartTime = time.Duration(max(g.GetRestartTimeSeconds(), 1)) * time.Second
	}
	if s := p.GetSourceAddress(); s != "" {
		if peer.SourceAddress, err = netip.ParseAddr(s); err != nil {
			return bgp.Peer{}, fmt.Errorf("peer %s: source address %q: %w", p.GetName(), s, err)
		}
	}
	return peer, nil
}

// pollBGP refreshes the reported sessions (and retries a failed apply);
// it reports whether they changed. The caller holds a.applyMu, not a.mu.
func (a *Agent) pollBGP() bool {
	if a.bgp == nil {
		return false
	}
	a.mu.Lock()
	failed := a.bgpErr != nil
	var (
		d    bgpDesired
		derr error
	)
	if failed { // retried; else nothing to build (O(VIPs))
		d, derr = a.desiredBGPLocked()
	}
	a.mu.Unlock()
	if failed {
		berr := a.applyBGP(d, derr)
		a.mu.Lock()
		a.recordBGPLocked(d, berr)
		a.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
	ss, err := a.bgp.Sessions(ctx)
	cancel()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []*speakerv1.BGPSessionStatus
	if err != nil {
		a.log.Error(err, "Cannot read the BGP sessions")
		return false
	}
	for _, s := range ss {
		st := &speakerv1.BGPSessionStatus{
			Peer: s.Peer.String(), State: s.State, LastError: s.LastError, Advertised: uint32(s.Advertised),
		}
		if !s.Since.IsZero() {
			st.SinceUnixMs = s.Since.UnixMilli()
		}
		if b := s.BFD; b != nil {
			st.Bfd = &speakerv1.BFDStatus{
				State: b.State, RemoteState: b.RemoteState, Reason: b.Reason, Flaps: b.Flaps,
				TransmitIntervalMs: uint32(b.TransmitInterval / time.Millisecond),
				DetectTimeMs:       uint32(b.DetectTime / time.Millisecond),
			}
			if !b.Since.IsZero() {
				st.Bfd.SinceUnixMs = b.Since.UnixMilli()
			}
		}
		if a.bgpErr != nil && st.LastError == "" {
			st.LastError = a.bgpErr.Error()
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y *speakerv1.BGPSessionStatus) int {
		switch {
		case x.Peer < y.Peer:
			return -1
		case x.Peer > y.Peer:
			return 1
		}
		return 0
	})
	if slices.EqualFunc(out, a.bgpSessions, func(x, y *speakerv1.BGPSessionStatus) bool { return proto.Equal(x, y) }) {
		return false
	}
	a.bgpSessions = out
	return true
}

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
