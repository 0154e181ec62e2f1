package bgp

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker/bfd"
)

// BFD is the BFD side of a Speaker: bfd.Server, a fake in unit tests.
type BFD interface {
	Configure(ctx context.Context, cfgs []bfd.Config) error
	Sessions() []bfd.Status
	Close() error
}

// Speaker is a node's BGP side as the speaker agent uses it: a Reconciler
// over a Router (gobgp in production) and a BFD session with each peer
// that asks for one. When a BFD session that was Up goes Down (the router
// is lost, not turned off), the Speaker resets that BGP session at once.
type Speaker struct {
	log logr.Logger
	r   Router
	rc  *Reconciler
	bfd BFD

	mu      sync.Mutex
	bfdWas  map[netip.Addr]bfd.State // last State each BFD session reported
	stopped bool                     // after a graceful Stop: nothing to reset
}

// NewSpeaker returns a Speaker over gobgp and the bfd package that logs
// to log.
func NewSpeaker(log logr.Logger) *Speaker {
	s := &Speaker{log: log, r: NewGoBGP(log)}
	s.init(bfd.NewServer(bfd.WithLogger(log.WithName("bfd")), bfd.WithOnChange(s.BFDChanged)))
	return s
}

// NewSpeakerWith returns a Speaker over r and b; b's state changes must
// be given to BFDChanged.
func NewSpeakerWith(log logr.Logger, r Router, b BFD) *Speaker {
	s := &Speaker{log: log, r: r}
	s.init(b)
	return s
}

func (s *Speaker) init(b BFD) {
	s.rc = NewReconciler(s.r)
	s.bfd = b
	s.bfdWas = map[netip.Addr]bfd.State{}
}

// Apply makes the node advertise d (a patch when d.Changed is not nil:
// see Desired) and hold a BFD session with each of its peers that has BFD
// timers.
func (s *Speaker) Apply(ctx context.Context, d Desired) error {
	err := s.rc.Apply(ctx, d)
	cfgs := bfdConfigs(d.Peers)
	s.mu.Lock()
	for peer := range s.bfdWas {
		if !slices.ContainsFunc(cfgs, func(c bfd.Config) bool { return c.Peer == peer }) {
			delete(s.bfdWas, peer)
		}
	}
	s.mu.Unlock()
	return errors.Join(err, s.bfd.Configure(ctx, cfgs))
}

// bfdConfigs are the BFD sessions of peers: single hop, or multihop
// (accepting as many hops as the BGP session's TTL) for eBGP multihop
// peers, from the BGP session's source address.
func bfdConfigs(peers []Peer) []bfd.Config {
	var out []bfd.Config
	for _, p := range peers {
		if !p.BFD.Enabled() {
			continue
		}
		out = append(out, bfd.Config{
			Peer:             p.Address,
			Local:            p.SourceAddress,
			Multihop:         p.EBGPMultihop > 0,
			MaxHops:          p.EBGPMultihop,
			DesiredMinTx:     p.BFD.TransmitInterval,
			RequiredMinRx:    p.BFD.ReceiveInterval,
			DetectMultiplier: p.BFD.Multiplier,
		})
	}
	return out
}

// BFDChanged is told every state change of a BFD session. It resets the
// BGP session of a peer whose BFD session went from Up to Down because the
// peer was lost (not because the router turned BFD off: RFC 5882 §3.2).
func (s *Speaker) BFDChanged(st bfd.Status) {
	s.mu.Lock()
	was, known := s.bfdWas[st.Peer]
	s.bfdWas[st.Peer] = st.State
	stopped := s.stopped
	s.mu.Unlock()
	if stopped || !known || was != bfd.Up || st.State != bfd.Down || st.RemoteState == bfd.AdminDown {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.r.ResetPeer(ctx, st.Peer, "BFD session down: "+st.Reason); err != nil {
		s.log.Error(err, "Cannot reset the BGP session after BFD went down", "peer", st.Peer)
	}
}

// Sessions reports the sessions, each with its BFD session; none while
// no peer is configured.
func (s *Speaker) Sessions(ctx context.Context) ([]Session, error) {
	if !s.rc.running {
		return nil, nil
	}
	ss, err := s.r.Sessions(ctx)
	if err != nil {
		return nil, err
	}
	byPeer := map[netip.Addr]bfd.Status{}
	for _, b := range s.bfd.Sessions() {
		byPeer[b.Peer] = b
	}
	for i := range ss {
		if b, ok := byPeer[ss[i].Peer]; ok {
			ss[i].BFD = &BFDSession{
				State: b.State.String(), RemoteState: b.RemoteState.String(), Since: b.Since, Reason: b.Reason,
				TransmitInterval: b.TxInterval, DetectTime: b.DetectTime, Flaps: b.Flaps,
			}
		}
	}
	return ss, nil
}

// withdrawWait bounds how long a planned Stop waits for the withdrawals
// to reach peers without graceful restart before it closes their
// sessions; withdrawQuiet is how long their UPDATE counters must stand
// still, once they moved, to count as sent.
const (
	withdrawWait  = time.Second
	withdrawQuiet = 50 * time.Millisecond
)

// Stop closes every session. Unless graceful, peers drop the routes at
// once. A graceful Stop is a planned one (the speaker is being restarted
// or removed): peers without graceful restart are sent the withdrawal of
// every route, then their BFD and BGP sessions are closed (BFD with
// AdminDown, sent in the background); peers with graceful restart are sent
// nothing and their sessions are left for the process's exit to close
// (with their BFD sessions), so that they keep the node's routes until the
// new speaker has advertised them again. The Speaker cannot be used after
// a graceful Stop.
func (s *Speaker) Stop(ctx context.Context, graceful bool) error {
	if !graceful || !s.rc.running {
		return errors.Join(s.bfd.Close(), s.rc.Stop(ctx, false))
	}
	// The last Desired with the full export table, Changed nil: what is
	// applied below replaces it.
	d := s.rc.Desired()
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	keep := map[netip.Addr]bool{}
	var gr []Peer
	for _, p := range d.Peers {
		if p.RestartTime > 0 {
			keep[p.Address] = true
			gr = append(gr, p)
		}
	}
	exports := map[Export]Attributes{}
	withdrawn := map[netip.Addr]bool{} // peers that are sent withdrawals
	for e, a := range d.Exports {
		if keep[e.Peer] {
			exports[e] = a
		} else {
			withdrawn[e.Peer] = true
		}
	}
	d.Exports = exports
	before := s.updatesSent(ctx)
	var errs []error
	if err := s.rc.Apply(ctx, d); err != nil {
		errs = append(errs, err)
	}
	s.waitWithdrawn(ctx, withdrawn, before)
	// AdminDown to the others. The BFD sessions with graceful-restart
	// peers keep running until the process exits, like their BGP
	// sessions: a router would take a BFD Down (or AdminDown: FRR does)
	// while the BGP session is up for a failure and drop the routes; once
	// the BGP session is closed without a notification it keeps them.
	if err := s.bfd.Configure(ctx, bfdConfigs(gr)); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(append(errs, s.rc.Stop(ctx, true))...)
}

// updatesSent counts the UPDATE messages written to each Established
// session.
func (s *Speaker) updatesSent(ctx context.Context) map[netip.Addr]uint64 {
	ss, err := s.r.Sessions(ctx)
	if err != nil {
		return nil
	}
	out := map[netip.Addr]uint64{}
	for _, x := range ss {
		if x.State == "Established" {
			out[x.Peer] = x.UpdatesSent
		}
	}
	return out
}

// waitWithdrawn waits (at most withdrawWait) until every Established
// session of peers has written UPDATE messages since before and then
// nothing more for withdrawQuiet: gobgp sends asynchronously, and closing
// a session drops what it has not written yet. (Its count of advertised
// routes follows the export policy at once, so it is no sign.)
func (s *Speaker) waitWithdrawn(ctx context.Context, peers map[netip.Addr]bool, before map[netip.Addr]uint64) {
	ctx, cancel := context.WithTimeout(ctx, withdrawWait)
	defer cancel()
	last := map[netip.Addr]uint64{}
	since := map[netip.Addr]time.Time{}
	for {
		now := time.Now()
		cur := s.updatesSent(ctx)
		done := true
		for p := range peers {
			n, up := cur[p]
			b, was := before[p]
			if !up || !was {
				continue // not Established: nothing to send on
			}
			if n != last[p] {
				last[p], since[p] = n, now
			}
			if n == b || now.Sub(since[p]) < withdrawQuiet {
				done = false
			}
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			s.log.Info("Closing BGP sessions before every withdrawal was seen sent")
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Peers returns the addresses of the peers applied, for tests and logs.
func (s *Speaker) Peers() []netip.Addr { return sortedAddrs(s.rc.peers) }
