package loadbalancer

import (
	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/ipam"
)

// serviceOf returns the Service that holds addresses as o: the Service
// named o.Name whose UID is o.Owner (a Service holds its addresses under
// its UID). The allocator's other owners (a Node's reservation, a Cluster
// API claim, a pool's gateway) have none, nor has a Service deleted or
// recreated under the same name since.
func (b *Balancer) serviceOf(o ipam.OwnerRef) (*v1.Service, bool) {
	ns, name, err := cache.SplitMetaNamespaceKey(o.Name)
	if err != nil || ns == "" {
		return nil, false
	}
	svc, err := b.services.Services(ns).Get(name)
	if err != nil || string(svc.UID) != o.Owner {
		return nil, false
	}
	return svc, true
}
