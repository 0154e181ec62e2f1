package cpvip

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"

	"github.com/ironlb/ironlb/speaker/bgp"
)

// The BGP mode's pacing.
const (
	// bgpRetry is how often a failed apply is tried again, and the
	// sessions are read for /status.
	bgpRetry = time.Second
	// bgpStopTimeout bounds the planned stop: withdraw, wait for the
	// UPDATE to be written (bgp.Speaker bounds that wait at 1 s), close.
	bgpStopTimeout = 5 * time.Second
	// localDrain is how long the VIP stays a local address after its
	// route was withdrawn: connections the router sent here before it
	// took the withdrawal in are served to their end instead of being
	// cut. A ready node within it keeps the address.
	localDrain = time.Second
)

// BGPSpeaker is the BGP side of BGP mode: bgp.Speaker (the Service
// speaker's gobgp and BFD), a fake in unit tests.
type BGPSpeaker interface {
	Apply(ctx context.Context, d bgp.Desired) error
	Sessions(ctx context.Context) ([]bgp.Session, error)
	Stop(ctx context.Context, graceful bool) error
}

// Local puts the VIP on the node and takes it off: AddLocal and DelLocal,
// fakes in unit tests.
type Local struct {
	Add, Del func(netip.Addr) error
}

// BGP is the control-plane speaker's BGP mode: every node whose
// kube-apiserver is ready advertises the VIP's host route to every router,
// with the VIP a local address while it does. There is no election: the
// routers spread the traffic over the ready nodes (ECMP), and BFD makes
// them drop a lost node within its detection time.
type BGP struct {
	log       logr.Logger
	c         BGPConfig
	password  string
	vip       netip.Addr
	nodeIP    netip.Addr
	speaker   BGPSpeaker
	local     Local
	drain     time.Duration
	afterFunc func(time.Duration) <-chan time.Time
	onLocal   bool // the VIP may be a local address (the runner's only)

	// lastLoop is when the runner's loop last went round (unix ns);
	// applied says the sessions were set up once.
	lastLoop atomic.Int64
	applied  atomic.Bool

	mu       sync.Mutex
	serving  bool
	sessions []BGPSessionStatus
	lastErr  error
}

// NewBGP returns the BGP mode of the node nodeIP for vip, over the Service
// speaker's gobgp and BFD. It reads the password file now.
func NewBGP(log logr.Logger, c BGPConfig, vip, nodeIP netip.Addr) (*BGP, error) {
	return newBGP(log, c, vip, nodeIP, bgp.NewSpeaker(log.WithName("bgp")), Local{Add: AddLocal, Del: DelLocal})
}

func newBGP(log logr.Logger, c BGPConfig, vip, nodeIP netip.Addr, s BGPSpeaker, l Local) (*BGP, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	vip, nodeIP = vip.Unmap(), nodeIP.Unmap()
	if !vip.IsValid() || !nodeIP.IsValid() {
		return nil, fmt.Errorf("VIP %v, node IP %v: both are needed", vip, nodeIP)
	}
	pw, err := readPassword(c.PasswordFile)
	if err != nil {
		return nil, err
	}
	return &BGP{log: log, c: c, password: pw, vip: vip, nodeIP: nodeIP, speaker: s, local: l,
		drain: localDrain, afterFunc: time.After}, nil
}

// Run holds the sessions and advertises the VIP while the latest value
// from ready is true (none yet, or a closed channel: not ready). Going
// ready it puts the VIP on the node, then advertises; going unready it
// withdraws first, then takes the VIP off after localDrain. When ctx ends
// (SIGTERM) it withdraws, waits (bounded) until the withdrawal was written
// to the sessions, closes them, takes the VIP off and returns.
func (b *BGP) Run(ctx context.Context, ready <-chan bool) error {
	want := false
	var drainC <-chan time.Time // the VIP is still local, waiting to go
	// Nothing of this process is advertised yet: a VIP left on the node
	// (a crash) goes at once.
	b.onLocal = true
	b.delLocal()
	b.withdraw(ctx, &drainC)
	retry := time.NewTicker(bgpRetry)
	defer retry.Stop()
	for {
		b.lastLoop.Store(time.Now().UnixNano())
		select {
		case <-ctx.Done():
			return b.stop()
		case r, ok := <-ready:
			if !ok {
				ready, r = nil, false
			}
			if r == want {
				continue
			}
			want = r
			if want {
				drainC = nil
				b.advertise(ctx)
			} else {
				b.withdraw(ctx, &drainC)
			}
		case <-drainC:
			drainC = nil
			b.delLocal()
		case <-retry.C:
			if b.failed() {
				if want {
					b.advertise(ctx)
				} else {
					b.withdraw(ctx, &drainC)
				}
			}
			b.poll(ctx)
		}
	}
}

// advertise puts the VIP on the node, then advertises its route.
func (b *BGP) advertise(ctx context.Context) {
	b.onLocal = true
	if err := b.local.Add(b.vip); err != nil {
		b.setErr(err) // not advertised without the local address
		return
	}
	err := b.speaker.Apply(ctx, b.c.desired(b.password, b.vip, b.nodeIP, true))
	b.mu.Lock()
	wasServing := b.serving
	b.serving, b.lastErr = true, err
	b.mu.Unlock()
	if err != nil {
		b.log.Error(err, "Cannot advertise the VIP (retrying)", "vip", b.vip)
	} else if !wasServing {
		b.log.Info("The apiserver is ready: advertising the VIP", "vip", b.vip)
	}
	b.poll(ctx)
}

// withdraw withdraws the route (keeping the sessions), then schedules the
// VIP's removal from the node.
func (b *BGP) withdraw(ctx context.Context, drainC *<-chan time.Time) {
	err := b.speaker.Apply(ctx, b.c.desired(b.password, b.vip, b.nodeIP, false))
	b.mu.Lock()
	wasServing := b.serving
	b.serving, b.lastErr = false, err
	b.mu.Unlock()
	if err != nil {
		b.log.Error(err, "Cannot withdraw the VIP (retrying)", "vip", b.vip)
		return // the VIP stays local until the route is gone
	}
	b.applied.Store(true)
	if wasServing {
		b.log.Info("The apiserver is not ready: VIP withdrawn", "vip", b.vip)
	}
	if b.onLocal && *drainC == nil {
		*drainC = b.afterFunc(b.drain)
	}
	b.poll(ctx)
}

// delLocal takes the VIP off the node.
func (b *BGP) delLocal() {
	if err := b.local.Del(b.vip); err != nil {
		b.setErr(err)
		return
	}
	b.onLocal = false
}

// stop is the planned stop: withdraw and close (bgp.Speaker's graceful
// stop waits until the withdrawal was written), then the VIP goes.
func (b *BGP) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), bgpStopTimeout)
	defer cancel()
	err := b.speaker.Stop(ctx, true)
	b.mu.Lock()
	b.serving, b.sessions = false, nil
	b.mu.Unlock()
	if b.onLocal {
		select {
		case <-b.afterFunc(b.drain):
		case <-ctx.Done():
		}
	}
	b.log.Info("Stopped: VIP withdrawn, sessions closed", "vip", b.vip)
	return errors.Join(err, b.local.Del(b.vip))
}

func (b *BGP) setErr(err error) {
	b.log.Error(err, "VIP's local address", "vip", b.vip)
	b.mu.Lock()
	b.lastErr = err
	b.mu.Unlock()
}

func (b *BGP) failed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.lastErr != nil
}

// poll reads the sessions for Fill; the runner is the only caller of the
// speaker, so /status never waits for gobgp.
func (b *BGP) poll(ctx context.Context) {
	ss, err := b.speaker.Sessions(ctx)
	if err != nil {
		b.log.Error(err, "Cannot read the BGP sessions")
		return
	}
	out := make([]BGPSessionStatus, 0, len(ss))
	for _, s := range ss {
		st := BGPSessionStatus{Peer: s.Peer.String(), State: s.State, BFD: "off", Advertised: s.Advertised > 0}
		if s.BFD != nil {
			st.BFD = strings.ToLower(s.BFD.State)
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(x, y BGPSessionStatus) int { return strings.Compare(x.Peer, y.Peer) })
	b.mu.Lock()
	b.sessions = out
	b.mu.Unlock()
}

// Fill sets st's BGP mode fields: Mode, Serving (the route is
// advertised) and the sessions as last read (at most bgpRetry ago).
func (b *BGP) Fill(st *Status) {
	b.mu.Lock()
	defer b.mu.Unlock()
	st.Mode = "bgp"
	st.Serving = b.serving
	st.BGP = slices.Clone(b.sessions)
}
