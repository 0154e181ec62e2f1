package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"

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
	// What of it exists in gobgp.
	set, policy, assigned bool
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
	if len(g.doomed) > 0 {
		_ = g.cleanup(ctx, s) // errors are reported by the change that dropped them
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

// addClass creates the class of (e.Peer, attrs) holding e.Prefix. What it
// created before a failure is removed again.
func (g *GoBGP) addClass(ctx context.Context, s *server.BgpServer, e Export, attrs Attributes) (*class, error) {
	actions, err := apiActions(attrs)
	if err != nil {
		return nil, err
	}
	if !g.nsets[e.Peer] {
		if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(e.Peer), List: []string{hostPrefix(e.Peer)},
		}}); err != nil {
			return nil, fmt.Errorf("adding the neighbor set: %w", err)
		}
		g.nsets[e.Peer] = true
	}
	g.next++
	c := &class{name: fmt.Sprintf("ironlb-export-%d", g.next), key: classKey(e.Prefix, attrs), peer: e.Peer, attrs: attrs}
	if err := s.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: prefixSet(c.name, e.Prefix)}); err != nil {
		return nil, fmt.Errorf("adding prefix set %s: %w", c.name, err)
	}
	c.set = true
	policy := &api.Policy{Name: c.name, Statements: []*api.Statement{{
		Name: c.name,
		Conditions: &api.Conditions{
			PrefixSet:   &api.MatchSet{Type: api.MatchSet_ANY, Name: c.name},
			NeighborSet: &api.MatchSet{Type: api.MatchSet_ANY, Name: neighborSet(e.Peer)},
		},
		Actions: actions,
	}}}
	err = s.AddPolicy(ctx, &api.AddPolicyRequest{Policy: policy})
	if err == nil {
		c.policy = true
		err = s.AddPolicyAssignment(ctx, &api.AddPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:      exportPolicyTable,
			Direction: api.PolicyDirection_EXPORT,
			Policies:  []*api.Policy{{Name: c.name}},
		}})
	}
	if err != nil {
		g.doomed = append(g.doomed, c)
		g.cleanup(ctx, s)
		return nil, fmt.Errorf("adding policy %s: %w", c.name, err)
	}
	c.assigned = true
	if g.classes[e.Peer] == nil {
		g.classes[e.Peer] = map[string]*class{}
	}
	g.classes[e.Peer][c.key] = c
	return c, nil
}

// dropClass takes c out of use and removes it from gobgp; what cannot be
// removed now is tried again by every later change (cleanup).
func (g *GoBGP) dropClass(ctx context.Context, s *server.BgpServer, c *class) error {
	delete(g.classes[c.peer], c.key)
	if len(g.classes[c.peer]) == 0 {
		delete(g.classes, c.peer)
	}
	g.doomed = append(g.doomed, c)
	return g.cleanup(ctx, s)
}

// cleanup removes what is left of dropped classes, and the neighbor sets
// of peers without classes.
func (g *GoBGP) cleanup(ctx context.Context, s *server.BgpServer) error {
	var errs []error
	var left []*class
	for _, c := range g.doomed {
		if err := deleteClass(ctx, s, c); err != nil {
			errs = append(errs, err)
			left = append(left, c)
		}
	}
	g.doomed = left
	for peer := range g.nsets {
		if len(g.classes[peer]) > 0 || slices.ContainsFunc(left, func(c *class) bool { return c.peer == peer }) {
			continue
		}
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{All: true, DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(peer),
		}}); err != nil {
			errs = append(errs, fmt.Errorf("deleting the neighbor set of %s: %w", peer, err))
			continue
		}
		delete(g.nsets, peer)
	}
	return errors.Join(errs...)
}

// deleteClass removes c's policy assignment, policy and prefix set, each
// once.
func deleteClass(ctx context.Context, s *server.BgpServer, c *class) error {
	if c.assigned {
		if err := s.DeletePolicyAssignment(ctx, &api.DeletePolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:      exportPolicyTable,
			Direction: api.PolicyDirection_EXPORT,
			Policies:  []*api.Policy{{Name: c.name}},
		}}); err != nil {
			return fmt.Errorf("unassigning policy %s: %w", c.name, err)
		}
		c.assigned = false
	}
	if c.policy {
		if err := s.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: c.name}, All: true}); err != nil {
			return fmt.Errorf("deleting policy %s: %w", c.name, err)
		}
		c.policy = false
	}
	if c.set {
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{All: true, DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_PREFIX, Name: c.name,
		}}); err != nil {
			return fmt.Errorf("deleting prefix set %s: %w", c.name, err)
		}
		c.set = false
	}
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
	if c.prefixes > 1 {
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: prefixSet(c.name, e.Prefix)}); err != nil {
			return fmt.Errorf("unexporting %s from %s: %w", e.Prefix, e.Peer, err)
		}
		c.prefixes--
		delete(g.exports, e)
		return nil
	}
	// Its last prefix: the class goes (and no longer matches, even if
	// gobgp refuses part of its removal now).
	c.prefixes = 0
	delete(g.exports, e)
	if err := g.dropClass(ctx, s, c); err != nil {
		return fmt.Errorf("unexporting %s from %s: %w", e.Prefix, e.Peer, err)
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
