package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v3/api"
	"github.com/osrg/gobgp/v3/pkg/server"
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
	peers   map[netip.Addr]bool     // peers configured in gobgp
	nsets   map[netip.Addr]bool     // peers with a neighbor set
	conf    map[netip.Addr]Peer     // each peer as configured
	doomed  []*class                // dropped classes not yet fully removed
	next    int                     // numbers class names

	errMu   sync.Mutex
	lastErr map[netip.Addr]string // why each peer's session last failed
}

var _ Router = (*GoBGP)(nil)

// NewGoBGP returns a stopped gobgp Router that logs to log.
func NewGoBGP(log logr.Logger) *GoBGP {
	return &GoBGP{log: log, lastErr: map[netip.Addr]string{}}
}

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
	g.peers = map[netip.Addr]bool{}
	g.nsets = map[netip.Addr]bool{}
	g.conf = map[netip.Addr]Peer{}
	g.doomed = nil
	return nil
}

// Stop implements Router. gobgp v3 always sends a Cease notification when
// it stops (and its Serve goroutine never ends): a graceful Stop closes
// the sessions of peers without graceful restart one by one and leaves
// the others, and the server, to the process's exit.
func (g *GoBGP) Stop(ctx context.Context, graceful bool) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.srv == nil {
		return nil
	}
	if !graceful {
		g.srv.Stop()
		g.srv = nil
		return nil
	}
	var errs []error
	for addr := range g.peers {
		if g.conf[addr].RestartTime > 0 {
			continue
		}
		if err := g.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			errs = append(errs, fmt.Errorf("closing the session with %s: %w", addr, err))
		}
	}
	g.srv = nil // left running for the exit
	return errors.Join(errs...)
}

func (g *GoBGP) server() (*server.BgpServer, error) {
	if g.srv == nil {
		return nil, errors.New("bgp: not started")
	}
	return g.srv, nil
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
		ss.UpdatesSent = p.GetState().GetMessages().GetSent().GetUpdate()
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
