package bgp

import (
	"context"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"google.golang.org/protobuf/types/known/anypb"
)

// AddPath implements Router. IPv4 prefixes have next hop 0.0.0.0, which
// gobgp replaces with the session's local address; IPv6 prefixes have
// nextHopV6 (or :: for the session's own IPv6 address), so that they can
// go over IPv4 sessions too.
func (g *GoBGP) AddPath(ctx context.Context, prefix netip.Prefix, nextHopV6 netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	if _, ok := g.paths[prefix]; ok {
		return nil
	}
	path, err := apiPath(prefix, nextHopV6)
	if err != nil {
		return err
	}
	rsp, err := s.AddPath(ctx, &api.AddPathRequest{TableType: api.TableType_GLOBAL, Path: path})
	if err != nil {
		return fmt.Errorf("advertising %s: %w", prefix, err)
	}
	g.paths[prefix] = rsp.Uuid
	return nil
}

func apiPath(prefix netip.Prefix, nextHopV6 netip.Addr) (*api.Path, error) {
	nlri, err := anypb.New(&api.IPAddressPrefix{PrefixLen: uint32(prefix.Bits()), Prefix: prefix.Addr().String()})
	if err != nil {
		return nil, err
	}
	origin, err := anypb.New(&api.OriginAttribute{Origin: 0}) // IGP
	if err != nil {
		return nil, err
	}
	if prefix.Addr().Is4() {
		nh, err := anypb.New(&api.NextHopAttribute{NextHop: "0.0.0.0"})
		if err != nil {
			return nil, err
		}
		return &api.Path{Family: familyV4, Nlri: nlri, Pattrs: []*anypb.Any{origin, nh}}, nil
	}
	nh := "::"
	if nextHopV6.IsValid() {
		nh = nextHopV6.String()
	}
	mp, err := anypb.New(&api.MpReachNLRIAttribute{Family: familyV6, NextHops: []string{nh}, Nlris: []*anypb.Any{nlri}})
	if err != nil {
		return nil, err
	}
	return &api.Path{Family: familyV6, Nlri: nlri, Pattrs: []*anypb.Any{origin, mp}}, nil
}

// DeletePath implements Router. It always names the path (by its UUID):
// a DeletePath without one would withdraw every path.
func (g *GoBGP) DeletePath(ctx context.Context, prefix netip.Prefix) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	uuid, ok := g.paths[prefix]
	if !ok {
		return nil
	}
	if len(uuid) == 0 {
		return fmt.Errorf("withdrawing %s: no path UUID recorded", prefix)
	}
	if err := s.DeletePath(ctx, &api.DeletePathRequest{TableType: api.TableType_GLOBAL, Uuid: uuid}); err != nil {
		return fmt.Errorf("withdrawing %s: %w", prefix, err)
	}
	delete(g.paths, prefix)
	return nil
}
