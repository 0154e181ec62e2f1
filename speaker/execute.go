package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// vipOp is what one change does to one VIP's layer-2 side. It is planned
// under a.mu (plan*Locked), performed outside it under a.applyMu
// (perform: the socket writes and probes) and recorded under a.mu again
// (recordLocked).
type vipOp struct {
	addr    netip.Addr
	v       *vip // nil: the VIP was removed (withdraw only)
	service string

	withdraw []string // interfaces to stop answering on first
	announce bool     // answer on ifcs (unless a probe finds the address in use)
	ifcs     []string
	probe    bool     // probe on ifcs before answering
	keep     []string // of ifcs, where it is answered now: withdrawn if the probe finds it in use
	yield    bool     // given up to another host's claim while cut off
	answered bool     // it was answered for when planned

	// Results.
	announced []string
	errs      []error
	claim     *Claim // the probe found the address in use
}

// probeTimeout bounds one Probe call (the probe itself takes about 40 ms).
const probeTimeout = 2 * time.Second

// Backoff of the probes of a VIP in CONFLICT.
const (
	probeBackoffMin = 2 * time.Second
	probeBackoffMax = 60 * time.Second
)

// announcer returns the announcer of interface name, opening it if needed.
// The caller holds a.applyMu (so that no one else opens or closes
// announcers meanwhile), not a.mu: opening one makes sockets.
func (a *Agent) announcer(name string) (Announcer, error) {
	a.mu.Lock()
	ann := a.announcers[name]
	a.mu.Unlock()
	if ann != nil {
		return ann, nil
	}
	if name == "" {
		return nil, errors.New("no interface: the speaker found no interface holding the node IP; set --interface")
	}
	ifi, err := a.interfaces(name)
	var opened Announcer
	if err == nil {
		opened, err = a.open(ifi, func(c Claim) { a.claimed(name, c) })
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err != nil {
		a.openErr[name] = err
		return nil, err
	}
	delete(a.openErr, name)
	a.announcers[name] = &openAnnouncer{Announcer: opened, index: ifi.Index}
	return opened, nil
}

// withdrawOn stops answering for addr on interface name, if it has an
// announcer. The caller holds a.applyMu, not a.mu.
func (a *Agent) withdrawOn(name string, addr netip.Addr) {
	a.mu.Lock()
	ann := a.announcers[name]
	a.mu.Unlock()
	if ann == nil {
		return
	}
	if err := ann.Withdraw(addr); err != nil {
		a.log.Error(err, "Withdrawing VIP", "address", addr, "interface", name)
	}
}

// perform does what ops say: withdrawals first, then the probes (one
// Probe call per interface for all ops, the interfaces in parallel), then
// the announcements. The caller holds a.applyMu, not a.mu.
func (a *Agent) perform(ops []vipOp) {
	for i := range ops {
		for _, name := range ops[i].withdraw {
			a.withdrawOn(name, ops[i].addr)
		}
	}
	a.probe(ops)
	for i := range ops {
		op := &ops[i]
		if op.claim != nil {
			for _, name := range op.keep {
				a.withdrawOn(name, op.addr)
			}
			continue
		}
		if !op.announce {
			continue
		}
		for _, name := range op.ifcs {
			ann, err := a.announcer(name)
			if err == nil {
				err = ann.Announce(op.addr)
			}
			if err != nil {
				op.errs = append(op.errs, fmt.Errorf("interface %s: %w", name, err))
				continue
			}
			op.announced = append(op.announced, name)
		}
	}
}

// probe runs the probes ops ask for: one Probe call per interface with
// every address to probe there, all interfaces at once. An op whose
// address another host answers for gets its claim. A probe that cannot
// run leaves its addresses to be announced unprobed (logged).
func (a *Agent) probe(ops []vipOp) {
	byIfc := map[string][]int{}
	for i := range ops {
		if ops[i].probe && ops[i].announce {
			for _, name := range ops[i].ifcs {
				byIfc[name] = append(byIfc[name], i)
			}
		}
	}
	if len(byIfc) == 0 {
		return
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	for name, idx := range byIfc {
		ann, err := a.announcer(name)
		if err != nil {
			continue // the announcement fails and says why
		}
		var addrs []netip.Addr
		for _, i := range idx {
			addrs = append(addrs, ops[i].addr)
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		addrs = slices.Compact(addrs)
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), probeTimeout)
			defer cancel()
			start := time.Now()
			claims, err := ann.Probe(ctx, addrs)
			probeDuration.Observe(time.Since(start).Seconds())
			if err != nil {
				a.log.Error(err, "Cannot probe; announcing the VIPs unprobed", "interface", name, "vips", len(addrs))
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, i := range idx {
				if c, ok := claims[ops[i].addr]; ok && ops[i].claim == nil {
					c.MAC = slices.Clone(c.MAC)
					c.Kind = claimKind(c.Kind)
					if c.At.IsZero() {
						c.At = time.Now()
					}
					ops[i].claim = &c
				}
			}
		}()
	}
	wg.Wait()
}

// recordLocked records what perform did; a.mu is held.
func (a *Agent) recordLocked(ops []vipOp) {
	now := a.now()
	for i := range ops {
		op := &ops[i]
		v := op.v
		if v == nil || a.vips[op.addr] != v {
			continue // withdrawn
		}
		a.vipChangedLocked(op.addr)
		v.announced = op.announced
		switch {
		case op.yield:
			v.state = stateYielded
			v.err = nil
			c := v.claim
			var mac, kind string
			if c != nil {
				mac, kind = c.MAC.String(), c.Kind
			}
			a.log.Info("Yielded VIP: another host claimed it while this speaker is cut off from the CCM", "address", op.addr, "service", v.service, "claimedBy", mac, "kind", kind)
			yieldsTotal.Inc()
		case op.claim != nil:
			if v.state != stateConflict {
				v.backoff = a.probeMin
				a.log.Info("VIP address is in use by another host; not announcing it, probing again later", "address", op.addr, "service", v.service, "claimedBy", op.claim.MAC.String(), "kind", op.claim.Kind)
			} else {
				v.backoff = min(2*v.backoff, a.probeMax)
			}
			v.state = stateConflict
			v.claim = op.claim
			v.err = nil
			v.probeAt = now.Add(v.backoff)
			a.kick()
		case op.announce:
			if v.state == stateConflict {
				a.log.Info("VIP address is free now; announcing it", "address", op.addr, "service", v.service)
			}
			if !op.answered || op.probe {
				// Claims count from when it began to be answered, or
				// from a probe that found it free.
				v.claim = nil
			}
			v.state = stateAnnouncing
			v.backoff, v.probeAt = 0, time.Time{}
			v.err = errors.Join(op.errs...)
			if v.err != nil {
				a.log.Error(v.err, "Cannot announce VIP", "address", op.addr, "service", v.service)
			}
		}
	}
}

// kick wakes the timers goroutine to look at the VIPs again.
func (a *Agent) kick() {
	select {
	case a.yieldKick <- struct{}{}:
	default:
	}
}
