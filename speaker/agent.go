package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/internal/version"
)

// Announcer answers for addresses on one interface. The layer-2 responder
// implements it; tests may use a fake.
type Announcer interface {
	// Announce starts answering for addr; it is idempotent.
	Announce(addr netip.Addr) error
	// Withdraw stops answering for addr before it returns.
	Withdraw(addr netip.Addr) error
	// Err reports why the announcer cannot work, nil while healthy.
	Err() error
	// Close withdraws everything and releases the interface.
	Close() error
}

// AnnouncerFactory opens an Announcer on an interface.
type AnnouncerFactory func(ifi *net.Interface) (Announcer, error)

// Capabilities are what this speaker can do, listed in its reports (with
// CapabilityBGP and CapabilityBGPMED when it has a BGP side, and
// CapabilityReattest and CapabilityTrustBundle when it has credentials).
var Capabilities = []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing}

// capabilities are what this agent can do.
func (a *Agent) capabilities() []string {
	c := slices.Clone(Capabilities)
	if a.bgp != nil {
		c = append(c, speakerv1.CapabilityBGP, speakerv1.CapabilityBGPMED)
	}
	if a.creds != nil {
		c = append(c, speakerv1.CapabilityReattest, speakerv1.CapabilityTrustBundle)
	}
	return c
}

// Agent is the speaker's state: the VIPs the CCM assigned to this node and
// the announcers answering for them. It serves the Speaker gRPC API.
// Assignments survive the loss of the CCM: only a CCM's instruction or
// Close withdraws them. Run keeps the announcers working while interfaces
// come and go.
type Agent struct {
	speakerv1.UnimplementedSpeakerServer

	node       string
	defaultIfc string
	open       AnnouncerFactory
	log        logr.Logger
	local      LocalAddresses
	allowed    []netip.Prefix // --allowed-cidrs; none: no limit
	interfaces func(name string) (*net.Interface, error)
	creds      Credentials // nil: no enrollment (tests)

	mu         sync.Mutex
	vips       map[netip.Addr]*vip
	announcers map[string]*openAnnouncer // by interface name
	openErr    map[string]error          // interfaces that could not be opened
	held       map[netip.Addr]string     // the node's own addresses; nil: list them again
	term       uint64                    // highest leader term accepted
	leader     string                    // the leader of that term
	stream     uint64                    // the stream whose instructions count
	nextStream uint64
	applied    uint64
	streams    map[uint64]*streamState // open Sync streams
	trustGen   uint64                  // the creds' TrustGeneration the streams were checked at
	closed     bool
	changed    chan struct{} // closed and replaced when the reported state changes
	lastTick   time.Time     // last pass of Run, for liveness

	bgp         BGPSpeaker           // nil: no BGP
	bgpCfg      *speakerv1.BGPConfig // the CCM's BGP set-up; nil: none
	bgpErr      error                // why the last apply failed
	bgpSessions []*speakerv1.BGPSessionStatus
}

type vip struct {
	service    string
	interfaces []string // where it should be announced
	announced  []string // where it is announced
	err        error
	refused    bool // the node must not announce it at all (see refuse)
	bgpOnly    bool // no layer 2
	bgp        []*speakerv1.BGPAdvertisement
}

// announcement is v as the CCM sent it, to apply again.
func (v *vip) announcement(addr netip.Addr) *speakerv1.Announcement {
	return &speakerv1.Announcement{Address: addr.String(), Service: v.service, Interfaces: v.interfaces, BgpOnly: v.bgpOnly, Bgp: v.bgp}
}

// openAnnouncer is an announcer and the interface index it was opened on:
// an interface deleted and re-created under the same name gets a new index,
// and the announcer must be opened again.
type openAnnouncer struct {
	Announcer
	index int
}

var _ speakerv1.SpeakerServer = (*Agent)(nil)

// Option configures an Agent.
type Option func(*Agent)

// WithLocalAddresses replaces how the agent finds the addresses its node's
// interfaces hold (tests).
func WithLocalAddresses(fn LocalAddresses) Option { return func(a *Agent) { a.local = fn } }

// WithInterfaceLookup replaces net.InterfaceByName (tests).
func WithInterfaceLookup(fn func(name string) (*net.Interface, error)) Option {
	return func(a *Agent) { a.interfaces = fn }
}

// NewAgent returns an Agent for node. VIPs whose announcement names no
// interface are announced on defaultInterface.
func NewAgent(node, defaultInterface string, open AnnouncerFactory, log logr.Logger, opts ...Option) *Agent {
	a := &Agent{
		node:       node,
		defaultIfc: defaultInterface,
		open:       open,
		log:        log,
		local:      NodeAddresses,
		interfaces: net.InterfaceByName,
		vips:       map[netip.Addr]*vip{},
		announcers: map[string]*openAnnouncer{},
		openErr:    map[string]error{},
		streams:    map[uint64]*streamState{},
		changed:    make(chan struct{}),
		lastTick:   time.Now(),
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// notifyLocked wakes the streams so they report the new state; a.mu is
// held.
func (a *Agent) notifyLocked() {
	close(a.changed)
	a.changed = make(chan struct{})
}

// Addresses returns the VIPs the agent announces, sorted.
func (a *Agent) Addresses() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for addr, v := range a.vips {
		if v.err == nil {
			out = append(out, addr)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Close withdraws every VIP and closes the announcers, as the speaker
// does when it is stopped on purpose: BGP peers with graceful restart keep
// the node's routes (the process's exit closes their sessions without a
// notification), the others are sent the withdrawals before their
// sessions close. Later instructions are ignored.
func (a *Agent) Close() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	a.closed = true
	for addr := range a.vips {
		a.withdrawLocked(addr)
	}
	var errs []error
	for name, ann := range a.announcers {
		if err := ann.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing announcer on %s: %w", name, err))
		}
	}
	a.announcers = map[string]*openAnnouncer{}
	if a.bgp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
		// A planned stop: peers with graceful restart keep the routes.
		if err := a.bgp.Stop(ctx, true); err != nil {
			errs = append(errs, fmt.Errorf("stopping BGP: %w", err))
		}
		cancel()
	}
	for _, s := range a.streams {
		s.cancel(errClosing)
	}
	a.notifyLocked()
	return errors.Join(errs...)
}

var errClosing = errors.New("the speaker is shutting down")

// report describes the current state as stream id sees it.
func (a *Agent) report(id uint64, full bool) *speakerv1.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.reportLocked(id, full)
}

func (a *Agent) reportLocked(id uint64, full bool) *speakerv1.Report {
	r := &speakerv1.Report{
		Node: a.node, Full: full, Version: version.Version, Capabilities: a.capabilities(),
		Term: a.term,
	}
	if s := a.streams[id]; s != nil {
		r.IgnoredInstructions = s.ignored
	}
	if a.stream == id {
		r.AppliedVersion = a.applied
	}
	if !full {
		return r
	}
	for _, addr := range slices.SortedFunc(maps.Keys(a.vips), netip.Addr.Compare) {
		v := a.vips[addr]
		st := &speakerv1.VIPStatus{Address: addr.String(), Interfaces: v.announced, State: speakerv1.VIPStatus_ANNOUNCING}
		if v.err != nil {
			st.State = speakerv1.VIPStatus_FAILED
			st.Error = v.err.Error()
		}
		r.Vips = append(r.Vips, st)
	}
	r.Interfaces = a.interfacesLocked()
	r.BgpSessions = a.bgpSessions
	return r
}

// Healthy reports whether the default interface can announce. A broken
// interface named only by some announcements fails those VIPs alone.
func (a *Agent) Healthy() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, st := range a.interfacesLocked() {
		if st.Default && st.Error != "" {
			return fmt.Errorf("interface %q: %s", st.Name, st.Error)
		}
	}
	return nil
}

// Live reports whether the agent still works: its lock can be taken and
// Run has made a pass recently. A wedged agent (an announcer stuck in a
// socket call, a dead Run loop) fails it, so that the kubelet restarts the
// speaker.
func (a *Agent) Live(ctx context.Context) error {
	got := make(chan time.Time, 1)
	go func() {
		a.mu.Lock()
		t := a.lastTick
		a.mu.Unlock()
		got <- t
	}()
	select {
	case t := <-got:
		if since := time.Since(t); since > liveLimit {
			return fmt.Errorf("the agent's maintenance loop last ran %s ago", since.Round(time.Millisecond))
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("the agent's state is locked: %w", ctx.Err())
	}
}

// liveLimit is how long Run may go without a pass before Live fails.
const liveLimit = 10 * time.Second

// Streams returns the number of open Sync streams.
func (a *Agent) Streams() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.streams)
}
