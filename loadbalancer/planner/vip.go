package planner

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/ipam/ippool"
)

// vip is the planner's record of one address: the Services holding it,
// where it may be announced and who announces it.
type vip struct {
	addr     netip.Addr
	services map[string]*v1.Service
	// pool is the pool covering the address now, "" when none does.
	pool string
	// scope is where the address may be announced: the settings of the
	// pool that last covered it. A pool deleted or shrunk under a VIP never
	// widens where the VIP goes.
	scope scope
	// announcers are the nodes told to announce it over layer 2 (at most
	// one).
	announcers []string
	// advertisers are the nodes told to advertise it over BGP (every
	// eligible node).
	advertisers []string
	// last is the node that announced it before it lost its announcers
	// (or, at start, where it was announced under the previous leader):
	// preferred when it is eligible again.
	last string
	// uneven is since when another eligible node has had more ready
	// endpoints than the announcer of this externalTrafficPolicy Local VIP
	// (zero: not so).
	uneven time.Time
	// preferred is the advertiser the routers are made to prefer (MED 0)
	// for a VIP of Services with sessionAffinity ClientIP ("" otherwise),
	// and unevenBGP since when another advertiser has had more ready
	// endpoints than it (externalTrafficPolicy Local).
	preferred string
	unevenBGP time.Time
	// warned: a NoAnnouncingNode Event was sent for the current gap.
	warned bool
	// outside: an AddressOutsidePools Event was sent for the current gap.
	outside bool
	// probe: v was placed for the first time and its announcer has not
	// reported it announced yet (conflict.go).
	probe bool
	// claimedBy is the hardware address of a host that is no speaker and
	// claimed v from its announcer, until the announcer answers for v
	// again with no such claim ("" for none).
	claimedBy string
	// inUse is the hardware address of the host its announcer (inUseNode)
	// found answering for v, "" when none: an AddressInUse episode.
	inUse, inUseNode string
}

// scope is where a VIP may be announced.
type scope struct {
	// known is false for a VIP in no pool whose earlier pool this CCM never
	// saw (it was deleted before this leader started): such a VIP stays on
	// the node announcing it and goes nowhere else.
	known      bool
	pool       string
	l2Off      bool // BGP only: no layer-2 announcer
	nodes      labels.Selector
	interfaces []string
	bgp        *ippool.BGP // nil: not advertised over BGP
}

func (v *vip) serviceKeys() []string { return slices.Sorted(maps.Keys(v.services)) }

// syncService updates the VIPs of one Service and re-plans them.
func (p *Planner) syncService(key string) error {
	return p.syncServiceIn(key, p.gather())
}

// syncServiceIn is syncService in the world w: a new leader plans every
// Service in one world, gathered once, where one gather per Service would
// cost Services × nodes.
func (p *Planner) syncServiceIn(key string, w *world) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := p.services.Services(ns).Get(name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var addrs []netip.Addr
	var pools []string
	if svc != nil && p.opts.Class.Owns(svc) && svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.DeletionTimestamp == nil {
		if al, ok := p.alloc.Lookup(string(svc.UID)); ok {
			addrs, pools = al.Addresses, al.Pools
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return nil
	}
	old := p.bySvc[key]
	for _, a := range old {
		if slices.Contains(addrs, a) {
			continue
		}
		v := p.vips[a]
		if v == nil {
			continue
		}
		delete(v.services, key)
		if len(v.services) == 0 {
			for _, n := range union(v.announcers, v.advertisers) {
				p.speakers.Unassign(n, a.String())
				p.log.Info("Withdrew VIP", "address", a, "node", n, "service", key)
			}
			delete(p.vips, a)
			delete(p.failures, a)
		} else {
			p.planLocked(v, w)
		}
	}
	if !slices.Equal(old, addrs) {
		p.enqueueRecord(key)
	}
	if len(addrs) == 0 {
		delete(p.bySvc, key)
		return nil
	}
	p.bySvc[key] = slices.Clone(addrs)
	for i, a := range addrs {
		v := p.vips[a]
		if v == nil {
			v = &vip{addr: a, services: map[string]*v1.Service{}}
			if seed := p.seeds[a]; seed != "" {
				// Announced there under the previous leader: it stays
				// while that node may keep it.
				v.announcers, v.last = []string{seed}, seed
				delete(p.seeds, a)
			}
			p.vips[a] = v
		}
		v.services[key] = svc
		p.setPoolLocked(v, pools[i])
		p.planLocked(v, w)
	}
	return nil
}

// setPoolLocked records the pool covering v now and refreshes its scope.
// A VIP that just left every pool keeps its scope and its Services get a
// Warning Event.
func (p *Planner) setPoolLocked(v *vip, pool string) {
	v.pool = pool
	if pool == "" {
		if !v.outside {
			v.outside = true
			where := "it stays where it is announced"
			if v.scope.known {
				where = fmt.Sprintf("it is still announced as IPPool %s said", v.scope.pool)
			}
			p.event(v, v1.EventTypeWarning, ReasonOutsidePools,
				fmt.Sprintf("%s is in no IPPool any more; the Service keeps it until its address request changes or it is deleted, and %s", v.addr, where))
		}
		return
	}
	v.outside = false
	l2, ok := p.pools.Layer2(pool)
	if !ok {
		return // the pool's settings are invalid: keep the last valid ones
	}
	v.scope = scope{known: true, pool: pool, l2Off: l2.Off, nodes: l2.Nodes, interfaces: slices.Clone(l2.Interfaces)}
	if b, ok := p.pools.BGP(pool); ok {
		v.scope.bgp = &b
	}
}

// syncAllServices refreshes every Service's VIPs, after a pool changed.
func (p *Planner) syncAllServices() {
	p.mu.Lock()
	keys := slices.Collect(maps.Keys(p.bySvc))
	p.mu.Unlock()
	w := p.gather()
	for _, key := range keys {
		if err := p.syncServiceIn(key, w); err != nil {
			p.queue.AddRateLimited(serviceKey(key))
		}
	}
	p.enqueue(allKey)
}

// planAll re-plans every VIP.
func (p *Planner) planAll() {
	w := p.gather()
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.started {
		return
	}
	p.updateSettleLocked(w)
	p.planAllLocked(w)
}

// planAllLocked re-plans every VIP in w, settled already, and marks what
// it saw of every node (marks.go).
func (p *Planner) planAllLocked(w *world) {
	for _, v := range p.vips {
		p.planLocked(v, w)
	}
	p.markAllLocked(w)
}
