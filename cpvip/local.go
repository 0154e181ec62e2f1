package cpvip

import (
	"context"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

// localVIP serves the VIP on this node while the election loop holds it:
// the VIP a local address of the node (on lo, see AddLocalFor) with its
// lifetime renewed every Interval, and ARP/NDP answered for it once it is
// there. The loop only says whether it wants the VIP served (set); the
// changes are made on a goroutine of localVIP's own.
//
// They are apart from the loop because netlink waits for the kernel's
// rtnl lock, which every netlink user on the machine shares (and so does
// joining the multicast group an IPv6 VIP's NDP needs): a container or pod
// sandbox being set up or torn down, kube-proxy, a network namespace being
// destroyed. Such a wait lasts hundreds of milliseconds on a busy node
// (216 ms measured in make test's HA cluster as a node shut down). Were
// the changes in the loop, a holder's messages would stop meanwhile, and
// after a dead interval (500 ms) the others would take the VIP from a
// healthy holder.
type localVIP struct {
	vip      netip.Addr
	lifetime time.Duration
	log      logr.Logger
	resp     announcer
	add      func(netip.Addr, time.Duration) error
	del      func(netip.Addr) error
	wake     chan struct{}

	// mu guards what the loop asks for; it is never held across a change.
	mu         sync.Mutex
	want       bool
	reannounce bool

	// served says whether the VIP is on lo and answered for.
	served atomic.Bool

	// opMu serializes the changes: held across netlink and the responder,
	// so that a renewal in flight when the VIP is released cannot put it
	// back on lo after the release removed it. What follows is its.
	opMu    sync.Mutex
	onLo    bool   // the VIP was added to lo and not removed since
	lastErr string // the last error logged, logged again only when it changes
}

func newLocalVIP(vip netip.Addr, resp announcer, log logr.Logger) *localVIP {
	return &localVIP{vip: vip, lifetime: addressLifetime, log: log, resp: resp, add: AddLocalFor, del: DelLocal, wake: make(chan struct{}, 1)}
}

// set says whether the VIP is to be served; the change is made on the
// goroutine of run.
func (a *localVIP) set(want bool) {
	a.mu.Lock()
	changed := a.want != want
	a.want = want
	a.mu.Unlock()
	if changed {
		a.poke()
	}
}

// announceAgain withdraws the VIP from ARP/NDP and announces it again
// (with its gratuitous announcements), if it is served.
func (a *localVIP) announceAgain() {
	a.mu.Lock()
	a.reannounce = true
	a.mu.Unlock()
	a.poke()
}

func (a *localVIP) poke() {
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// run makes the changes asked for, and renews the VIP's lifetime on lo
// every Interval while it is served, until ctx ends.
func (a *localVIP) run(ctx context.Context) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.wake:
		case <-t.C:
		}
		a.reconcile()
	}
}

// stop withdraws the VIP now, whatever run does: the loop's last act.
func (a *localVIP) stop() {
	a.set(false)
	a.reconcile()
}

// reconcile brings the node in line with what is wanted: the VIP on lo
// (added again, which renews its lifetime) and then answered for; or
// neither.
func (a *localVIP) reconcile() {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	want, again := a.want, a.reannounce
	a.reannounce = false
	a.mu.Unlock()
	if !want {
		a.unserve()
		return
	}
	if again && a.served.Load() {
		a.logError(a.resp.Withdraw(a.vip), "Announcing the VIP again: withdrawing it")
		a.served.Store(false)
	}
	what := "renewing"
	if !a.served.Load() {
		what = "adding"
	}
	err := a.timed(what, func() error { return a.add(a.vip, a.lifetime) })
	if err != nil {
		// Served already, the VIP lives on lo for its lifetime: the next
		// renewal tries again.
		a.logError(err, "Serving the VIP: adding it to lo")
		return
	}
	a.onLo = true
	if a.served.Load() {
		a.logError(nil, "")
		return
	}
	if err := a.resp.Announce(a.vip); err != nil && !isGratuitousOnly(a.resp, a.vip) {
		a.logError(err, "Serving the VIP: answering ARP/NDP")
		return
	} else if err != nil {
		a.logError(err, "Serving the VIP: gratuitous announcement failed (answering anyway)")
	} else {
		a.logError(nil, "")
	}
	a.served.Store(true)
}

// unserve stops answering for the VIP and removes it from lo, if either
// was done.
func (a *localVIP) unserve() {
	if !a.served.Load() && !a.onLo {
		return
	}
	a.logError(a.resp.Withdraw(a.vip), "Releasing the VIP: withdrawing it")
	a.served.Store(false)
	if err := a.timed("removing", func() error { return a.del(a.vip) }); err != nil {
		a.logError(err, "Releasing the VIP: removing it from lo")
		return // tried again at the next tick
	}
	a.onLo = false
}

// isGratuitousOnly says whether vip is answered for although Announce
// failed (only its gratuitous announcement did).
func isGratuitousOnly(r announcer, vip netip.Addr) bool {
	for _, a := range r.Addresses() {
		if a == vip {
			return true
		}
	}
	return false
}

// logError logs err with msg unless it is the error logged last; a nil
// err forgets it.
func (a *localVIP) logError(err error, msg string) {
	if err == nil {
		a.lastErr = ""
		return
	}
	if s := msg + ": " + err.Error(); s != a.lastErr {
		a.lastErr = s
		a.log.Error(err, msg, "vip", a.vip)
	}
}

// slowNetlink is how long a change of the VIP on lo may take before it is
// logged: longer, and the kernel's rtnl lock was busy.
const slowNetlink = Interval

// timed runs one netlink change and logs it when it was slow.
func (a *localVIP) timed(what string, f func() error) error {
	start := time.Now()
	err := f()
	if d := time.Since(start); d > slowNetlink {
		a.log.Info("Changing the VIP on lo waited for the kernel", "vip", a.vip, "change", what, "took", d.Round(time.Millisecond))
	}
	return err
}
