package loadbalancer

import (
	"context"
	"errors"
	"slices"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
)

// What the cloud-provider calls do to the allocator: look a Service's
// addresses up, ensure them, release them; then report the change (Events,
// pool status) and tell the OnChange hooks (the planner).

// lookup returns the status of the addresses the Service holds; without
// any, it reports whether its status still lists some.
func (b *Balancer) lookup(service *v1.Service) (*v1.LoadBalancerStatus, bool) {
	al, ok := b.alloc.Lookup(string(service.UID))
	if !ok {
		return nil, len(service.Status.LoadBalancer.Ingress) > 0
	}
	return statusFor(al), true
}

// ensure gives the Service its addresses, or keeps those it has, and
// returns them as its status (EnsureLoadBalancer).
func (b *Balancer) ensure(ctx context.Context, service *v1.Service) (*v1.LoadBalancerStatus, error) {
	if !b.class.Serves(service) {
		// Another implementation's (a class IronLB does not serve, or
		// class-less while IronLB serves only its class).
		return nil, cloudprovider.ImplementedElsewhere
	}
	if err := b.waitReady(ctx); err != nil {
		return nil, err
	}
	req, err := RequestFor(service, nil)
	if err != nil {
		allocationFailuresTotal.WithLabelValues("invalid").Inc()
		return nil, err
	}
	req.Subject = b.subjectOf(service)
	// A Service that became IronLB's (e.g. moved from another load
	// balancer keeping its address) no longer reserves it for the other.
	b.reserveForeign(service)
	if err := b.lease(ctx, service, &req); err != nil {
		allocationFailuresTotal.WithLabelValues("dhcp").Inc()
		return nil, api.NewRetryError(err.Error(), b.retry)
	}
	before, _ := b.alloc.Lookup(req.Owner)
	al, err := b.alloc.Ensure(req)
	if err != nil {
		b.unusableLease(service, req, err)
		allocationFailuresTotal.WithLabelValues(failureReason(err)).Inc()
		b.logTaken(service, err)
		b.warnControlPlaneRequest(service, err)
		switch {
		case errors.Is(err, ipam.ErrNoPools):
			return nil, api.NewRetryError(ErrNoPools.Error(), b.retry)
		case errors.Is(err, ipam.ErrExhausted), errors.Is(err, ipam.ErrConflict), errors.Is(err, ipam.ErrNoPool):
			// Retry at a fixed, short interval: the Service gets its
			// address soon after one is freed or a pool appears.
			return nil, api.NewRetryError(err.Error(), b.retry)
		}
		return nil, err
	}
	for _, te := range al.Taken {
		b.logTaken(service, te)
	}
	b.report(service, before, al)
	b.changed(service)
	b.recheckService(service)
	return statusFor(al), nil
}

// release frees the Service's addresses, if it holds any
// (EnsureLoadBalancerDeleted).
func (b *Balancer) release(service *v1.Service) {
	before, ok := b.alloc.Lookup(string(service.UID))
	if !ok {
		return
	}
	b.alloc.Release(string(service.UID))
	b.report(service, before, ipam.Allocation{})
	b.changed(service)
	b.recheckService(service)
}

func (b *Balancer) changed(svc *v1.Service) {
	for _, fn := range b.onChange {
		fn(svc)
	}
}

// logTaken logs, for the administrator, who holds the addresses err says
// svc cannot have. The error itself, which becomes an Event in svc's
// namespace, names none of them (ipam.TakenError).
func (b *Balancer) logTaken(svc *v1.Service, err error) {
	for _, te := range ipam.TakenErrors(err) {
		b.log.Info("Service refused an address others hold", "service", klog.KObj(svc), "address", te.Addr,
			"reason", te.Reason, "holders", te.Holders, "sharingKey", te.SharingKey, "detail", te.Detail)
	}
}

// report records Events and refreshes pool status after an Ensure.
func (b *Balancer) report(svc *v1.Service, before, after ipam.Allocation) {
	for i, a := range after.Addresses {
		if !slices.Contains(before.Addresses, a) {
			pool := after.Pools[i]
			b.log.Info("Assigned address", "service", klog.KObj(svc), "address", a, "pool", pool)
			b.recorder.Eventf(svc, v1.EventTypeNormal, ReasonIPAllocated, "Assigned %s from IPPool %s", a, pool)
			allocationsTotal.WithLabelValues(pool).Inc()
			b.pools.Touch(pool)
		}
	}
	for i, a := range before.Addresses {
		if !slices.Contains(after.Addresses, a) {
			b.log.Info("Released address", "service", klog.KObj(svc), "address", a)
			b.recorder.Eventf(svc, v1.EventTypeNormal, ReasonIPReleased, "Released %s", a)
			b.pools.Touch(before.Pools[i])
		}
	}
	for _, w := range after.Warnings {
		b.recorder.Event(svc, v1.EventTypeWarning, ReasonFamilyNotServed, w+"; IronLB adds it as soon as a pool can serve it")
	}
	b.releaseLeases(before, after)
}

// statusFor is the Service status of an allocation.
func statusFor(al ipam.Allocation) *v1.LoadBalancerStatus {
	vip := v1.LoadBalancerIPModeVIP
	st := &v1.LoadBalancerStatus{}
	for _, a := range al.Addresses {
		st.Ingress = append(st.Ingress, v1.LoadBalancerIngress{IP: a.String(), IPMode: &vip})
	}
	return st
}
