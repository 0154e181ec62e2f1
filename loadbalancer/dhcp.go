package loadbalancer

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/dhcplease"
)

// Addresses of DHCP-backed pools (IPPool spec.dhcp): the Balancer leases
// each Service's address from the LAN's DHCP server (dhcplease) before the
// allocator gives it, so that the allocator's rules (one owner per
// address, sharing, tenancy, the pool's range) hold for it as for any
// address. The Events a Service gets:
const (
	// ReasonDHCPLeasePending: no lease yet (no server answered, it is out
	// of addresses or refused, no speaker can talk DHCP); retried.
	ReasonDHCPLeasePending = "DHCPLeasePending"
	// ReasonDHCPRequestedAddressRefused: the server does not give the
	// address the Service asks for.
	ReasonDHCPRequestedAddressRefused = "DHCPRequestedAddressRefused"
	// ReasonDHCPLeaseUnusable: the server leased an address the pool or
	// another holder rules out; IronLB gave it back.
	ReasonDHCPLeaseUnusable = "DHCPLeaseUnusable"
	// ReasonDHCPLeaseLost: the server refused to renew the lease, or it
	// expired unanswered: the address was withdrawn.
	ReasonDHCPLeaseLost = "DHCPLeaseLost"
	// ReasonDHCPAddressDeclined: a speaker found the leased address in use
	// by another host; IronLB declined it (RFC 2131's DHCPDECLINE) and
	// leases another.
	ReasonDHCPAddressDeclined = "DHCPAddressDeclined"
)

// WithLeases has the Balancer lease the addresses of DHCP-backed pools
// through m.
func WithLeases(m *dhcplease.Manager) Option { return func(b *Balancer) { b.leases = m } }

// dhcpPools is what a PoolWatcher that knows DHCP-backed pools offers.
type dhcpPools interface {
	DHCP(pool string) (v1alpha1.DHCP, bool)
}

// dhcpPool returns the DHCP settings of pool, false when its addresses
// are not leased from DHCP.
func (b *Balancer) dhcpPool(pool string) (v1alpha1.DHCP, bool) {
	dp, ok := b.pools.(dhcpPools)
	if !ok || b.leases == nil || pool == "" {
		return v1alpha1.DHCP{}, false
	}
	return dp.DHCP(pool)
}

// leaseTimeout bounds how long an EnsureLoadBalancer call waits for a new
// lease; an exchange on a LAN takes milliseconds.
const leaseTimeout = 10 * time.Second

// clusterID identifies this cluster in client identifiers, so that two
// clusters on one LAN never share a lease: the UID of its kube-system
// namespace.
func (b *Balancer) clusterID() string {
	if b.namespaces == nil {
		return ""
	}
	ns, err := b.namespaces.Get("kube-system")
	if err != nil {
		return ""
	}
	return string(ns.UID)
}

// leaseHolder is who a Service's lease belongs to: its sharing group, or
// the Service.
func leaseHolder(req ipam.Request) string {
	if req.Sharing.Key != "" {
		return "share/" + req.Sharing.Key
	}
	return "service/" + req.Owner
}

// lease gives req, for a Service whose pool is DHCP-backed, the address
// leased for it (leasing one if it has none), as its one address and
// lease. It returns an error to show on the Service when there is none.
func (b *Balancer) lease(ctx context.Context, svc *v1.Service, req *ipam.Request) error {
	d, ok := b.dhcpPool(req.Pool)
	if !ok {
		return nil
	}
	id := dhcplease.ClientID(b.clusterID(), req.Pool, leaseHolder(*req))
	var requested netip.Addr
	for _, a := range req.Addresses {
		if a.Is4() {
			requested = a
		}
	}
	if l, ok := b.leases.Get(id); ok && requested.IsValid() && l.Addr != requested {
		// The user asks for another address: the server must be told
		// the old one is free before it gives this client another.
		b.leases.Release(ctx, id)
	}
	ctx, cancel := context.WithTimeout(ctx, leaseTimeout)
	defer cancel()
	l, err := b.leases.Acquire(ctx, dhcplease.Want{ClientID: id, Pool: req.Pool, Interface: string(d.Interface),
		Name: req.Name, Requested: requested})
	if err != nil {
		var nr *dhcplease.NotRequestedError
		if errors.As(err, &nr) {
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPRequestedAddressRefused,
				"The DHCP server of IPPool %s does not give %s (it offers %s): ask for another address, or none", req.Pool, nr.Requested, nr.Offered)
		} else {
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLeasePending,
				"Waiting for an address from the DHCP server of IPPool %s: %v", req.Pool, err)
		}
		b.log.Info("Service has no DHCP lease yet", "service", klog.KObj(svc), "pool", req.Pool, "err", err)
		return err
	}
	req.Addresses = []netip.Addr{l.Addr}
	req.Leased = []netip.Addr{l.Addr}
	return nil
}

// unusableLease gives back a lease the allocator refused for req (outside
// the pool's addresses, held by another), unless someone holds its address.
func (b *Balancer) unusableLease(svc *v1.Service, req ipam.Request, err error) {
	if len(req.Leased) == 0 {
		return
	}
	addr := req.Leased[0]
	b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonDHCPLeaseUnusable,
		"The DHCP server of IPPool %s leased %s, which IronLB cannot give this Service: %v", req.Pool, addr, err)
	if b.alloc.Holds(addr) {
		return
	}
	b.releaseLease(addr)
}

// releaseLeases gives back the leases of the addresses before held and
// after does not, once nobody holds them.
func (b *Balancer) releaseLeases(before, after ipam.Allocation) {
	if b.leases == nil {
		return
	}
	for _, a := range before.Addresses {
		if !slices.Contains(after.Addresses, a) && !b.alloc.Holds(a) {
			b.releaseLease(a)
		}
	}
}

// releaseTimeout bounds a release, run in the background.
const releaseTimeout = 30 * time.Second

// releaseLease gives the lease of addr back to the server, if IronLB
// holds one, in the background.
func (b *Balancer) releaseLease(addr netip.Addr) {
	l, ok := b.leases.ByAddr(addr)
	if !ok {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), releaseTimeout)
		defer cancel()
		b.leases.Release(ctx, l.ClientID)
	}()
}

// adoptLeases takes on, at a start, the leases of the addresses Services'
// status lists in DHCP-backed pools: the lease manager renews each at once.
func (b *Balancer) adoptLeases() {
	if b.leases == nil {
		return
	}
	svcs, err := b.services.List(labels.Everything())
	if err != nil {
		return
	}
	cluster := b.clusterID()
	for _, svc := range svcs {
		if !b.class.Owns(svc) {
			continue
		}
		al, ok := b.alloc.Lookup(string(svc.UID))
		if !ok {
			continue
		}
		req := RestoreRequestFor(svc, nil)
		for i, a := range al.Addresses {
			d, ok := b.dhcpPool(al.Pools[i])
			if !ok {
				continue
			}
			b.leases.Adopt(dhcplease.Lease{ClientID: dhcplease.ClientID(cluster, al.Pools[i], leaseHolder(req)),
				Pool: al.Pools[i], Interface: string(d.Interface), Name: req.Name, Addr: a})
		}
	}
}

// leaseLost withdraws the address of a lease the server took back.
func (b *Balancer) leaseLost(l dhcplease.Lease, err error) {
	b.withdrawLeased(l, ReasonDHCPLeaseLost, fmt.Sprintf("Withdrew %s: %v; IronLB asks the DHCP server of IPPool %s for an address again", l.Addr, err, l.Pool))
}

// withdrawLeased takes the address of lease l from every Service holding
// it (a Warning Event with reason and msg; the planner withdraws it) and
// queues them to lease again; leaseAgain writes their status.
func (b *Balancer) withdrawLeased(l dhcplease.Lease, reason, msg string) {
	for _, o := range b.alloc.Holders(l.Addr) {
		svc, ok := b.serviceOf(o)
		if !ok {
			continue
		}
		before, _ := b.alloc.Lookup(o.Owner)
		b.alloc.Release(o.Owner)
		b.log.Info("Withdrew a Service's leased address", "service", klog.KObj(svc), "address", l.Addr, "reason", reason)
		b.recorder.Event(svc, v1.EventTypeWarning, reason, msg)
		b.pools.Touch(before.Pools...)
		b.changed(svc)
		b.leaseQueue.Add(o.Name)
	}
}

// AddressInUse is told (by the planner, under its lock: it only queues)
// of a VIP a speaker found in use by another host. A leased one is
// declined and replaced (runDeclines).
func (b *Balancer) AddressInUse(addr netip.Addr) {
	if b.leases == nil {
		return
	}
	if _, ok := b.leases.ByAddr(addr); ok {
		b.declineQueue.Add(addr)
	}
}

// declineTimeout bounds one decline.
const declineTimeout = 30 * time.Second

// runDeclines declines the leased addresses found in use by another host
// and gives their Services another, until the queue shuts down.
func (b *Balancer) runDeclines() {
	for {
		addr, quit := b.declineQueue.Get()
		if quit {
			return
		}
		if l, ok := b.leases.ByAddr(addr); ok {
			ctx, cancel := context.WithTimeout(context.Background(), declineTimeout)
			if err := b.leases.Decline(ctx, l.ClientID); err != nil {
				b.log.Info("Could not decline a leased address in use by another host; leasing another anyway", "address", addr, "err", err)
			}
			cancel()
			b.withdrawLeased(l, ReasonDHCPAddressDeclined, fmt.Sprintf(
				"%s, leased from the DHCP server of IPPool %s, is in use by another host on the LAN: IronLB declined it and asks the server for another address", addr, l.Pool))
		}
		b.declineQueue.Done(addr)
	}
}

// runLeaseQueue gives the Services that lost their lease an address again
// and writes their status (the service controller syncs a Service only
// when it changes), until the queue shuts down.
func (b *Balancer) runLeaseQueue(ctx context.Context) {
	for {
		key, quit := b.leaseQueue.Get()
		if quit {
			return
		}
		if err := b.leaseAgain(ctx, key); err != nil {
			b.leaseQueue.AddAfter(key, b.retry)
		}
		b.leaseQueue.Done(key)
	}
}

// leaseAgain ensures the Service key again and writes its status: the
// new address, or none while it has no lease.
func (b *Balancer) leaseAgain(ctx context.Context, key string) error {
	ns, n, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil
	}
	svc, err := b.services.Services(ns).Get(n)
	if apierrors.IsNotFound(err) || (err == nil && (svc.DeletionTimestamp != nil || svc.Spec.Type != v1.ServiceTypeLoadBalancer)) {
		return nil
	}
	if err != nil {
		return err
	}
	st, ensureErr := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if ensureErr != nil {
		st = &v1.LoadBalancerStatus{}
	}
	if err := b.writeStatus(ctx, svc, st); err != nil {
		return fmt.Errorf("writing the status of %s: %w", key, err)
	}
	return ensureErr
}

func newDeclineQueue() workqueue.TypedInterface[netip.Addr] {
	return workqueue.NewTypedWithConfig(workqueue.TypedQueueConfig[netip.Addr]{Name: "ironlb-dhcp-declines"})
}

func newLeaseQueue() workqueue.TypedDelayingInterface[string] {
	return workqueue.NewTypedDelayingQueueWithConfig(workqueue.TypedDelayingQueueConfig[string]{Name: "ironlb-dhcp-lost"})
}
