package planner

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// SetInformers registers the Service, Node and EndpointSlice informers:
// a Service's change re-plans it, an EndpointSlice's change its Service
// (endpoints.go), and a Node's change that planning can see every VIP.
func (p *Planner) SetInformers(factory informers.SharedInformerFactory) {
	svc := factory.Core().V1().Services()
	nodes := factory.Core().V1().Nodes()
	eps := factory.Discovery().V1().EndpointSlices()
	p.services, p.nodes, p.slices = svc.Lister(), nodes.Lister(), eps.Lister()
	p.factory = factory
	p.synced = []cache.InformerSynced{svc.Informer().HasSynced, nodes.Informer().HasSynced, eps.Informer().HasSynced}
	_, _ = svc.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.enqueueService,
		UpdateFunc: func(_, obj any) { p.enqueueService(obj) },
		DeleteFunc: p.enqueueService,
	})
	enqueueAll := func(obj any) {
		p.enqueue(allKey)
		p.notifyDelivered(obj)
	}
	_, _ = nodes.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: enqueueAll, DeleteFunc: enqueueAll,
		UpdateFunc: func(old, cur any) {
			if nodeRelevantChange(old.(*v1.Node), cur.(*v1.Node)) {
				p.enqueue(allKey)
			}
			p.notifyDelivered(cur)
		},
	})
	_, _ = eps.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    p.enqueueSlice,
		UpdateFunc: func(_, obj any) { p.enqueueSlice(obj) },
		DeleteFunc: p.enqueueSlice,
	})
}

// ServiceChanged re-plans one Service, e.g. right after its allocation
// changed.
func (p *Planner) ServiceChanged(svc *v1.Service) {
	p.enqueue(serviceKey(svc.Namespace + "/" + svc.Name))
}

func (p *Planner) enqueueService(obj any) {
	if name, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
		p.enqueue(serviceKey(name))
	}
	p.notifyDelivered(obj)
}
