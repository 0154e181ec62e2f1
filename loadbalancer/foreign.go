package loadbalancer

import (
	"fmt"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/loadbalancer/announced"
	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

// Addresses another load balancer handed out are never given to IronLB's
// Services. A Service IronLB does not serve (of another loadBalancerClass,
// or class-less while IronLB serves only its class) that lists addresses
// in status.loadBalancer.ingress holds them, for as long as it lists them
// (also while it is being deleted, and after a change of type until its
// load balancer clears them): the allocator keeps them reserved
// (ipam.ReserveForeign), so IronLB and another implementation can be
// given overlapping ranges during a migration without IronLB handing out
// an address the other announces (DESIGN invariant 10). Pools count them
// as used. A Service of IronLB's that held such an address first keeps it
// (invariant 3); the clash is logged, naming both, and told on IronLB's
// Service with a Warning Event that names no other Service (tenancy).
//
// The other implementation's Services are never written to. What IronLB
// takes from them is bounded: at most maxForeignAddrs addresses per
// Service, and only while the Service exists.

// maxForeignAddrs bounds the addresses one foreign Service reserves (a
// dual-stack Service lists two).
const maxForeignAddrs = 8

// ReasonAddressHeldElsewhere is the Warning Event on an IronLB Service
// whose address another load balancer's Service lists too.
const ReasonAddressHeldElsewhere = "AddressHeldElsewhere"

// foreignOwner is the allocator owner of what svc reserves.
func foreignOwner(svc *v1.Service) string { return "foreign:" + string(svc.UID) }

// foreignAddrs returns what svc reserves: its status addresses when IronLB
// does not own it, at most maxForeignAddrs.
func (b *Balancer) foreignAddrs(svc *v1.Service) []netip.Addr {
	if b.class.Owns(svc) {
		return nil
	}
	addrs := announced.StatusAddrs(svc)
	if len(addrs) > maxForeignAddrs {
		addrs = addrs[:maxForeignAddrs]
	}
	slices.SortFunc(addrs, netip.Addr.Compare)
	return slices.Compact(addrs)
}

// reserveForeign reserves (or releases) what svc, a Service that exists,
// holds for another load balancer, and returns how many addresses that is.
func (b *Balancer) reserveForeign(svc *v1.Service) int {
	addrs := b.foreignAddrs(svc)
	b.setForeign(svc, addrs)
	return len(addrs)
}

// unreserveForeign releases what a deleted Service reserved.
func (b *Balancer) unreserveForeign(svc *v1.Service) { b.setForeign(svc, nil) }

func (b *Balancer) setForeign(svc *v1.Service, addrs []netip.Addr) {
	uid := string(svc.UID)
	b.mu.Lock()
	before := b.foreign[uid]
	same := slices.Equal(before, addrs)
	if len(addrs) == 0 {
		delete(b.foreign, uid)
	} else {
		b.foreign[uid] = addrs
	}
	b.mu.Unlock()
	if same {
		return
	}
	name := fmt.Sprintf("Service %s/%s (%s)", svc.Namespace, svc.Name, lbclass.Describe(svc))
	refused := b.alloc.ReserveForeign(foreignOwner(svc), name, addrs)
	var pools []string
	for _, a := range slices.Concat(before, addrs) {
		if p := b.alloc.PoolContaining(a); p != "" && !slices.Contains(pools, p) {
			pools = append(pools, p)
		}
	}
	b.pools.Touch(pools...)
	if len(addrs) > 0 || len(before) > 0 {
		b.log.V(2).Info("Addresses of another load balancer kept from IronLB's Services", "service", klog.KObj(svc), "class", lbclass.Describe(svc), "addresses", addrs)
	}
	for _, a := range refused {
		b.warnHeldElsewhere(svc, a)
	}
}

// warnHeldElsewhere reports that addr, which an IronLB Service holds, is
// listed by foreign too.
func (b *Balancer) warnHeldElsewhere(foreign *v1.Service, addr netip.Addr) {
	h, ok := b.alloc.Holder(addr)
	if !ok {
		return
	}
	b.log.Info("Another load balancer's Service lists an address an IronLB Service holds; the IronLB Service keeps it",
		"address", addr, "other", klog.KObj(foreign), "otherClass", lbclass.Describe(foreign), "holders", h.Owners)
	for _, own := range b.holderServices(addr) {
		b.recorder.Eventf(own, v1.EventTypeWarning, ReasonAddressHeldElsewhere,
			"%s is also listed by a Service of another load balancer (%s); IronLB keeps it for this Service and does not announce it where another host answers for it. Give the two load balancers separate ranges",
			addr, lbclass.Describe(foreign))
	}
}

// holderServices returns IronLB's Services whose status lists addr.
func (b *Balancer) holderServices(addr netip.Addr) []*v1.Service {
	all, err := b.services.List(labels.Everything())
	if err != nil {
		return nil
	}
	var out []*v1.Service
	for _, s := range all {
		if b.class.Owns(s) && slices.Contains(announced.StatusAddrs(s), addr) {
			out = append(out, s)
		}
	}
	return out
}

// reserveAllForeign reserves what every existing Service holds for another
// load balancer (at the start, after the restore).
func (b *Balancer) reserveAllForeign() int {
	all, err := b.services.List(labels.Everything())
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range all {
		if b.reserveForeign(s) > 0 {
			n++
		}
	}
	return n
}

// foreignAddresses counts the distinct addresses Services of other load
// balancers list.
func (b *Balancer) foreignAddresses() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	seen := map[netip.Addr]bool{}
	for _, addrs := range b.foreign {
		for _, a := range addrs {
			seen[a] = true
		}
	}
	return len(seen)
}
