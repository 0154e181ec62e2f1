package speaker

// The agent's main loop: Run, and the maintenance pass it makes about
// twice a second (maintain): interfaces re-read and announcers reopened
// (interfaces.go), failed VIPs and a failed BGP apply retried
// (retryFailed), the BGP sessions polled (bgppoll.go), and the streams
// told when any of it changed. Live tells whether the loop still runs.

import (
	"context"
	"fmt"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// maintainInterval is how often Run checks the interfaces (see
// WithMaintainInterval).
const maintainInterval = 500 * time.Millisecond

// WithMaintainInterval makes Run pass every d instead of maintainInterval
// (at most liveLimit/2, so that Live holds): for many agents sharing one
// host's interfaces, such as the scale rig's simulated speakers, where a
// pass each per 500 ms would cost more than the system under test.
func WithMaintainInterval(d time.Duration) Option {
	return func(a *Agent) { a.maintainEvery = min(d, liveLimit/2) }
}

// Run keeps the announcers working until ctx ends: about twice a second it
// reopens the announcer of an interface that was deleted and re-created
// (a rebuilt bond or VLAN has a new index, and the old sockets are bound to
// the dead one), retries VIPs that failed while the interfaces or the
// node's addresses changed, polls the BGP sessions, and reports interface
// health and BGP session changes to the CCM. It also runs the timers
// goroutine (yields and re-probes) and re-checks the trusted CCM
// certificates each pass. Live fails when Run stops making passes.
func (a *Agent) Run(ctx context.Context) {
	go a.timers(ctx)
	t := time.NewTicker(a.maintainEvery)
	defer t.Stop()
	var last string
	var lastHealth []*speakerv1.InterfaceStatus
	for {
		fp := fingerprint()
		a.maintain(fp, &last, &lastHealth)
		a.recheckTrust() // a re-read mounted bundle
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// maintain is one pass of Run. Like an apply it holds a.applyMu
// throughout and a.mu only between its I/O.
func (a *Agent) maintain(fp string, last *string, lastHealth *[]*speakerv1.InterfaceStatus) {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.mu.Lock()
	a.lastTick = time.Now()
	closed := a.closed
	a.mu.Unlock()
	if closed {
		return
	}
	reopened := a.reopen()
	returned := a.returned()
	if fp != *last || reopened || returned {
		a.mu.Lock()
		a.held = nil
		a.mu.Unlock()
		a.retryFailed()
		*last = fp
	}
	a.refreshInterfaces()
	a.mu.Lock()
	a.auditReportsLocked(a.now())
	health := a.interfacesLocked()
	if !equalStatuses(health, *lastHealth) {
		*lastHealth = health
		a.notifyLocked()
	}
	a.mu.Unlock()
	if a.pollBGP() {
		a.mu.Lock()
		a.notifyLocked()
		a.mu.Unlock()
	}
}

// retryFailed announces again the VIPs that failed, and applies the BGP
// side again (a VIP no longer refused is advertised now). The caller
// holds a.applyMu, not a.mu.
func (a *Agent) retryFailed() {
	a.loadHeld()
	a.mu.Lock()
	var ops []vipOp
	for addr, v := range a.vips {
		if v.err != nil && v.state == stateAnnouncing {
			ops = append(ops, a.planAnnounceLocked(addr, v.announcement(addr)))
		}
	}
	d, derr := a.desiredBGPLocked()
	a.mu.Unlock()
	a.perform(ops)
	berr := a.applyBGP(d, derr)
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recordLocked(ops)
	for _, op := range ops {
		if op.v != nil && op.v.err == nil {
			a.log.Info("VIP recovered", "address", op.addr, "service", op.service)
		}
	}
	a.recordBGPLocked(d, berr)
	a.notifyLocked()
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
