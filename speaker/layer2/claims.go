package layer2

import (
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ClaimKind says how another host claimed an address.
type ClaimKind string

// The kinds of claims.
const (
	// ClaimARPRequest is an ARP request with sender IP = the address
	// (including gratuitous ARP).
	ClaimARPRequest ClaimKind = "arp-request"
	// ClaimARPReply is an ARP reply with sender IP = the address.
	ClaimARPReply ClaimKind = "arp-reply"
	// ClaimARPProbe is another host's ARP probe (sender IP 0.0.0.0) for an
	// address being probed.
	ClaimARPProbe ClaimKind = "arp-probe"
	// ClaimNA is a Neighbor Advertisement with target = the address.
	ClaimNA ClaimKind = "na"
	// ClaimNS is a Neighbor Solicitation with IPv6 source = the address.
	ClaimNS ClaimKind = "ns"
	// ClaimDAD is another host's duplicate address detection solicitation
	// (source ::) for an address being probed.
	ClaimDAD ClaimKind = "dad"
)

// probeOnly reports whether k is a claim only of an address being probed:
// another host probing an address this host announces is answered (the
// owner defends it, RFC 5227 and RFC 4862), not reported.
func (k ClaimKind) probeOnly() bool {
	return k == ClaimARPProbe || k == ClaimDAD
}

// Claim is another host's claim of an address the Responder announces or
// probes.
type Claim struct {
	// Addr is the address claimed.
	Addr netip.Addr
	// MAC is the claiming host's hardware address: the ARP sender hardware
	// address, the link-layer address option of a Neighbor Advertisement or
	// Solicitation when present, else the Ethernet source.
	MAC net.HardwareAddr
	// Kind is how the address was claimed.
	Kind ClaimKind
	// At is when the claim was received.
	At time.Time
}

// Delivery of claims to the WithClaims callback.
const (
	// claimWindow is the shortest time between two claims of one address
	// queued for the callback: the others are coalesced (dropped).
	claimWindow = 100 * time.Millisecond
	// claimQueueLen bounds the claims queued for the callback.
	claimQueueLen = 256
	// claimSweepMin is the size of the coalescing table below which it is
	// never swept.
	claimSweepMin = 64
	// dropLogInterval rate-limits the log line about dropped claims.
	dropLogInterval = 10 * time.Second
)

// WithClaims sets fn to be called for other hosts' claims of announced
// addresses: ARP requests and replies with sender IP = the address, Neighbor
// Advertisements with target = the address and Neighbor Solicitations with
// IPv6 source = the address, from a hardware address other than the
// interface's. Another host's ARP probe or DAD solicitation for an announced
// address is answered, not reported (claims of probed addresses go to Probe).
//
// fn is called from one goroutine of the Responder, never under its locks
// (it may call the Responder's methods), one claim at a time, in the order
// received. At most one claim per address per 100 ms is queued: the others
// are coalesced (dropped). The queue is bounded: a claim that finds it full is
// dropped and counted (see ClaimStats). Close does not wait for a call of fn
// in progress; no queued claim is delivered after Close.
func WithClaims(fn func(Claim)) Option {
	return func(c *config) { c.claimFn = fn }
}

// ClaimStats counts the claims of announced addresses not passed to the
// WithClaims callback.
type ClaimStats struct {
	// Coalesced counts claims received less than 100 ms after a queued
	// claim of the same address.
	Coalesced uint64
	// Dropped counts claims dropped because the queue was full.
	Dropped uint64
}

// ClaimStats returns the counts of claims not delivered since the Responder
// was created.
func (r *Responder) ClaimStats() ClaimStats {
	if r.claims == nil {
		return ClaimStats{}
	}
	return ClaimStats{Coalesced: r.claims.coalesced.Load(), Dropped: r.claims.dropped.Load()}
}

// claimQueue coalesces the claims of announced addresses and queues them
// for the callback.
type claimQueue struct {
	fn func(Claim)
	ch chan Claim

	mu sync.Mutex
	// last holds when a claim of each address was last queued. Only claims
	// of announced addresses reach it, and entries older than claimWindow
	// are swept whenever it has doubled since the last sweep, so it stays
	// within about twice the number of addresses claimed within a window.
	last        map[netip.Addr]time.Time
	sweepAt     int
	lastDropLog time.Time

	coalesced, dropped atomic.Uint64
}

func newClaimQueue(fn func(Claim)) *claimQueue {
	return &claimQueue{
		fn:      fn,
		ch:      make(chan Claim, claimQueueLen),
		last:    make(map[netip.Addr]time.Time),
		sweepAt: claimSweepMin,
	}
}

// push queues c unless a claim of the same address was queued less than
// claimWindow ago or the queue is full. It never blocks. It reports whether
// c was queued, and whether a dropped claim should be logged (at most once
// per dropLogInterval).
func (q *claimQueue) push(c Claim) (queued, logDrop bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if t, ok := q.last[c.Addr]; ok && c.At.Sub(t) < claimWindow {
		q.coalesced.Add(1)
		return false, false
	}
	select {
	case q.ch <- c:
	default:
		q.dropped.Add(1)
		if c.At.Sub(q.lastDropLog) < dropLogInterval {
			return false, false
		}
		q.lastDropLog = c.At
		return false, true
	}
	q.last[c.Addr] = c.At
	if len(q.last) >= q.sweepAt {
		for a, t := range q.last {
			if c.At.Sub(t) >= claimWindow {
				delete(q.last, a)
			}
		}
		q.sweepAt = max(claimSweepMin, 2*len(q.last))
	}
	return true, false
}

// tableLen returns the size of the coalescing table (for tests).
func (q *claimQueue) tableLen() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.last)
}

// deliverClaims calls the callback for the queued claims until the
// Responder is closed. Close does not wait for it (the callback may wait for
// whoever calls Close).
func (r *Responder) deliverClaims(q *claimQueue) {
	for {
		select {
		case c := <-q.ch:
			if r.isClosed() {
				return
			}
			q.fn(c)
		case <-r.done:
			return
		}
	}
}

// startClaimsLocked starts the delivery of claims, if configured and not
// started yet. r.mu is held.
func (r *Responder) startClaimsLocked() {
	if r.claims == nil || r.claimsStarted {
		return
	}
	r.claimsStarted = true
	go r.deliverClaims(r.claims)
}

// claimed handles a claim of c.Addr seen on the wire (from another host):
// it is recorded by the probes of the address, and queued for the callback
// if the address is announced (and c is not a probe).
func (r *Responder) claimed(c Claim) {
	c.MAC = slices.Clone(c.MAC) // it points into the read buffer
	r.mu.RLock()
	announced := r.announcedLocked(c.Addr)
	for _, s := range r.probing[c.Addr] {
		s.record(c)
	}
	r.mu.RUnlock()
	if !announced || c.Kind.probeOnly() || r.claims == nil {
		return
	}
	switch queued, logDrop := r.claims.push(c); {
	case queued:
		r.log.V(1).Info("Address claimed by another host", "address", c.Addr, "mac", c.MAC, "kind", c.Kind)
	case logDrop:
		r.log.Info("Claims dropped: the claims queue is full", "dropped", r.claims.dropped.Load())
	}
}
