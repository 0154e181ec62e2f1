package bgp

import (
	"context"
	"net/netip"

	"github.com/go-logr/logr"
)

// Speaker is a node's BGP side as the speaker agent uses it: a Reconciler
// over a Router (gobgp in production).
type Speaker struct {
	r  Router
	rc *Reconciler
}

// NewSpeaker returns a Speaker over gobgp that logs to log.
func NewSpeaker(log logr.Logger) *Speaker { return NewSpeakerWith(NewGoBGP(log)) }

// NewSpeakerWith returns a Speaker over r.
func NewSpeakerWith(r Router) *Speaker { return &Speaker{r: r, rc: NewReconciler(r)} }

// Apply makes the node advertise d.
func (s *Speaker) Apply(ctx context.Context, d Desired) error { return s.rc.Apply(ctx, d) }

// Sessions reports the sessions; none while no peer is configured.
func (s *Speaker) Sessions(ctx context.Context) ([]Session, error) {
	if !s.rc.running {
		return nil, nil
	}
	return s.r.Sessions(ctx)
}

// Stop closes every session. Unless graceful, peers drop the routes at
// once.
func (s *Speaker) Stop(ctx context.Context, graceful bool) error { return s.rc.Stop(ctx, graceful) }

// Peers returns the addresses of the peers applied, for tests and logs.
func (s *Speaker) Peers() []netip.Addr { return sortedAddrs(s.rc.peers) }
