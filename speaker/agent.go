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

// Agent is the speaker's state: the VIPs the CCM assigned to this node and
// the announcers answering for them. It serves the Speaker gRPC API.
// Assignments survive the loss of the CCM: only a CCM's instruction or
// Close withdraws them.
type Agent struct {
	speakerv1.UnimplementedSpeakerServer

	node       string
	defaultIfc string
	open       AnnouncerFactory
	log        logr.Logger

	mu         sync.Mutex
	vips       map[netip.Addr]*vip
	announcers map[string]Announcer // by interface name
	openErr    map[string]error     // interfaces that could not be opened
	stream     uint64               // the stream whose instructions count
	nextStream uint64
	applied    uint64
	streams    int // open Sync streams
	closed     bool
}

type vip struct {
	service    string
	interfaces []string // where it should be announced
	announced  []string // where it is announced
	err        error
}

var _ speakerv1.SpeakerServer = (*Agent)(nil)

// NewAgent returns an Agent for node. VIPs whose announcement names no
// interface are announced on defaultInterface.
func NewAgent(node, defaultInterface string, open AnnouncerFactory, log logr.Logger) *Agent {
	return &Agent{
		node:       node,
		defaultIfc: defaultInterface,
		open:       open,
		log:        log,
		vips:       map[netip.Addr]*vip{},
		announcers: map[string]Announcer{},
		openErr:    map[string]error{},
	}
}

// Sync implements the Speaker service: it reports the current state, then
// applies instructions in order and answers each with a Report. A stream
// that sends a Snapshot takes over from any earlier stream, whose later
// instructions are refused (the newest CCM leader wins).
func (a *Agent) Sync(stream speakerv1.Speaker_SyncServer) error {
	ctx := stream.Context()
	a.mu.Lock()
	a.nextStream++
	a.streams++
	id := a.nextStream
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.streams--
		a.mu.Unlock()
	}()

	var sendMu sync.Mutex
	send := func(r *speakerv1.Report) error {
		sendMu.Lock()
		defer sendMu.Unlock()
		return stream.Send(r)
	}
	if err := send(a.report(id, true)); err != nil {
		return err
	}

	// Interface health changes are reported as they happen.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go a.watchHealth(ctx, id, send)

	for {
		in, err := stream.Recv()
		if err != nil {
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		switch k := in.Kind.(type) {
		case *speakerv1.Instruction_Heartbeat:
			instructionsTotal.WithLabelValues("heartbeat", "applied").Inc()
			if err := send(&speakerv1.Report{Node: a.node, AppliedVersion: a.appliedFor(id), HeartbeatSeq: k.Heartbeat.GetSeq()}); err != nil {
				return err
			}
		case *speakerv1.Instruction_Snapshot:
			a.applySnapshot(id, k.Snapshot)
			instructionsTotal.WithLabelValues("snapshot", "applied").Inc()
			if err := send(a.report(id, true)); err != nil {
				return err
			}
		case *speakerv1.Instruction_Update:
			if err := a.applyUpdate(id, k.Update); err != nil {
				instructionsTotal.WithLabelValues("update", "refused").Inc()
				return err
			}
			instructionsTotal.WithLabelValues("update", "applied").Inc()
			if err := send(a.report(id, true)); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown instruction %T", in.Kind)
		}
	}
}

func (a *Agent) appliedFor(id uint64) uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stream != id {
		return 0
	}
	return a.applied
}

func (a *Agent) applySnapshot(id uint64, s *speakerv1.Snapshot) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	if a.stream != id {
		a.log.Info("CCM took over the speaker", "leader", s.GetLeader(), "version", s.GetVersion())
	}
	a.stream = id
	want := map[netip.Addr]*speakerv1.Announcement{}
	for _, an := range s.GetAnnouncements() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		want[addr] = an
	}
	for addr := range a.vips {
		if _, ok := want[addr]; !ok {
			a.withdrawLocked(addr)
		}
	}
	for addr, an := range want {
		a.announceLocked(addr, an)
	}
	a.applied = s.GetVersion()
}

func (a *Agent) applyUpdate(id uint64, u *speakerv1.Update) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	if a.stream != id {
		return errors.New("another CCM has taken over this speaker; send a snapshot first")
	}
	if u.GetVersion() != a.applied+1 {
		return fmt.Errorf("update version %d does not follow applied version %d", u.GetVersion(), a.applied)
	}
	for _, w := range u.GetWithdraw() {
		addr, err := netip.ParseAddr(w)
		if err != nil {
			a.log.Error(err, "Ignoring withdrawal of a bad address", "address", w)
			continue
		}
		a.withdrawLocked(addr)
	}
	for _, an := range u.GetAnnounce() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		a.announceLocked(addr, an)
	}
	a.applied = u.GetVersion()
	return nil
}

// announceLocked makes addr announced exactly on the interfaces an names.
func (a *Agent) announceLocked(addr netip.Addr, an *speakerv1.Announcement) {
	ifcs := slices.Clone(an.GetInterfaces())
	if len(ifcs) == 0 {
		ifcs = []string{a.defaultIfc}
	}
	slices.Sort(ifcs)
	ifcs = slices.Compact(ifcs)
	v := a.vips[addr]
	if v == nil {
		v = &vip{}
		a.vips[addr] = v
		a.log.Info("Announcing VIP", "address", addr, "service", an.GetService(), "interfaces", ifcs)
	}
	v.service = an.GetService()
	v.interfaces = ifcs
	v.err = nil
	// Withdraw from interfaces no longer wanted.
	for _, name := range v.announced {
		if !slices.Contains(ifcs, name) {
			if ann := a.announcers[name]; ann != nil {
				if err := ann.Withdraw(addr); err != nil {
					a.log.Error(err, "Withdrawing VIP", "address", addr, "interface", name)
				}
			}
		}
	}
	var announced []string
	var errs []error
	for _, name := range ifcs {
		ann, err := a.announcerLocked(name)
		if err == nil {
			err = ann.Announce(addr)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
			continue
		}
		announced = append(announced, name)
	}
	v.announced = announced
	if len(errs) > 0 {
		v.err = errors.Join(errs...)
		a.log.Error(v.err, "Cannot announce VIP", "address", addr, "service", v.service)
	}
}

func (a *Agent) withdrawLocked(addr netip.Addr) {
	v := a.vips[addr]
	if v == nil {
		return
	}
	for _, name := range v.announced {
		if ann := a.announcers[name]; ann != nil {
			if err := ann.Withdraw(addr); err != nil {
				a.log.Error(err, "Withdrawing VIP", "address", addr, "interface", name)
			}
		}
	}
	delete(a.vips, addr)
	a.log.Info("Withdrew VIP", "address", addr, "service", v.service)
}

func (a *Agent) announcerLocked(name string) (Announcer, error) {
	if ann := a.announcers[name]; ann != nil {
		return ann, nil
	}
	if name == "" {
		return nil, errors.New("no interface: the speaker found no interface holding the node IP; set --interface")
	}
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		a.openErr[name] = err
		return nil, err
	}
	ann, err := a.open(ifi)
	if err != nil {
		a.openErr[name] = err
		return nil, err
	}
	delete(a.openErr, name)
	a.announcers[name] = ann
	return ann, nil
}

// report describes the current state as stream id sees it.
func (a *Agent) report(id uint64, full bool) *speakerv1.Report {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := &speakerv1.Report{Node: a.node, Full: full}
	if a.stream == id {
		r.AppliedVersion = a.applied
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
	return r
}

// interfacesLocked reports the health of the default interface and of
// every interface a VIP should be announced on.
func (a *Agent) interfacesLocked() []*speakerv1.InterfaceStatus {
	names := map[string]bool{a.defaultIfc: true}
	for _, v := range a.vips {
		for _, name := range v.interfaces {
			names[name] = true
		}
	}
	for name := range a.openErr {
		if !names[name] {
			delete(a.openErr, name) // no longer wanted
		}
	}
	var out []*speakerv1.InterfaceStatus
	for _, name := range slices.Sorted(maps.Keys(names)) {
		st := &speakerv1.InterfaceStatus{Name: name, Default: name == a.defaultIfc}
		if name == "" {
			st.Error = "no interface holds the node IP; set --interface"
			out = append(out, st)
			continue
		}
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			st.Error = err.Error()
			out = append(out, st)
			continue
		}
		st.Up = ifi.Flags&net.FlagUp != 0
		st.HardwareAddress = ifi.HardwareAddr.String()
		if addrs, err := ifi.Addrs(); err == nil {
			for _, ad := range addrs {
				st.Addresses = append(st.Addresses, ad.String())
			}
		}
		if ann := a.announcers[name]; ann != nil {
			if err := ann.Err(); err != nil {
				st.Error = err.Error()
			}
		} else if err := a.openErr[name]; err != nil {
			st.Error = err.Error()
		}
		if !st.Up && st.Error == "" {
			st.Error = "interface is down"
		}
		out = append(out, st)
	}
	return out
}

// healthCheckInterval is how often interface health is re-read.
const healthCheckInterval = time.Second

func (a *Agent) watchHealth(ctx context.Context, id uint64, send func(*speakerv1.Report) error) {
	t := time.NewTicker(healthCheckInterval)
	defer t.Stop()
	a.mu.Lock()
	last := fmt.Sprint(a.interfacesLocked())
	a.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		a.mu.Lock()
		cur := fmt.Sprint(a.interfacesLocked())
		a.mu.Unlock()
		if cur != last {
			last = cur
			if err := send(a.report(id, true)); err != nil {
				return
			}
		}
	}
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

// Addresses returns the VIPs the agent announces, sorted.
func (a *Agent) Addresses() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.SortedFunc(maps.Keys(a.vips), netip.Addr.Compare)
}

// Close withdraws every VIP and closes the announcers. Later instructions
// are ignored.
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
	a.announcers = map[string]Announcer{}
	return errors.Join(errs...)
}

// InterfaceFor returns the name of the interface holding ip, the interface
// a speaker announces on by default.
func InterfaceFor(ip netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if pn, ok := ad.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(pn.IP); ok && a.Unmap() == ip.Unmap() {
					return ifi.Name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no interface holds the node IP %s", ip)
}
