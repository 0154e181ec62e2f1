package loadbalancer

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// SetInformers takes the Service, Namespace and Node informers from the
// controller manager's shared factory, so that they are cached once.
func (b *Balancer) SetInformers(factory informers.SharedInformerFactory) {
	svc := factory.Core().V1().Services()
	ns := factory.Core().V1().Namespaces()
	nodes := factory.Core().V1().Nodes()
	b.services, b.namespaces, b.nodes = svc.Lister(), ns.Lister(), nodes.Lister()
	b.synced = []cache.InformerSynced{svc.Informer().HasSynced, ns.Informer().HasSynced, nodes.Informer().HasSynced, b.pools.HasSynced}
	// A Service that lost an address at the restore still lists it in its
	// status until it is synced; the address is kept from others until then.
	_, _ = svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if s, ok := obj.(*v1.Service); ok && b.Ready() {
				b.reserveForeign(s)
			}
		},
		UpdateFunc: func(old, cur any) {
			b.statusChanged(cur)
			b.serviceLabelsChanged(old, cur)
			if s, ok := cur.(*v1.Service); ok && b.Ready() {
				b.reserveForeign(s)
			}
		},
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if s, ok := obj.(*v1.Service); ok {
				b.deleted(s)
			}
		},
	})
	_, _ = ns.Informer().AddEventHandler(b.namespaceHandler())
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { b.nodesChanged() },
		UpdateFunc: func(old, cur any) { b.nodeUpdated(old, cur) },
		DeleteFunc: func(any) { b.nodesChanged() },
	})
}

// deleted releases what a deleted Service held. The service controller
// does so through its cleanup finalizer first; this covers a Service whose
// finalizer is gone before its addresses were released (removed by hand,
// or a dual-stack completion written just before the deletion).
func (b *Balancer) deleted(svc *v1.Service) {
	if !b.Ready() {
		return
	}
	b.unreserveForeign(svc)
	if before, ok := b.alloc.Lookup(string(svc.UID)); ok {
		b.alloc.Release(string(svc.UID))
		b.report(svc, before, ipam.Allocation{})
		b.changed(svc)
	}
	b.alloc.Unclaim(string(svc.UID), nil)
	b.recheckService(svc)
}

// statusChanged ends the stale claims of a Service on the addresses its
// status no longer lists (ipam: claims).
func (b *Balancer) statusChanged(obj any) {
	svc, ok := obj.(*v1.Service)
	if !ok || !b.alloc.HasClaims(string(svc.UID)) {
		return
	}
	b.alloc.Unclaim(string(svc.UID), announced.StatusAddrs(svc))
}
