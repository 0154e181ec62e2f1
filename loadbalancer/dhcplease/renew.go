package dhcplease

import (
	"context"
	"errors"
	"fmt"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// ErrExpired: a lease ran out without a renewal the server answered.
var ErrExpired = errors.New("the DHCP lease expired without a renewal (no server answered)")

// Run renews the leases as they fall due until ctx ends. Renewals run one
// at a time: each is one exchange of a few milliseconds on the LAN.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		next := m.renewDue(ctx)
		if ctx.Err() != nil {
			return
		}
		t.Reset(max(time.Until(next), 0))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-m.wake:
		}
	}
}

// renewDue renews every lease whose renewal is due and returns when the
// next one is.
func (m *Manager) renewDue(ctx context.Context) time.Time {
	for ctx.Err() == nil {
		id, due, next := m.nextDue()
		if !due {
			return next
		}
		m.renew(ctx, id)
	}
	return time.Time{}
}

// nextDue returns a lease due now, or when the next one is due.
func (m *Manager) nextDue() (string, bool, time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepFlightsLocked(now)
	next := now.Add(time.Hour)
	for id, l := range m.leases {
		if !l.RenewAt.After(now) {
			return id, true, now
		}
		if l.RenewAt.Before(next) {
			next = l.RenewAt
		}
	}
	return "", false, next
}

// renew runs one renewal of the lease under id and records its outcome.
func (m *Manager) renew(ctx context.Context, id string) {
	m.mu.Lock()
	l, ok := m.leases[id]
	if !ok {
		m.mu.Unlock()
		return
	}
	cur := *l
	inUse := m.inUse
	m.mu.Unlock()
	if inUse != nil && m.now().Sub(cur.Granted) > unusedGrace && !inUse(cur) {
		m.log.Info("Releasing a DHCP lease no Service holds", "holder", cur.Name, "address", cur.Addr)
		m.Release(ctx, id)
		return
	}
	renewalsTotal.WithLabelValues("sent").Inc()
	ex := &speakerv1.DHCPExchange{Op: speakerv1.DHCPExchange_RENEW, ClientId: clientOption(id), Interface: cur.Interface, Address: cur.Addr.String()}
	res, node, err := m.run(ctx, id, ex)
	next := cur
	next.Node = node
	if err == nil {
		err = m.granted(&next, res, cur.Addr)
	}
	now := m.now()
	var lost error
	switch {
	case err == nil:
		renewalsTotal.WithLabelValues("granted").Inc()
		m.log.V(2).Info("Renewed DHCP lease", "holder", cur.Name, "address", cur.Addr, "expires", next.Expires, "node", node)
	case errors.Is(err, ErrRefused):
		renewalsTotal.WithLabelValues("refused").Inc()
		lost = err
	case !cur.Expires.IsZero() && !now.Before(cur.Expires):
		renewalsTotal.WithLabelValues("expired").Inc()
		lost = fmt.Errorf("%w: %w", ErrExpired, err)
	default:
		// Try again: after half the time left (RFC 2131's rebinding
		// spirit), within [minRenew, maxRetry].
		renewalsTotal.WithLabelValues("unanswered").Inc()
		// A lease adopted at a start has no known expiry: it may end
		// any moment (the speakers often connect after the first
		// try), so retry after as long as it has gone unconfirmed,
		// doubling from minRenew.
		wait := min(max(now.Sub(cur.adopted), minRenew), maxRetry)
		if !cur.Expires.IsZero() {
			wait = min(max(cur.Expires.Sub(now)/2, minRenew), maxRetry)
		}
		next = cur
		next.RenewAt = now.Add(wait)
		m.log.Info("DHCP lease renewal got no answer; trying again", "holder", cur.Name, "address", cur.Addr, "expires", cur.Expires, "retryIn", wait, "err", err)
	}
	m.mu.Lock()
	if l, ok := m.leases[id]; !ok || l.Addr != cur.Addr {
		// Released meanwhile.
		m.mu.Unlock()
		return
	}
	var onLost func(Lease, error)
	if lost != nil {
		delete(m.leases, id)
		onLost = m.onLost
	} else {
		m.leases[id] = &next
	}
	m.mu.Unlock()
	if lost != nil {
		m.log.Info("DHCP lease lost; withdrawing its address", "holder", cur.Name, "address", cur.Addr, "err", lost)
		if onLost != nil {
			onLost(cur, lost)
		}
	}
}
