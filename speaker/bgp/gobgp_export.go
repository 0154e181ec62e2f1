package bgp

import (
	"context"
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
)

// class is the prefixes of one family that go to one peer with the same
// attributes (a gobgp prefix set holds one family).
type class struct {
	name     string // of its prefix set, policy and statement
	key      string // classKey
	peer     netip.Addr
	attrs    Attributes
	prefixes int
}

// classKey identifies the class of a prefix with attrs (per peer).
func classKey(p netip.Prefix, attrs Attributes) string {
	if p.Addr().Is4() {
		return "4:" + attrs.key()
	}
	return "6:" + attrs.key()
}

// exportPolicyTable is gobgp's name for the global policy assignment.
const exportPolicyTable = "global"

func neighborSet(peer netip.Addr) string { return "ironlb-peer-" + peer.String() }

func hostPrefix(a netip.Addr) string { return netip.PrefixFrom(a, a.BitLen()).String() }

func prefixSet(name string, p netip.Prefix) *api.DefinedSet {
	return &api.DefinedSet{
		DefinedType: api.DefinedType_PREFIX,
		Name:        name,
		Prefixes: []*api.Prefix{{
			IpPrefix:      p.String(),
			MaskLengthMin: uint32(p.Bits()),
			MaskLengthMax: uint32(p.Bits()),
		}},
	}
}

// Export implements Router.
func (g *GoBGP) Export(ctx context.Context, e Export, attrs Attributes) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	key := classKey(e.Prefix, attrs)
	if old, ok := g.exports[e]; ok {
		if old.key == key {
			return nil
		}
		if err := g.unexport(ctx, s, e, old); err != nil {
			return err
		}
	}
	c, ok := g.classes[e.Peer][key]
	if ok {
		if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(c.name, e.Prefix)}); err != nil {
			return fmt.Errorf("exporting %s to %s: %w", e.Prefix, e.Peer, err)
		}
	} else if c, err = g.addClass(ctx, s, e, attrs); err != nil {
		return fmt.Errorf("exporting %s to %s: %w", e.Prefix, e.Peer, err)
	}
	c.prefixes++
	g.exports[e] = c
	return nil
}

// addClass creates the class of (e.Peer, attrs) holding e.Prefix.
func (g *GoBGP) addClass(ctx context.Context, s *server.BgpServer, e Export, attrs Attributes) (*class, error) {
	if len(g.classes[e.Peer]) == 0 {
		if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(e.Peer), List: []string{hostPrefix(e.Peer)},
		}}); err != nil {
			return nil, fmt.Errorf("adding the neighbor set: %w", err)
		}
	}
	g.next++
	c := &class{name: fmt.Sprintf("ironlb-export-%d", g.next), key: classKey(e.Prefix, attrs), peer: e.Peer, attrs: attrs}
	if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(c.name, e.Prefix)}); err != nil {
		return nil, fmt.Errorf("adding prefix set %s: %w", c.name, err)
	}
	actions, err := apiActions(attrs)
	if err != nil {
		return nil, err
	}
	policy := &api.Policy{Name: c.name, Statements: []*api.Statement{{
		Name: c.name,
		Conditions: &api.Conditions{
			PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: c.name},
			NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: neighborSet(e.Peer)},
		},
		Actions: actions,
	}}}
	if err := s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy}); err != nil {
		return nil, fmt.Errorf("adding policy %s: %w", c.name, err)
	}
	if err := s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:      exportPolicyTable,
		Direction: api.PolicyDirection_EXPORT,
		Policies:  []*api.Policy{{Name: c.name}},
	}}); err != nil {
		return nil, fmt.Errorf("assigning policy %s: %w", c.name, err)
	}
	if g.classes[e.Peer] == nil {
		g.classes[e.Peer] = map[string]*class{}
	}
	g.classes[e.Peer][c.key] = c
	return c, nil
}

// deleteClass removes c's policy and prefix set.
func (g *GoBGP) deleteClass(ctx context.Context, s *server.BgpServer, c *class) error {
	if err := s.DeletePolicyAssignment(ctx, &api.DeletePolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Name:      exportPolicyTable,
		Direction: api.PolicyDirection_EXPORT,
		Policies:  []*api.Policy{{Name: c.name}},
	}}); err != nil {
		return fmt.Errorf("unassigning policy %s: %w", c.name, err)
	}
	if err := s.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: c.name}, All: true}); err != nil {
		return fmt.Errorf("deleting policy %s: %w", c.name, err)
	}
	if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{All: true, DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_PREFIX, Name: c.name,
	}}); err != nil {
		return fmt.Errorf("deleting prefix set %s: %w", c.name, err)
	}
	delete(g.classes[c.peer], c.key)
	return nil
}

// Unexport implements Router.
func (g *GoBGP) Unexport(ctx context.Context, e Export) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	c, ok := g.exports[e]
	if !ok {
		return nil
	}
	return g.unexport(ctx, s, e, c)
}

func (g *GoBGP) unexport(ctx context.Context, s *server.BgpServer, e Export, c *class) error {
	delete(g.exports, e)
	c.prefixes--
	if c.prefixes > 0 {
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: prefixSet(c.name, e.Prefix)}); err != nil {
			return fmt.Errorf("unexporting %s from %s: %w", e.Prefix, e.Peer, err)
		}
		return nil
	}
	if err := g.deleteClass(ctx, s, c); err != nil {
		return fmt.Errorf("unexporting %s from %s: %w", e.Prefix, e.Peer, err)
	}
	if len(g.classes[e.Peer]) == 0 {
		delete(g.classes, e.Peer)
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{All: true, DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(e.Peer),
		}}); err != nil {
			return fmt.Errorf("deleting the neighbor set of %s: %w", e.Peer, err)
		}
	}
	return nil
}

// Refresh implements Router: a soft reset out re-runs the export policy
// over every path for the peer.
func (g *GoBGP) Refresh(ctx context.Context, peer netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	if err := s.ResetPeer(ctx, &api.ResetPeerRequest{
		Address: peer.String(), Soft: true, Direction: api.ResetPeerRequest_OUT,
	}); err != nil {
		return fmt.Errorf("refreshing peer %s: %w", peer, err)
	}
	return nil
}
