package dhcplease

import (
	"context"
	"errors"
	"time"
)

// An acquisition runs in the background, as a flight, so that the
// service controller's worker that asked is held for at most leaseWait,
// and not at all while the pool's server does not answer: a server that
// is down, or out of addresses (servers stay silent then), would
// otherwise hold the worker for every pending Service in turn, and every
// other Service of the cluster would wait behind them. The caller is
// told ErrPending and asks again (the service controller retries); the
// next call takes in the flight's result, and a failed flight is
// reported once and started again at once.

// ErrPending: the server has been asked; its answer is not in yet.
var ErrPending = errors.New("the DHCP server has been asked; waiting for its answer")

// ErrTooManyPending: too many acquisitions are under way.
var ErrTooManyPending = errors.New("too many DHCP acquisitions under way")

// Bounds of flights: how long Acquire waits for one when the pool's server
// answered last time, and how many run at once.
const (
	leaseWait  = 2 * time.Second
	maxFlights = 64
	// flightTimeout bounds one flight: its exchange on each speaker tried.
	flightTimeout = triedNodes*exchangeTimeout + time.Second
)

// flight is one acquisition.
type flight struct {
	want Want
	done chan struct{}
	// after done:
	lease    Lease
	err      error
	finished time.Time
}

// flightKept is how long a finished flight waits to be taken in before
// it is dropped (its Service was deleted or changed meanwhile).
const flightKept = time.Minute

// sweepFlightsLocked drops the finished flights no Acquire took in;
// m.mu is held.
func (m *Manager) sweepFlightsLocked(now time.Time) {
	for id, f := range m.flights {
		select {
		case <-f.done:
			if now.Sub(f.finished) > flightKept {
				delete(m.flights, id)
			}
		default:
		}
	}
}

// Acquire returns the lease held under w.ClientID, or leases an address
// from the server for it: it waits for the server's answer up to
// leaseWait, or not at all when the pool's server did not answer the last
// acquisition, and fails with ErrPending meanwhile. With w.Requested set,
// an offer of another address fails with a *NotRequestedError and nothing
// is leased.
func (m *Manager) Acquire(ctx context.Context, w Want) (Lease, error) {
	m.mu.Lock()
	if l, ok := m.leases[w.ClientID]; ok {
		m.mu.Unlock()
		return *l, nil
	}
	f := m.flights[w.ClientID]
	if f != nil && f.want != w {
		select {
		case <-f.done:
			// For what the Service asked before: drop it.
			delete(m.flights, w.ClientID)
			f = nil
		default:
			m.mu.Unlock()
			return Lease{}, ErrPending
		}
	}
	if f != nil {
		select {
		case <-f.done:
			delete(m.flights, w.ClientID)
			if f.err == nil {
				m.mu.Unlock()
				return f.lease, nil
			}
			// Report this failure, and ask again for the next call.
			m.startLocked(w)
			m.mu.Unlock()
			return Lease{}, f.err
		default:
		}
	} else {
		if len(m.flights) >= maxFlights {
			m.mu.Unlock()
			return Lease{}, ErrTooManyPending
		}
		f = m.startLocked(w)
	}
	wait := time.Duration(0)
	if answered, known := m.poolAnswered[w.Pool]; answered || !known {
		wait = leaseWait
	}
	m.mu.Unlock()
	if wait == 0 {
		return Lease{}, ErrPending
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-f.done:
	case <-t.C:
		return Lease{}, ErrPending
	case <-ctx.Done():
		return Lease{}, ErrPending
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.flights[w.ClientID] == f {
		delete(m.flights, w.ClientID)
	}
	return f.lease, f.err
}

// startLocked starts a flight for w; m.mu is held.
func (m *Manager) startLocked(w Want) *flight {
	f := &flight{want: w, done: make(chan struct{})}
	m.flights[w.ClientID] = f
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), flightTimeout)
		defer cancel()
		l, err := m.acquire(ctx, w)
		acquisitionsTotal.WithLabelValues(resultOf(err)).Inc()
		m.mu.Lock()
		f.lease, f.err, f.finished = l, err, m.now()
		m.poolAnswered[w.Pool] = !errors.Is(err, ErrNoAnswer) && !errors.Is(err, ErrNoSpeaker)
		m.mu.Unlock()
		close(f.done)
	}()
	return f
}
