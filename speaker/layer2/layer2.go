// Package layer2 is the layer-2 announcer of the IronLB speaker: on one
// network interface it answers ARP requests and IPv6 Neighbor Solicitations
// for the virtual IPs (VIPs) it has been told to announce, and only for those,
// and it sends gratuitous ARP and unsolicited Neighbor Advertisements when it
// takes a VIP over, so that neighbors switch to this node immediately.
//
// It also watches the LAN for other hosts claiming those addresses (claims.go:
// ARP requests and replies from the address, Neighbor Advertisements of it,
// Neighbor Solicitations from it, sent from another MAC) and reports them to
// the WithClaims callback, coalesced and bounded; and it probes addresses
// before they are announced (probe.go: RFC 5227 ARP probes and RFC 4862
// duplicate address detection), reporting the addresses another host
// answers for, claims or probes at the same time. Frames sent from the
// interface's own MAC are never claims.
//
// A Responder opens its sockets lazily, per address family, on the first
// Announce or Probe of an address of that family:
//
//   - IPv4: an AF_PACKET socket bound to the interface for ARP (EtherType
//     0x0806), filtered in the kernel to ARP requests and replies (arp.go).
//     It works whether or not the interface has an IPv4 address. It also
//     sends the ARP probes.
//   - IPv6: an AF_PACKET socket bound to the interface for IPv6 frames,
//     filtered in the kernel to Neighbor Solicitations and Advertisements
//     (ndp.go), which sees both the multicast solicitations sent to the
//     solicited-node group of a VIP and the unicast ones (neighbor
//     unreachability detection probes) that the kernel itself would drop
//     because the VIP is not a local address, and the advertisements sent to
//     all nodes (answers to duplicate address detection); it also sends the
//     duplicate address detection probes, hand-built, since they come from
//     ::. And an ICMPv6 socket (github.com/mdlayher/ndp) used to send the
//     advertisements and to join the solicited-node multicast group of every
//     announced or probed VIP, so that the interface (and MLD-snooping
//     switches) deliver them. That socket receives nothing: its ICMPv6 filter
//     blocks every type.
//
// The sockets belong to the network namespace of the thread that opens them,
// that is of the goroutine calling Announce or Probe.
package layer2

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// Defaults for the gratuitous announcements sent by Announce.
const (
	// DefaultGratuitousCount is the default number of gratuitous ARP /
	// unsolicited NA rounds sent by Announce.
	DefaultGratuitousCount = 3
	// DefaultGratuitousInterval is the default delay between two rounds.
	DefaultGratuitousInterval = 250 * time.Millisecond
)

// writeTimeout bounds every socket write, so that a stuck transmit queue
// cannot block Withdraw or Close (which wait for in-flight answers).
const writeTimeout = time.Second

// Backoff of a read loop after a read error (other than the socket being
// closed), doubled up to the maximum while errors persist.
const (
	readBackoffMin = 50 * time.Millisecond
	readBackoffMax = 5 * time.Second
)

// ErrClosed is returned by the methods of a Responder after Close.
var ErrClosed = errors.New("layer2: responder closed")

// Option configures a Responder.
type Option func(*config)

type config struct {
	log           logr.Logger
	garpCount     int
	garpInterval  time.Duration
	claimFn       func(Claim)
	probeRounds   int
	probeInterval time.Duration
	probeWait     time.Duration
}

// WithLogger sets the logger of the Responder. The default discards logs.
// Announce, Withdraw and socket errors are logged at verbosity 0, every answer
// and gratuitous announcement sent at verbosity 1.
func WithLogger(log logr.Logger) Option {
	return func(c *config) { c.log = log }
}

// WithGratuitous sets how many rounds of gratuitous ARP / unsolicited
// Neighbor Advertisements Announce sends for a new address (count, 0 disables
// them) and the delay between two rounds (interval). The first round is sent
// by Announce itself, the others in the background. The default is
// DefaultGratuitousCount rounds, DefaultGratuitousInterval apart.
func WithGratuitous(count int, interval time.Duration) Option {
	return func(c *config) {
		c.garpCount = count
		c.garpInterval = interval
	}
}

// Responder answers ARP requests and Neighbor Solicitations for the addresses
// it announces on one interface. It is safe for concurrent use.
type Responder struct {
	ifi           *net.Interface
	log           logr.Logger
	garpCount     int
	garpInterval  time.Duration
	probeRounds   int
	probeInterval time.Duration
	probeWait     time.Duration
	claims        *claimQueue // nil without WithClaims

	// mu guards the fields below. It is read-held while an answer or a
	// gratuitous announcement is being sent, so that Withdraw (which
	// write-locks it) returns only once no answer for the address can be
	// sent anymore.
	mu     sync.RWMutex
	addrs  map[netip.Addr]*announcement
	closed bool
	arp    *arpConn
	ndp    *ndpConn
	// probing holds the running Probe calls of each address probed.
	probing map[netip.Addr][]*probeSession
	// claimsStarted records that the claims delivery goroutine runs.
	claimsStarted bool

	done chan struct{} // closed by Close
	wg   sync.WaitGroup

	health health
}

// announcement is the state of one announced address.
type announcement struct {
	// stop is closed when the address is withdrawn (or the Responder
	// closed): it cancels the remaining gratuitous announcements.
	stop chan struct{}
	// garpFailed records that the first gratuitous announcement failed;
	// announcing the address again retries it.
	garpFailed bool
}

// NewResponder returns a Responder for the Ethernet interface ifi. It opens no
// socket: those are opened by Announce.
func NewResponder(ifi *net.Interface, opts ...Option) (*Responder, error) {
	if ifi == nil {
		return nil, errors.New("layer2: new responder: nil interface")
	}
	if len(ifi.HardwareAddr) != 6 {
		return nil, fmt.Errorf("layer2: new responder on %s: not an Ethernet interface (hardware address %q)", ifi.Name, ifi.HardwareAddr)
	}
	c := config{
		log:           logr.Discard(),
		garpCount:     DefaultGratuitousCount,
		garpInterval:  DefaultGratuitousInterval,
		probeRounds:   DefaultProbeRounds,
		probeInterval: DefaultProbeInterval,
		probeWait:     DefaultProbeWait,
	}
	for _, o := range opts {
		o(&c)
	}
	if c.garpCount < 0 || c.garpInterval < 0 {
		return nil, fmt.Errorf("layer2: new responder on %s: invalid gratuitous settings (count %d, interval %v)", ifi.Name, c.garpCount, c.garpInterval)
	}
	if c.probeRounds < 1 || c.probeInterval < 0 || c.probeWait < 0 {
		return nil, fmt.Errorf("layer2: new responder on %s: invalid probe settings (rounds %d, interval %v, wait %v)", ifi.Name, c.probeRounds, c.probeInterval, c.probeWait)
	}
	var claims *claimQueue
	if c.claimFn != nil {
		claims = newClaimQueue(c.claimFn)
	}
	// Copy the interface: the caller may reuse its value.
	cp := *ifi
	cp.HardwareAddr = slices.Clone(ifi.HardwareAddr)
	return &Responder{
		ifi:           &cp,
		log:           c.log.WithValues("interface", ifi.Name),
		garpCount:     c.garpCount,
		garpInterval:  c.garpInterval,
		probeRounds:   c.probeRounds,
		probeInterval: c.probeInterval,
		probeWait:     c.probeWait,
		claims:        claims,
		addrs:         make(map[netip.Addr]*announcement),
		probing:       make(map[netip.Addr][]*probeSession),
		done:          make(chan struct{}),
	}, nil
}

// Interface returns the interface the Responder answers on.
func (r *Responder) Interface() *net.Interface {
	cp := *r.ifi
	cp.HardwareAddr = slices.Clone(r.ifi.HardwareAddr)
	return &cp
}

// normalize validates addr and returns its canonical form: IPv4-mapped IPv6
// addresses become IPv4 ones and the zone is dropped.
func normalize(addr netip.Addr) (netip.Addr, error) {
	if !addr.IsValid() {
		return netip.Addr{}, errors.New("invalid address")
	}
	addr = addr.Unmap().WithZone("")
	if addr.IsUnspecified() || addr.IsMulticast() || addr.IsLoopback() || addr == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return netip.Addr{}, fmt.Errorf("%s is not a unicast address", addr)
	}
	return addr, nil
}

// Announce starts answering ARP requests (IPv4) or Neighbor Solicitations
// (IPv6) for addr and sends gratuitous ARP / unsolicited Neighbor
// Advertisements for it: the first round before returning, the remaining ones
// in the background. It opens the sockets of the address family if needed.
//
// Announce is idempotent: announcing an address again does nothing, unless
// the first gratuitous round of the previous call failed, in which case the
// gratuitous announcements are sent again. When the address is answered for
// but its first gratuitous round failed, Announce returns an error and the
// address stays announced.
func (r *Responder) Announce(addr netip.Addr) error {
	a, err := normalize(addr)
	if err != nil {
		return fmt.Errorf("layer2: announce %s on %s: %w", addr, r.ifi.Name, err)
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return fmt.Errorf("layer2: announce %s on %s: %w", a, r.ifi.Name, ErrClosed)
	}
	ann, ok := r.addrs[a]
	switch {
	case ok && !ann.garpFailed:
		r.mu.Unlock()
		return nil
	case ok:
		// Retry the gratuitous announcements: cancel the previous ones.
		close(ann.stop)
	default:
		if err := r.openLocked(a); err != nil {
			r.mu.Unlock()
			return fmt.Errorf("layer2: announce %s on %s: %w", a, r.ifi.Name, err)
		}
	}
	ann = &announcement{stop: make(chan struct{})}
	r.addrs[a] = ann
	r.mu.Unlock()
	r.log.Info("Announcing address", "address", a)

	if r.garpCount == 0 {
		return nil
	}
	sent, err := r.gratuitous(a, ann)
	if err != nil {
		r.mu.Lock()
		if r.addrs[a] == ann {
			ann.garpFailed = true
		}
		r.mu.Unlock()
		return fmt.Errorf("layer2: announce %s on %s: address answered for, but gratuitous announcement failed: %w", a, r.ifi.Name, err)
	}
	if sent && r.garpCount > 1 {
		r.wg.Add(1)
		go r.repeatGratuitous(a, ann)
	}
	return nil
}

// openLocked opens the sockets of the family of a, if not open yet, and
// prepares them for a (solicited-node group membership). r.mu is held.
func (r *Responder) openLocked(a netip.Addr) error {
	if err := r.openFamilyLocked(a.Is4()); err != nil {
		return err
	}
	if a.Is6() {
		return r.ndp.join(a)
	}
	return nil
}

// openFamilyLocked opens the sockets of IPv4 (v4) or IPv6, if not open yet,
// and starts their read loops and the delivery of claims. r.mu is held.
func (r *Responder) openFamilyLocked(v4 bool) error {
	if v4 && r.arp == nil {
		c, err := openARP(r.ifi)
		r.health.set(opOpenARP, err)
		if err != nil {
			return err
		}
		r.arp = c
		r.wg.Add(1)
		go r.arpLoop(c)
	}
	if !v4 && r.ndp == nil {
		c, err := openNDP(r.ifi)
		r.health.set(opOpenNDP, err)
		if err != nil {
			return err
		}
		r.ndp = c
		r.wg.Add(1)
		go r.ndpLoop(c)
	}
	r.startClaimsLocked()
	return nil
}

// gratuitous sends one round of gratuitous announcements for a, unless a has
// been withdrawn or re-announced since (then it reports sent == false).
func (r *Responder) gratuitous(a netip.Addr, ann *announcement) (sent bool, err error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed || r.addrs[a] != ann {
		return false, nil
	}
	if a.Is4() {
		err = r.arp.gratuitous(a)
		r.health.set(opWriteARP, err)
	} else {
		err = r.ndp.unsolicited(a)
		r.health.set(opWriteNDP, err)
	}
	if err != nil {
		return false, err
	}
	r.log.V(1).Info("Sent gratuitous announcement", "address", a)
	return true, nil
}

// repeatGratuitous sends the rounds of gratuitous announcements after the
// first one, until done or the address is withdrawn.
func (r *Responder) repeatGratuitous(a netip.Addr, ann *announcement) {
	defer r.wg.Done()
	t := time.NewTimer(r.garpInterval)
	defer t.Stop()
	for i := 1; i < r.garpCount; i++ {
		select {
		case <-t.C:
		case <-ann.stop:
			return
		case <-r.done:
			return
		}
		sent, err := r.gratuitous(a, ann)
		if err != nil {
			r.log.Error(err, "Gratuitous announcement failed", "address", a)
		} else if !sent {
			return
		}
		t.Reset(r.garpInterval)
	}
}

// Withdraw stops answering for addr: once it returns, no answer and no
// gratuitous announcement for addr is sent anymore. For an IPv6 address, it
// also leaves the solicited-node multicast group of addr (unless another
// announced address shares it). Withdrawing an address that is not announced
// does nothing.
func (r *Responder) Withdraw(addr netip.Addr) error {
	a, err := normalize(addr)
	if err != nil {
		return fmt.Errorf("layer2: withdraw %s on %s: %w", addr, r.ifi.Name, err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	ann, ok := r.addrs[a]
	if !ok {
		return nil
	}
	delete(r.addrs, a)
	close(ann.stop)
	r.log.Info("Withdrew address", "address", a)
	if a.Is6() && r.ndp != nil {
		if err := r.ndp.leave(a); err != nil {
			return fmt.Errorf("layer2: withdraw %s on %s: no longer answered for, but: %w", a, r.ifi.Name, err)
		}
	}
	return nil
}

// Addresses returns the announced addresses, sorted.
func (r *Responder) Addresses() []netip.Addr {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return slices.SortedFunc(maps.Keys(r.addrs), netip.Addr.Compare)
}

// announcedLocked reports whether a is announced. r.mu must be held.
func (r *Responder) announcedLocked(a netip.Addr) bool {
	_, ok := r.addrs[a]
	return ok && !r.closed
}

// Err returns the health of the Responder: nil when healthy, else the errors
// of the most recent failed socket operations (opening, reading, writing)
// that have not been followed by a successful operation of the same kind,
// joined. After Close it returns ErrClosed.
func (r *Responder) Err() error {
	r.mu.RLock()
	closed := r.closed
	r.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	if err := r.health.err(); err != nil {
		return fmt.Errorf("layer2: interface %s: %w", r.ifi.Name, err)
	}
	return nil
}

// Close stops answering for every address, stops the goroutines of the
// Responder and closes its sockets. It is idempotent: later calls return nil.
func (r *Responder) Close() error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil
	}
	r.closed = true
	close(r.done)
	for a, ann := range r.addrs {
		close(ann.stop)
		delete(r.addrs, a)
	}
	var errs []error
	if r.arp != nil {
		if err := r.arp.close(); err != nil {
			errs = append(errs, fmt.Errorf("close ARP socket: %w", err))
		}
	}
	if r.ndp != nil {
		if err := r.ndp.close(); err != nil {
			errs = append(errs, fmt.Errorf("close NDP sockets: %w", err))
		}
	}
	r.mu.Unlock()
	r.wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("layer2: close responder on %s: %w", r.ifi.Name, err)
	}
	return nil
}
