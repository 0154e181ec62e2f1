package loadbalancer

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/ipam/ippool"
)

// The control-plane VIP (the kube-apiserver's own address, held by the
// control-plane speakers of package cpvip) is never given to a Service:
// IronLB announcing it for a Service would answer for the API server and
// cut the cluster off from it. It comes from the cloud config
// (controlPlane.vips) and from kube-system/kubeadm-config (package
// kubeadm). The allocator holds it reserved (ipam.ReserveControlPlane), so
// no pool hands it out and pools count it as used; a pool that covers it
// is marked Conflicting and gets a Warning Event (package ippool); a
// Service that asks for it stays pending with a Warning Event. A Service
// whose status lists it (from before the VIP was known) loses it, with a
// Warning Event: the one exception to "an existing Service keeps its
// address" (DESIGN invariant 3), because keeping it breaks the cluster.
// IronLB then gives it another address and writes its status itself (the
// service controller syncs a Service only when it changes).

// ReasonControlPlaneVIPReserved is the Warning Event on a Service that
// asks for or held the control-plane VIP (and, from package ippool, on an
// IPPool that covers it).
const ReasonControlPlaneVIPReserved = ippool.ReasonControlPlaneVIPReserved

// Sources of control-plane VIPs.
const (
	ControlPlaneFromConfig  = "the cloud config"
	ControlPlaneFromKubeadm = "kube-system/kubeadm-config"
)

// controlPlaneOwner holds the control-plane VIPs in the allocator.
const controlPlaneOwner = "control-plane-vip"

// controlPlaneSyncTimeout bounds how long Run waits for the sources of
// control-plane VIPs it was given (WithControlPlaneSource) before it
// answers calls without them (a missing RBAC rule must not stop IronLB).
const controlPlaneSyncTimeout = 10 * time.Second

// WithControlPlaneVIPs reserves the control-plane VIPs listed in the cloud
// config.
func WithControlPlaneVIPs(vips []netip.Addr) Option {
	return func(b *Balancer) { b.cpVIPs[ControlPlaneFromConfig] = slices.Clone(vips) }
}

// WithControlPlaneSource makes Run wait (a bounded time) for a source of
// control-plane VIPs that calls SetControlPlaneVIPs, before it answers
// calls.
func WithControlPlaneSource(synced cache.InformerSynced) Option {
	return func(b *Balancer) { b.cpSynced = append(b.cpSynced, synced) }
}

// SetControlPlaneVIPs sets the control-plane VIPs source knows of (none:
// the source has none now) and reserves the union of every source's.
func (b *Balancer) SetControlPlaneVIPs(source string, vips []netip.Addr) {
	b.mu.Lock()
	b.cpVIPs[source] = slices.Clone(vips)
	b.mu.Unlock()
	if b.Ready() {
		b.reserveControlPlane()
	}
}

// controlPlaneVIPs returns every source's VIPs, each once, sorted, with
// the sources that name each.
func (b *Balancer) controlPlaneVIPs() map[netip.Addr]string {
	b.mu.Lock()
	defer b.mu.Unlock()
	from := map[netip.Addr][]string{}
	for _, src := range slices.Sorted(maps.Keys(b.cpVIPs)) {
		for _, a := range b.cpVIPs[src] {
			from[a] = append(from[a], src)
		}
	}
	out := map[netip.Addr]string{}
	for a, srcs := range from {
		out[a] = strings.Join(srcs, " and ")
	}
	return out
}

// waitControlPlaneSources waits, a bounded time, for the sources of
// control-plane VIPs.
func (b *Balancer) waitControlPlaneSources(ctx context.Context) {
	if len(b.cpSynced) == 0 {
		return
	}
	waitCtx, cancel := context.WithTimeout(ctx, controlPlaneSyncTimeout)
	defer cancel()
	if !cache.WaitForCacheSync(waitCtx.Done(), b.cpSynced...) {
		b.log.Error(nil, "kube-system/kubeadm-config not read yet; going on without its control-plane VIP until it is (may ironlb-ccm get, list and watch it? deploy/ccm-kubeadm-config-reader.yaml)", "waited", controlPlaneSyncTimeout)
	}
}

// reserveControlPlane reserves the control-plane VIPs, takes them from
// the Services that held them and queues those Services for a new
// address.
func (b *Balancer) reserveControlPlane() {
	vips := b.controlPlaneVIPs()
	addrs := slices.SortedFunc(maps.Keys(vips), netip.Addr.Compare)
	evicted := b.alloc.ReserveControlPlane(controlPlaneOwner, "the control-plane VIP", addrs)
	b.pools.SetControlPlaneVIPs(vips)
	for _, ev := range evicted {
		pool := b.alloc.PoolContaining(ev.Addr)
		b.pools.Touch(pool)
		for i, uid := range ev.Owners {
			svc := b.serviceByName(ev.Names[i], uid)
			b.log.Error(nil, "A Service held the control-plane VIP; it loses it", "service", ev.Names[i], "address", ev.Addr, "source", vips[ev.Addr])
			if svc == nil {
				continue
			}
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonControlPlaneVIPReserved,
				"Released %s: it is the cluster's control-plane VIP (the kube-apiserver's address, from %s), which IronLB never announces for a Service; this Service gets another address unless it asks for this one",
				ev.Addr, vips[ev.Addr])
			b.changed(svc)
			b.cpQueue.Add(svc.Namespace + "/" + svc.Name)
		}
	}
}

// serviceByName returns the Service "namespace/name" if its UID is uid.
func (b *Balancer) serviceByName(name, uid string) *v1.Service {
	ns, n, ok := strings.Cut(name, "/")
	if !ok {
		return nil
	}
	svc, err := b.services.Services(ns).Get(n)
	if err != nil || svc.UID != types.UID(uid) {
		return nil
	}
	return svc
}

// runControlPlane gives each Service that lost the control-plane VIP
// another address (or none, if it asks for the VIP) and writes its
// status, until ctx ends.
func (b *Balancer) runControlPlane(ctx context.Context) {
	go func() {
		<-ctx.Done()
		b.cpQueue.ShutDown()
	}()
	for {
		key, quit := b.cpQueue.Get()
		if quit {
			return
		}
		if err := b.resyncEvicted(ctx, key); err != nil {
			b.log.Error(err, "Cannot write the status of a Service that lost the control-plane VIP; retrying", "service", key)
			b.cpQueue.AddRateLimited(key)
		} else {
			b.cpQueue.Forget(key)
		}
		b.cpQueue.Done(key)
	}
}

// resyncEvicted ensures the Service key and writes its status: its new
// addresses, or those it still holds when it gets none (it asks for the
// VIP: it stays pending, the service controller's next sync says why).
func (b *Balancer) resyncEvicted(ctx context.Context, key string) error {
	ns, name, _ := strings.Cut(key, "/")
	svc, err := b.services.Services(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
	if err != nil {
		al, _ := b.alloc.Lookup(string(svc.UID))
		st = statusFor(al)
	}
	if slices.Equal(ingressOf(st), ingressOf(&svc.Status.LoadBalancer)) {
		return nil
	}
	if err := b.writeStatus(ctx, svc, st); err != nil {
		return fmt.Errorf("writing the status of %s: %w", key, err)
	}
	b.log.Info("Wrote the status of a Service that lost the control-plane VIP", "service", klog.KObj(svc), "ingress", ingressOf(st))
	return nil
}

// ingressOf returns the addresses of a load-balancer status.
func ingressOf(st *v1.LoadBalancerStatus) []string {
	var out []string
	for _, ing := range st.Ingress {
		out = append(out, ing.IP)
	}
	return out
}

// warnControlPlaneRequest records a Warning Event on a Service refused
// the control-plane VIP it asks for.
func (b *Balancer) warnControlPlaneRequest(svc *v1.Service, err error) {
	for _, te := range ipam.TakenErrors(err) {
		if te.Reason == ipam.ReasonControlPlaneVIP {
			b.recorder.Eventf(svc, v1.EventTypeWarning, ReasonControlPlaneVIPReserved,
				"%s is the cluster's control-plane VIP (the kube-apiserver's address), which IronLB never gives to a Service; ask for another address", te.Addr)
		}
	}
}

func newControlPlaneQueue() workqueue.TypedRateLimitingInterface[string] {
	return workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "ironlb-control-plane-vip"})
}
