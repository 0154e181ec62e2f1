package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// apiPeer is p as gobgp configures it: both unicast families, short
// timers, and the idle hold after a reset at one second (gobgp's 30 s
// would keep a session down long after its peer is back). With graceful
// restart, restarting says the speaker has just started: its OPEN then
// carries the Restart State and Forwarding State bits, which tell a
// router keeping this node's routes from before to keep them until the
// End-of-RIB marker, and gobgp sends its table (then the marker) once it
// has the router's marker, or after the selection deferral time.
func apiPeer(p Peer, restarting bool) *api.Peer {
	port := uint32(p.Port)
	if port == 0 {
		port = 179
	}
	keepalive := p.KeepaliveTime
	if keepalive == 0 {
		keepalive = p.HoldTime / 3
	}
	ap := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.PeerASN,
			LocalAsn:        p.MyASN,
			AuthPassword:    p.Password,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:           seconds(p.ConnectRetry),
			HoldTime:               seconds(p.HoldTime),
			KeepaliveInterval:      seconds(keepalive),
			IdleHoldTimeAfterReset: 1,
		}},
		Transport: &api.Transport{RemotePort: port},
		AfiSafis: []*api.AfiSafi{
			{Config: &api.AfiSafiConfig{Family: familyV4, Enabled: true}},
			{Config: &api.AfiSafiConfig{Family: familyV6, Enabled: true}},
		},
	}
	if p.SourceAddress.IsValid() {
		ap.Transport.LocalAddress = p.SourceAddress.String()
	}
	if p.EBGPMultihop > 0 {
		ap.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: uint32(p.EBGPMultihop)}
	}
	if p.RestartTime > 0 {
		ap.GracefulRestart = &api.GracefulRestart{
			Enabled:         true,
			RestartTime:     uint32(min(seconds(p.RestartTime), 4095)),
			DeferralTime:    uint32(selectionDeferral / time.Second),
			LocalRestarting: restarting,
		}
		for _, af := range ap.AfiSafis {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
	}
	return ap
}

// selectionDeferral bounds how long a restarted speaker waits for a
// router's End-of-RIB marker before it sends its table anyway (gobgp's
// default is 360 s).
const selectionDeferral = 5 * time.Second

func seconds(d time.Duration) uint64 {
	s := uint64((d + time.Second - 1) / time.Second)
	return s
}

var (
	familyV4 = &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST}
	familyV6 = &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST}
)

// AddPeer implements Router.
func (g *GoBGP) AddPeer(ctx context.Context, p Peer) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	if g.peers[p.Address] {
		return g.updatePeerLocked(ctx, s, p)
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p, true)}); err != nil {
		return fmt.Errorf("adding peer %s: %w", p.Address, err)
	}
	g.peers[p.Address] = true
	g.conf[p.Address] = p
	return nil
}

// UpdatePeer implements Router.
func (g *GoBGP) UpdatePeer(ctx context.Context, p Peer) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	return g.updatePeerLocked(ctx, s, p)
}

// updatePeerLocked changes a peer. gobgp re-opens the session by itself
// for what the OPEN message carries (AS numbers, addresses, graceful
// restart); the hold time is negotiated in it too, but gobgp only records
// a new one: the session is reset so that it applies.
func (g *GoBGP) updatePeerLocked(ctx context.Context, s *server.BgpServer, p Peer) error {
	if _, err := s.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(p, false)}); err != nil {
		return fmt.Errorf("changing peer %s: %w", p.Address, err)
	}
	if old, had := g.conf[p.Address]; had && (old.HoldTime != p.HoldTime || old.KeepaliveTime != p.KeepaliveTime) {
		if err := s.ResetPeer(ctx, &api.ResetPeerRequest{Address: p.Address.String(), Communication: "hold time changed"}); err != nil {
			// The old timers stay recorded: the next change tries again.
			return fmt.Errorf("resetting peer %s for its new hold time: %w", p.Address, err)
		}
	}
	g.conf[p.Address] = p
	return nil
}

// ResetPeer implements Router: it closes the peer's session with a Cease
// notification (Administrative Reset) naming why; gobgp reconnects after
// the idle hold time. It does not wait for an Apply in progress.
func (g *GoBGP) ResetPeer(ctx context.Context, addr netip.Addr, why string) error {
	g.mu.Lock()
	s, err := g.server()
	known := g.peers[addr]
	g.mu.Unlock()
	if err != nil || !known {
		return err
	}
	if err := s.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Communication: why}); err != nil {
		return fmt.Errorf("resetting peer %s: %w", addr, err)
	}
	g.recordError(addr, "reset: "+why)
	return nil
}

// DeletePeer implements Router. Its export classes go with it. It is
// idempotent: called again after an error, it finishes what is left.
func (g *GoBGP) DeletePeer(ctx context.Context, addr netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	if g.peers[addr] {
		if err := s.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			return fmt.Errorf("deleting peer %s: %w", addr, err)
		}
		delete(g.peers, addr)
		delete(g.conf, addr)
	}
	for e := range g.exports {
		if e.Peer == addr {
			delete(g.exports, e)
		}
	}
	for _, c := range g.classes[addr] {
		c.prefixes = 0
		delete(g.classes[addr], c.key)
		g.doomed = append(g.doomed, c)
	}
	delete(g.classes, addr)
	if err := g.cleanup(ctx, s); err != nil {
		// The peer is gone; its leftovers are removed by later changes.
		g.log.Error(err, "Removing the export policies of a deleted peer", "peer", addr)
	}
	return nil
}
