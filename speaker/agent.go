package speaker

import (
	"context"
	"errors"
	"fmt"
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
	// Probe asks the LAN whether another host uses any of addrs (ARP
	// probes, IPv6 duplicate address detection), all together, and
	// returns the claims of those in use.
	Probe(ctx context.Context, addrs []netip.Addr) (map[netip.Addr]Claim, error)
}

// AnnouncerFactory opens an Announcer on an interface; the announcer calls
// onClaim when another host claims an address (never under its locks).
type AnnouncerFactory func(ifi *net.Interface, onClaim func(Claim)) (Announcer, error)

// Capabilities are what this speaker can do, listed in its reports (with
// CapabilityBGP and CapabilityBGPMED when it has a BGP side,
// CapabilityReattest and CapabilityTrustBundle when it has credentials, and
// CapabilityDataPlane when it checks the data plane).
var Capabilities = []string{speakerv1.CapabilityLayer2, speakerv1.CapabilityFencing,
	speakerv1.CapabilityProbe, speakerv1.CapabilityYield, speakerv1.CapabilityRestart,
	speakerv1.CapabilityHeartbeatInterval}

// capabilities are what this agent can do.
func (a *Agent) capabilities() []string {
	c := slices.Clone(Capabilities)
	if a.bgp != nil {
		c = append(c, speakerv1.CapabilityBGP, speakerv1.CapabilityBGPMED)
	}
	if a.creds != nil {
		c = append(c, speakerv1.CapabilityReattest, speakerv1.CapabilityTrustBundle)
	}
	if a.dataPlane != nil {
		c = append(c, speakerv1.CapabilityDataPlane)
	}
	if a.dhcp != nil {
		c = append(c, speakerv1.CapabilityDHCP)
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

	maintainEvery time.Duration // Run's pass interval (WithMaintainInterval)

	node       string
	defaultIfc string
	open       AnnouncerFactory
	log        logr.Logger
	local      LocalAddresses
	allowed    []netip.Prefix // --allowed-cidrs; none: no limit
	interfaces func(name string) (*net.Interface, error)
	creds      Credentials // nil: no enrollment (tests)
	now        func() time.Time
	dataPlane  *DataPlaneHealth // nil: not checked
	dhcp       *dhcpRunner      // nil: runs no DHCP exchanges (dhcpexchange.go)
	yieldKick  chan struct{}    // wakes the timers goroutine (see timers)
	probeMin   time.Duration    // first re-probe of a VIP in CONFLICT
	probeMax   time.Duration    // longest wait between its probes

	// applyMu serializes what changes the announcers and the BGP side:
	// applying instructions, Run's maintenance, yields and re-probes. Their
	// socket writes, probes and gobgp calls run under applyMu but never
	// under mu, so that heartbeats, reports and claims wait for no I/O.
	applyMu sync.Mutex

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
	ending     error         // why closed: errClosing or errRestarting
	changed    chan struct{} // closed and replaced when the reported state changes
	gen        uint64        // counts the reported state's changes (notifyLocked)
	lastTick   time.Time     // last pass of Run, for liveness
	heard      time.Time     // last instruction of the followed stream
	hbInterval time.Duration // the followed stream's heartbeat interval; 0: never cut off
	wasCut     bool          // cut off at the timers goroutine's last look
	toYield    map[netip.Addr]bool
	changes    vipChanges // VIPs whose report may have changed (vipchanges.go)
	lastAudit  time.Time  // the last check of changes (auditReportsLocked)

	bgp         BGPSpeaker           // nil: no BGP
	bgpCfg      *speakerv1.BGPConfig // the CCM's BGP set-up; nil: none
	bgpErr      error                // why the last apply failed
	bgpSessions []*speakerv1.BGPSessionStatus
	exports     *exportIndex         // what the VIPs export over BGP (refused ones: nothing)
	kernelIfcs  map[string]kernelIfc // the interfaces' state as the last maintenance pass read it
	ifcRefs     map[string]int       // how many VIPs name each interface
}

type vip struct {
	service    string
	interfaces []string // where it should be announced
	announced  []string // where it is announced
	err        error
	refused    bool // the node must not announce it at all (see refuse)
	bgpOnly    bool // no layer 2
	bgp        []*speakerv1.BGPAdvertisement
	state      vipState
	claim      *Claim        // the last other host's claim since answering began (reported); nil: none
	lastClaim  time.Time     // when another host last claimed it (claim is refreshed less often)
	backoff    time.Duration // CONFLICT: wait before the next probe
	probeAt    time.Time     // CONFLICT: when to probe again
}

// vipState is what a VIP's layer-2 side does besides answering.
type vipState int

const (
	// stateAnnouncing: answered for (or FAILED when err is set).
	stateAnnouncing vipState = iota
	// stateConflict: a probe found the address in use; probed again at
	// probeAt.
	stateConflict
	// stateYielded: given up to another host's claim while cut off.
	stateYielded
)

// answering reports whether v is answered for over layer 2 somewhere.
func (v *vip) answering() bool { return v.state == stateAnnouncing && len(v.announced) > 0 }

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
		node:          node,
		defaultIfc:    defaultInterface,
		open:          open,
		log:           log,
		local:         NodeAddresses,
		interfaces:    net.InterfaceByName,
		vips:          map[netip.Addr]*vip{},
		exports:       newExportIndex(),
		kernelIfcs:    map[string]kernelIfc{},
		ifcRefs:       map[string]int{},
		announcers:    map[string]*openAnnouncer{},
		openErr:       map[string]error{},
		streams:       map[uint64]*streamState{},
		changed:       make(chan struct{}),
		lastTick:      time.Now(),
		maintainEvery: maintainInterval,
		now:           time.Now,
		yieldKick:     make(chan struct{}, 1),
		toYield:       map[netip.Addr]bool{},
		probeMin:      probeBackoffMin,
		probeMax:      probeBackoffMax,
	}
	for _, o := range opts {
		o(a)
	}
	return a
}

// notifyLocked wakes the streams so they report the new state; a.mu is
// held.
func (a *Agent) notifyLocked() {
	a.gen++
	close(a.changed)
	a.changed = make(chan struct{})
}

// Addresses returns the VIPs the agent announces, sorted.
func (a *Agent) Addresses() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for addr, v := range a.vips {
		if v.err == nil && v.state == stateAnnouncing {
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
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed, a.ending = true, errClosing
	var ops []vipOp
	for addr, v := range a.vips {
		ops = append(ops, vipOp{addr: addr, service: v.service, withdraw: slices.Clone(v.announced)})
	}
	a.vips = map[netip.Addr]*vip{}
	a.changes.drop() // every stream compares all VIPs: all are gone
	a.exports = newExportIndex()
	clear(a.ifcRefs)
	a.mu.Unlock()

	a.perform(ops)
	a.mu.Lock()
	anns := a.announcers
	a.announcers = map[string]*openAnnouncer{}
	a.mu.Unlock()
	var errs []error
	for name, ann := range anns {
		if err := ann.Close(); err != nil {
			errs = append(errs, fmt.Errorf("closing announcer on %s: %w", name, err))
		}
	}
	if a.bgp != nil {
		ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
		// A planned stop: peers with graceful restart keep the routes.
		if err := a.bgp.Stop(ctx, true); err != nil {
			errs = append(errs, fmt.Errorf("stopping BGP: %w", err))
		}
		cancel()
	}
	a.mu.Lock()
	for _, s := range a.streams {
		s.cancel(errClosing)
	}
	a.notifyLocked()
	a.mu.Unlock()
	return errors.Join(errs...)
}

// Restart ends every stream with ReasonRestarting and ignores later
// instructions, withdrawing nothing over layer 2: the speaker process is
// about to exit for a planned restart, and a new one on the same node
// takes over. Layer 2 stops answering when the process exits. BGP stops
// as a planned stop: peers with graceful restart keep the node's routes
// (their sessions close with the process, without a notification), the
// others are sent the withdrawals first. It does not wait for an apply in
// progress.
func (a *Agent) Restart() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed, a.ending = true, errRestarting
	a.log.Info("Restarting: ending the CCM streams, withdrawing nothing", "vips", len(a.vips))
	for _, s := range a.streams {
		s.cancel(errRestarting)
	}
	a.notifyLocked()
	b := a.bgp
	a.mu.Unlock()
	if b != nil {
		// A planned stop, outside a.mu: peers with graceful restart are
		// sent nothing and keep the node's routes; the others get the
		// withdrawals before their sessions close (as before issue 21).
		ctx, cancel := context.WithTimeout(context.Background(), bgpTimeout)
		defer cancel()
		if err := b.Stop(ctx, true); err != nil {
			a.log.Error(err, "Stopping BGP for the restart")
		}
	}
}

var errRestarting = errors.New("the speaker is restarting; it withdrew nothing")

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
		if full {
			s.fullGen = a.gen
		}
	}
	if a.stream == id {
		r.AppliedVersion = a.applied
	}
	if !full {
		return r
	}
	r.Vips, r.VipsGone, r.VipsDelta = a.vipsLocked(a.streams[id])
	r.Interfaces = a.interfacesLocked()
	r.BgpSessions = a.bgpSessions
	if a.dataPlane != nil {
		r.DataPlane = a.dataPlane.Status()
	}
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

// Streams returns the number of open Sync streams.
func (a *Agent) Streams() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.streams)
}

// HeartbeatInterval is the heartbeat interval of the CCM stream the agent
// follows (its snapshot's, or the latest Heartbeat.interval_ms); 0 before
// a snapshot.
func (a *Agent) HeartbeatInterval() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hbInterval
}
