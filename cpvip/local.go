package cpvip

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
)

// localVIP keeps the VIP a local address of this node (on lo, see
// AddLocalFor) while the election loop serves it, and renews its lifetime
// every Interval on a goroutine of its own.
//
// It is apart from the loop because netlink waits for the kernel's rtnl
// lock, which every other netlink user on the machine shares: a container
// or pod sandbox being set up or torn down, kube-proxy, a network
// namespace being destroyed. Such a wait can last hundreds of
// milliseconds. Were the renewal in the loop, the holder's messages would
// stop meanwhile, and after a dead interval (500 ms) the others would take
// the VIP over from a healthy holder. Taking and releasing still wait for
// netlink (they are rare, and the loop sends its message before it acts);
// the renewal every Interval never holds the loop.
type localVIP struct {
	vip      netip.Addr
	lifetime time.Duration
	log      logr.Logger
	add      func(netip.Addr, time.Duration) error
	del      func(netip.Addr) error

	// mu is held across each netlink call, so that a renewal in flight
	// when the loop releases cannot put the address back after the
	// release removed it.
	mu   sync.Mutex
	want bool
	// renewErr is the last renewal's error, logged once until it changes.
	renewErr string
}

func newLocalVIP(vip netip.Addr, log logr.Logger) *localVIP {
	return &localVIP{vip: vip, lifetime: addressLifetime, log: log, add: AddLocalFor, del: DelLocal}
}

// take adds the VIP to lo and keeps it there until release.
func (a *localVIP) take() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.want = true
	return a.timed("adding", func() error { return a.add(a.vip, a.lifetime) })
}

// release removes the VIP from lo; no renewal adds it again.
func (a *localVIP) release() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.want = false
	return a.timed("removing", func() error { return a.del(a.vip) })
}

// run renews the VIP's lifetime every Interval while it is taken, until
// ctx ends.
func (a *localVIP) run(ctx context.Context) {
	t := time.NewTicker(Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.renew()
		}
	}
}

// renew adds the VIP again with a fresh lifetime if it is taken.
func (a *localVIP) renew() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.want {
		return
	}
	err := a.timed("renewing", func() error { return a.add(a.vip, a.lifetime) })
	msg := ""
	if err != nil {
		msg = err.Error()
		if msg != a.renewErr {
			a.log.Error(err, "Renewing the VIP on lo", "vip", a.vip)
		}
	}
	a.renewErr = msg
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
