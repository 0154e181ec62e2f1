package dhcplease

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"k8s.io/klog/v2"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
	"github.com/ironlb/ironlb/loadbalancer/speakers"
)

// Exchanger runs DHCP exchanges on the speakers; *speakers.Manager
// implements it.
type Exchanger interface {
	DHCPNodes() []string
	DHCP(ctx context.Context, node string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, error)
}

var _ Exchanger = (*speakers.Manager)(nil)

// Timing of exchanges and renewals.
const (
	// exchangeTimeout bounds one exchange on a speaker (its
	// retransmissions included).
	exchangeTimeout = 4 * time.Second
	// triedNodes is how many speakers one exchange is tried on before it
	// fails.
	triedNodes = 3
	// minRenew and maxRetry bound the wait before a renewal, and between
	// renewals that got no answer.
	minRenew = time.Second
	maxRetry = time.Minute
	// adoptedRenew is when a lease adopted at a restart is first renewed.
	adoptedRenew = 0
)

// Manager keeps the leases. It is safe for concurrent use.
type Manager struct {
	ex  Exchanger
	log klog.Logger
	now func() time.Time

	mu     sync.Mutex
	leases map[string]*Lease // by client id
	// flights are the acquisitions under way or not yet taken in, by
	// client id, and poolAnswered whether each pool's last acquisition
	// got an answer (flight.go).
	flights      map[string]*flight
	poolAnswered map[string]bool
	// onLost is called (without locks) when a lease ends against
	// IronLB's will: refused at a renewal, or expired.
	onLost func(Lease, error)
	// inUse says whether a lease's address is still wanted (held by a
	// Service); nil: every lease is.
	inUse func(Lease) bool
	wake  chan struct{}
}

// New returns a Manager that runs exchanges through ex.
func New(ex Exchanger) *Manager {
	m := &Manager{ex: ex, log: klog.Background().WithName("dhcp"), now: time.Now, leases: map[string]*Lease{}, wake: make(chan struct{}, 1),
		flights: map[string]*flight{}, poolAnswered: map[string]bool{}}
	managerMetrics.Set(m.collect)
	return m
}

// OnLost sets the function told of a lease the server refused to renew or
// that expired; the address must then be withdrawn.
func (m *Manager) OnLost(fn func(Lease, error)) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onLost = fn
}

// InUse sets the function that tells whether a lease is still wanted: a
// lease granted over unusedGrace ago that no Service holds (its Service
// was deleted while its lease was being asked for) is released at its
// next renewal instead of renewed.
func (m *Manager) InUse(fn func(Lease) bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inUse = fn
}

// unusedGrace is how long a new lease may wait for its Service to take
// it before it counts as unused.
const unusedGrace = time.Minute

// Get returns the lease held under clientID.
func (m *Manager) Get(clientID string) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.leases[clientID]
	if !ok {
		return Lease{}, false
	}
	return *l, true
}

// Leases returns every lease held.
func (m *Manager) Leases() []Lease {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Lease, 0, len(m.leases))
	for _, l := range m.leases {
		out = append(out, *l)
	}
	slices.SortFunc(out, func(a, b Lease) int { return a.Addr.Compare(b.Addr) })
	return out
}

// Want is what Acquire asks for.
type Want struct {
	ClientID, Pool, Interface, Name string
	// Requested is the address the Service asks for (optional).
	Requested netip.Addr
}

// acquire runs one acquisition for w and keeps the lease it gets.
func (m *Manager) acquire(ctx context.Context, w Want) (Lease, error) {
	ex := &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_ACQUIRE, ClientId: clientOption(w.ClientID), Interface: w.Interface}
	if w.Requested.IsValid() {
		ex.Address = w.Requested.String()
	}
	res, node, err := m.run(ctx, w.ClientID, ex)
	if err != nil {
		return Lease{}, fmt.Errorf("leasing an address for %s from the DHCP server: %w", w.Name, err)
	}
	l := Lease{ClientID: w.ClientID, Pool: w.Pool, Interface: w.Interface, Name: w.Name, Node: node}
	if err := m.granted(&l, res, w.Requested); err != nil {
		return Lease{}, fmt.Errorf("leasing an address for %s from the DHCP server: %w", w.Name, err)
	}
	m.mu.Lock()
	if prev, ok := m.leases[w.ClientID]; ok {
		// A concurrent Acquire of the same client won: the server gave
		// both the same lease.
		l = *prev
	} else {
		m.leases[w.ClientID] = &l
	}
	m.mu.Unlock()
	m.poke()
	m.log.Info("Leased address from the DHCP server", "holder", w.Name, "address", l.Addr, "server", l.Server, "expires", l.Expires, "node", node)
	return l, nil
}

// Adopt takes on a lease the CCM did not make (one a Service's status
// lists at a restart), due for renewal at once.
func (m *Manager) Adopt(l Lease) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.leases[l.ClientID]; ok {
		return
	}
	l.adopted = m.now()
	l.RenewAt = l.adopted.Add(adoptedRenew)
	m.leases[l.ClientID] = &l
	m.poke()
}

// Release gives the lease held under clientID back to the server and
// forgets it. A release that reaches no server is not retried: the lease
// then ends at its expiry.
func (m *Manager) Release(ctx context.Context, clientID string) {
	m.mu.Lock()
	l, ok := m.leases[clientID]
	delete(m.leases, clientID)
	m.mu.Unlock()
	if !ok {
		return
	}
	ex := &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_RELEASE, ClientId: clientOption(clientID), Interface: l.Interface,
		Address: l.Addr.String(), ServerMac: l.ServerMAC}
	if l.Server.IsValid() {
		ex.Server = l.Server.String()
	}
	if _, _, err := m.run(ctx, clientID, ex); err != nil {
		m.log.Info("Could not release a DHCP lease; the server frees it when it expires", "holder", l.Name, "address", l.Addr, "err", err)
		return
	}
	m.log.Info("Released DHCP lease", "holder", l.Name, "address", l.Addr, "server", l.Server)
}

// ByAddr returns the lease of addr.
func (m *Manager) ByAddr(addr netip.Addr) (Lease, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, l := range m.leases {
		if l.Addr == addr {
			return *l, true
		}
	}
	return Lease{}, false
}

// Decline tells the server that the address of the lease held under
// clientID is in use by another host (RFC 2131's DHCPDECLINE: it sets the
// address aside) and forgets the lease; the client's next Acquire gets
// another address.
func (m *Manager) Decline(ctx context.Context, clientID string) error {
	m.mu.Lock()
	l, ok := m.leases[clientID]
	delete(m.leases, clientID)
	m.mu.Unlock()
	if !ok {
		return nil
	}
	ex := &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_DECLINE, ClientId: clientOption(clientID), Interface: l.Interface,
		Address: l.Addr.String(), ServerMac: l.ServerMAC}
	if l.Server.IsValid() {
		ex.Server = l.Server.String()
	}
	if _, _, err := m.run(ctx, clientID, ex); err != nil {
		return fmt.Errorf("declining %s for %s: %w", l.Addr, l.Name, err)
	}
	m.log.Info("Declined a leased address another host uses", "holder", l.Name, "address", l.Addr, "server", l.Server)
	return nil
}

// clientOption is the value of option 61 for id: type 0 (not a hardware
// address), then id.
func clientOption(id string) []byte { return append([]byte{0}, id...) }

// run runs ex on up to triedNodes speakers, in the order fixed for
// clientID, until one answers with other than BUSY.
func (m *Manager) run(ctx context.Context, clientID string, ex *speakerv1.DHCPExchange) (*speakerv1.DHCPResult, string, error) {
	nodes := order(m.ex.DHCPNodes(), clientID)
	if len(nodes) == 0 {
		return nil, "", ErrNoSpeaker
	}
	ex.TimeoutMs = uint32(exchangeTimeout / time.Millisecond)
	var errs []error
	for _, node := range nodes[:min(len(nodes), triedNodes)] {
		res, err := m.ex.DHCP(ctx, node, ex)
		if err != nil {
			errs = append(errs, err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		switch res.GetOutcome() {
		case speakerv1.DHCPResult_BUSY:
			errs = append(errs, fmt.Errorf("node %s: speaker busy", node))
			continue
		case speakerv1.DHCPResult_INVALID:
			errs = append(errs, fmt.Errorf("node %s: %w: %s", node, ErrInvalid, bounded(res.GetMessage())))
			continue
		case speakerv1.DHCPResult_FENCED:
			return nil, node, fmt.Errorf("node %s follows a newer CCM leader", node)
		}
		return res, node, nil
	}
	if len(errs) == 0 {
		return nil, "", ErrNoSpeaker
	}
	return nil, "", fmt.Errorf("%w: %w", ErrNoSpeaker, errors.Join(errs...))
}

// granted fills l from the answer to an ACQUIRE or RENEW, or returns why
// it grants nothing. want, when valid, is the address that must be given.
func (m *Manager) granted(l *Lease, res *speakerv1.DHCPResult, want netip.Addr) error {
	switch res.GetOutcome() {
	case speakerv1.DHCPResult_GRANTED:
	case speakerv1.DHCPResult_REFUSED:
		return fmt.Errorf("%w: %s", ErrRefused, bounded(res.GetMessage()))
	case speakerv1.DHCPResult_NO_ANSWER:
		return fmt.Errorf("%w within %v", ErrNoAnswer, exchangeTimeout)
	case speakerv1.DHCPResult_NOT_REQUESTED:
		offered, _ := netip.ParseAddr(res.GetAddress())
		return &NotRequestedError{Requested: want, Offered: offered}
	default:
		return fmt.Errorf("%w: outcome %v", ErrInvalid, res.GetOutcome())
	}
	addr, err := netip.ParseAddr(res.GetAddress())
	if err != nil || !addr.Is4() || !addr.IsGlobalUnicast() {
		return fmt.Errorf("%w: granted address %q is no unicast IPv4 address", ErrInvalid, bounded(res.GetAddress()))
	}
	if want.IsValid() && addr != want {
		return &NotRequestedError{Requested: want, Offered: addr}
	}
	if l.Addr.IsValid() && l.Addr != addr {
		return fmt.Errorf("%w: renewal granted %s for the lease of %s", ErrInvalid, addr, l.Addr)
	}
	if res.GetLeaseSeconds() == 0 {
		return fmt.Errorf("%w: granted %s without a lease time", ErrInvalid, addr)
	}
	server, _ := netip.ParseAddr(res.GetServer())
	now := m.now()
	lease := time.Duration(res.GetLeaseSeconds()) * time.Second
	renew := time.Duration(res.GetRenewSeconds()) * time.Second
	if renew <= 0 || renew >= lease {
		renew = lease / 2
	}
	l.Addr, l.Server, l.ServerMAC = addr, server, res.GetServerMac()
	l.Granted, l.Expires, l.RenewAt = now, now.Add(lease), now.Add(max(renew, minRenew))
	if res.GetLeaseSeconds() == 0xffffffff {
		l.Expires = time.Time{} // infinite
		l.RenewAt = now.Add(24 * time.Hour)
	}
	return nil
}

// order sorts nodes by rendezvous hash for clientID.
func order(nodes []string, clientID string) []string {
	score := func(n string) uint64 {
		h := fnv.New64a()
		h.Write([]byte(clientID))
		h.Write([]byte{0})
		h.Write([]byte(n))
		return h.Sum64()
	}
	out := slices.Clone(nodes)
	slices.SortFunc(out, func(a, b string) int {
		sa, sb := score(a), score(b)
		switch {
		case sa > sb:
			return -1
		case sa < sb:
			return 1
		}
		return strings.Compare(a, b)
	})
	return out
}

// bounded cuts a speaker's or server's text to 256 bytes for messages.
func bounded(s string) string {
	if len(s) > 256 {
		s = s[:256] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

func (m *Manager) poke() {
	select {
	case m.wake <- struct{}{}:
	default:
	}
}
