package planner

import (
	"strings"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// enqueueSlice re-plans the Service of an EndpointSlice that changed.
func (p *Planner) enqueueSlice(obj any) {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	if s, ok := obj.(*discoveryv1.EndpointSlice); ok {
		if name := s.Labels[discoveryv1.LabelServiceName]; name != "" {
			p.enqueue(s.Namespace + "/" + name)
		}
	}
	p.notifyDelivered(obj)
}

// localEndpointNodes returns the nodes that may announce v because of
// externalTrafficPolicy Local: those with a ready endpoint of every Local
// Service sharing v. It returns nil when no Service sharing v is Local.
func (p *Planner) localEndpointNodes(v *vip) map[string]bool {
	var local map[string]bool
	for key, svc := range v.services {
		if svc == nil || svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		have := p.endpointNodes(key)
		if local == nil {
			local = have
			continue
		}
		for n := range local {
			if !have[n] {
				delete(local, n)
			}
		}
	}
	return local
}

// endpointNodes returns the nodes with a ready endpoint of the Service.
func (p *Planner) endpointNodes(key string) map[string]bool {
	ns, name, _ := strings.Cut(key, "/")
	out := map[string]bool{}
	sl, err := p.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	if err != nil {
		return out
	}
	for _, s := range sl {
		for _, ep := range s.Endpoints {
			if ep.NodeName != nil && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				out[*ep.NodeName] = true
			}
		}
	}
	return out
}
