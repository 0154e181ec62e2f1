package speaker

// BGP translation: the CCM's BGP set-up (speakerv1.BGPConfig) and the
// VIPs' exports (exports.go) as the Desired state of the BGP side
// (bgp.Desired), applied in bgpapply.go.

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"time"

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
// the agent's exports it was taken at (see exportIndex.applied). cfg and
// index are the set-up and the export index it was built from, compared
// by identity when its result is recorded (recordBGPLocked).
type bgpDesired struct {
	bgp.Desired
	gen   uint64
	cfg   *speakerv1.BGPConfig
	index *exportIndex
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
	d := bgpDesired{gen: a.exports.gen, cfg: a.bgpCfg, index: a.exports}
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

// bgpPeer is one peer of the CCM's set-up as the BGP side takes it, or
// why it cannot be (a bad address).
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
