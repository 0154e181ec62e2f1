package planner

import (
	"net/netip"
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
			p.enqueue(serviceKey(s.Namespace + "/" + name))
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

// localEndpointCounts returns, for a VIP shared by Services with
// externalTrafficPolicy Local, how many ready endpoints of theirs of the
// VIP's address family each node has (summed over those Services); nil
// when none is Local. With Local, a layer-2 VIP's traffic reaches only the
// announcing node's endpoints: the counts are what it can serve.
func (p *Planner) localEndpointCounts(v *vip) map[string]int {
	var counts map[string]int
	for key, svc := range v.services {
		if svc == nil || svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		if counts == nil {
			counts = map[string]int{}
		}
		for n, c := range p.readyEndpoints(key, v.addr) {
			counts[n] += c
		}
	}
	return counts
}

// readyEndpoints counts the ready endpoints of a Service on each node, in
// the EndpointSlices of addr's family.
func (p *Planner) readyEndpoints(key string, addr netip.Addr) map[string]int {
	ns, name, _ := strings.Cut(key, "/")
	out := map[string]int{}
	sl, err := p.slices.EndpointSlices(ns).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: name}))
	if err != nil {
		return out
	}
	family := discoveryv1.AddressTypeIPv4
	if addr.Is6() {
		family = discoveryv1.AddressTypeIPv6
	}
	for _, s := range sl {
		if s.AddressType != family {
			continue
		}
		for _, ep := range s.Endpoints {
			if ep.NodeName != nil && (ep.Conditions.Ready == nil || *ep.Conditions.Ready) {
				out[*ep.NodeName]++
			}
		}
	}
	return out
}
