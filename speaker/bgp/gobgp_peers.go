package bgp

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v3/api"
)

// apiPeer is p as gobgp configures it: both unicast families, short
// timers, and the idle hold after a reset at one second (gobgp's 30 s
// would keep a session down long after its peer is back).
func apiPeer(p Peer) *api.Peer {
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
	return ap
}

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
		if _, err := s.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(p)}); err != nil {
			return fmt.Errorf("changing peer %s: %w", p.Address, err)
		}
		return nil
	}
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
		return fmt.Errorf("adding peer %s: %w", p.Address, err)
	}
	g.peers[p.Address] = true
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
	if _, err := s.UpdatePeer(ctx, &api.UpdatePeerRequest{Peer: apiPeer(p)}); err != nil {
		return fmt.Errorf("changing peer %s: %w", p.Address, err)
	}
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
