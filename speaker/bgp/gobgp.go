package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
	"google.golang.org/protobuf/types/known/anypb"
)

// GoBGP is the Router of the speaker: an embedded gobgp server that never
// listens. What goes to which peer is a global export policy whose
// default is to reject: one policy per (peer, attributes) class, whose one
// statement matches the peer (a neighbor set) and the class's prefixes (a
// prefix set) and sets the attributes.
type GoBGP struct {
	log logr.Logger

	mu      sync.Mutex
	srv     *server.BgpServer
	classes map[netip.Addr]map[string]*class // peer → attributes key → class
	exports map[Export]*class
	paths   map[netip.Prefix][]byte // prefix → path UUID
	next    int                     // numbers class names

	errMu   sync.Mutex
	lastErr map[netip.Addr]string // why each peer's session last failed
}

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

var _ Router = (*GoBGP)(nil)

// NewGoBGP returns a stopped gobgp Router that logs to log.
func NewGoBGP(log logr.Logger) *GoBGP {
	return &GoBGP{log: log, lastErr: map[netip.Addr]string{}}
}

// exportPolicyTable is gobgp's name for the global policy assignment.
const exportPolicyTable = "global"

// Start implements Router.
func (g *GoBGP) Start(ctx context.Context, asn uint32, routerID netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv != nil {
		return errors.New("bgp: already started")
	}
	s := server.NewBgpServer(server.LoggerOption(newLogAdapter(g.log, g.recordPeerEvent)))
	go s.Serve()
	err := s.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        asn,
		RouterId:   routerID.String(),
		ListenPort: -1, // never listen: the speaker only dials its peers
	}})
	if err == nil {
		err = s.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
			Name:          exportPolicyTable,
			Direction:     api.PolicyDirection_EXPORT,
			DefaultAction: api.RouteAction_REJECT,
		}})
	}
	if err != nil {
		s.Stop()
		return fmt.Errorf("starting BGP as AS %d, router ID %s: %w", asn, routerID, err)
	}
	g.srv = s
	g.classes = map[netip.Addr]map[string]*class{}
	g.exports = map[Export]*class{}
	g.paths = map[netip.Prefix][]byte{}
	return nil
}

// Stop implements Router. A graceful stop closes the sockets without a
// Cease notification, so that peers with graceful restart keep the
// routes.
func (g *GoBGP) Stop(ctx context.Context, graceful bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv == nil {
		return nil
	}
	var err error
	if !graceful {
		err = g.srv.StopBgp(ctx, &api.StopBgpRequest{})
	}
	g.srv.Stop()
	g.srv = nil
	return err
}

func (g *GoBGP) server() (*server.BgpServer, error) {
	if g.srv == nil {
		return nil, errors.New("bgp: not started")
	}
	return g.srv, nil
}

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
	if err := s.AddPeer(ctx, &api.AddPeerRequest{Peer: apiPeer(p)}); err != nil {
		return fmt.Errorf("adding peer %s: %w", p.Address, err)
	}
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

// DeletePeer implements Router. Its export classes go with it.
func (g *GoBGP) DeletePeer(ctx context.Context, addr netip.Addr) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	s, err := g.server()
	if err != nil {
		return err
	}
	if err := s.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
		return fmt.Errorf("deleting peer %s: %w", addr, err)
	}
	hadClasses := len(g.classes[addr]) > 0
	for e, c := range g.exports {
		if e.Peer == addr {
			delete(g.exports, e)
			c.prefixes--
		}
	}
	for _, c := range g.classes[addr] {
		if err := g.deleteClass(ctx, s, c); err != nil {
			return err
		}
	}
	if hadClasses {
		if err := s.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{All: true, DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_NEIGHBOR, Name: neighborSet(addr),
		}}); err != nil {
			return fmt.Errorf("deleting the neighbor set of %s: %w", addr, err)
		}
	}
	delete(g.classes, addr)
	return nil
}

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

// Sessions implements Router.
func (g *GoBGP) Sessions(ctx context.Context) ([]Session, error) {
	g.mu.Lock()
	s, err := g.server()
	g.mu.Unlock()
	if err != nil {
		return nil, err
	}
	var out []Session
	err = s.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		ss := Session{Peer: addr, State: stateName(p.GetState().GetSessionState())}
		t := p.GetTimers().GetState()
		if ss.State == "Established" && t.GetUptime() != nil {
			ss.Since = t.GetUptime().AsTime()
		} else if t.GetDowntime() != nil {
			ss.Since = t.GetDowntime().AsTime()
		}
		for _, af := range p.GetAfiSafis() {
			ss.Advertised += int(af.GetState().GetAdvertised())
		}
		g.errMu.Lock()
		ss.LastError = g.lastErr[addr]
		g.errMu.Unlock()
		out = append(out, ss)
	})
	if err != nil {
		return nil, fmt.Errorf("listing peers: %w", err)
	}
	return out, nil
}

func stateName(s api.PeerState_SessionState) string {
	switch s {
	case api.PeerState_IDLE:
		return "Idle"
	case api.PeerState_CONNECT:
		return "Connect"
	case api.PeerState_ACTIVE:
		return "Active"
	case api.PeerState_OPENSENT:
		return "OpenSent"
	case api.PeerState_OPENCONFIRM:
		return "OpenConfirm"
	case api.PeerState_ESTABLISHED:
		return "Established"
	}
	return "Unknown"
}
