package loadbalancer

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// restoreAll is Run's start-up before the Balancer answers calls: it
// rebuilds every allocation from the Services' status (restore), then
// other owners' (the restorers), reserves the Nodes' addresses and the
// control-plane VIPs (taking those from Services that held them) and the
// addresses of other load balancers' Services, and adopts the DHCP leases
// of the restored addresses.
func (b *Balancer) restoreAll(ctx context.Context) error {
	start := time.Now()
	n, err := b.restore()
	if err != nil {
		return err
	}
	for _, r := range b.restorers {
		if err := r(ctx); err != nil {
			return fmt.Errorf("restoring allocations besides the Services': %w", err)
		}
	}
	b.reserveNodeAddresses()
	b.waitControlPlaneSources(ctx)
	b.reserveControlPlane()
	foreign := b.reserveAllForeign()
	b.adoptLeases()
	b.log.Info("Restored allocations from Service status", "services", n, "otherLoadBalancers", foreign, "duration", time.Since(start))
	return nil
}

// restore rebuilds the allocator from the addresses Services hold in their
// status. One rule: a Service keeps every address its status holds unless
// other Services hold it without a sharing key in common (ipam.RestoreAll:
// the ones whose key is the one the address was recorded as shared under
// keep it, else those still sharing a key, else the oldest). Sharers whose
// ports or traffic policies clash keep it too, and get a Warning Event; a
// Service whose annotations no longer parse keeps its addresses, and the
// next sync reports the error.
func (b *Balancer) restore() (int, error) {
	all, err := b.services.List(labels.Everything())
	if err != nil {
		return 0, err
	}
	var svcs []*v1.Service
	for _, s := range all {
		if b.class.Owns(s) && len(s.Status.LoadBalancer.Ingress) > 0 {
			svcs = append(svcs, s)
		}
	}
	slices.SortFunc(svcs, func(x, y *v1.Service) int {
		if c := x.CreationTimestamp.Compare(y.CreationTimestamp.Time); c != 0 {
			return c
		}
		return strings.Compare(x.Namespace+"/"+x.Name, y.Namespace+"/"+y.Name)
	})
	rs := make([]ipam.Restoration, len(svcs))
	for i, svc := range svcs {
		addrs := announced.StatusAddrs(svc)
		shared := map[netip.Addr]string{}
		for a, r := range announced.Records(svc) {
			shared[a] = r.SharedAs
		}
		req := RestoreRequestFor(svc, nil)
		req.Subject = b.subjectOf(svc)
		rs[i] = ipam.Restoration{Req: req, Addrs: addrs, SharedAs: shared}
	}
	for i, err := range b.alloc.RestoreAll(rs) {
		svc := svcs[i]
		if err != nil {
			restoreConflictsTotal.Inc()
			b.log.Error(err, "Cannot restore address of Service", "service", klog.KObj(svc))
			b.logTaken(svc, err)
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonAddressConflict, "IronLB could not keep every address in this Service's status: %v", err)
		}
		for _, c := range b.alloc.SharingConflicts(string(svc.UID)) {
			b.log.Info("Service keeps a shared address although its sharers clash", "service", klog.KObj(svc), "address", c.Addr, "reason", c.Reason, "conflict", c.Detail)
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonSharingConflict,
				"Keeping %s, but its sharers clash: %s; change the ports or externalTrafficPolicy so that they can share it", c.Addr, c.Message)
		}
		if al, ok := b.alloc.Lookup(string(svc.UID)); ok {
			b.pools.Touch(al.Pools...)
			b.policyQueue.Add(policyService + svc.Namespace + "/" + svc.Name)
		}
	}
	return len(svcs), nil
}
