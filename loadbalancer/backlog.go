package loadbalancer

import (
	"context"
	"encoding/json"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/loadbalancer/planner"
)

// backlogKey is the one key of the backlog queue.
const backlogKey = "backlog"

// serveBacklog gives addresses to the Services that lack them, without
// waiting for the service controller to reach them: once this CCM leads
// (a new leader's service controller syncs every Service, in no particular
// order, and may die before it reaches the new ones), and after every pool
// change (a PreferDualStack Service gets the family it lacks as soon as a
// pool can serve it; the service controller syncs a Service only when the
// Service changes). It ensures each such Service and writes its status.
func (b *Balancer) serveBacklog(ctx context.Context) {
	for {
		key, quit := b.backlog.Get()
		if quit {
			return
		}
		if !b.serveAll(ctx) {
			b.backlog.AddAfter(key, b.retry)
		}
		b.backlog.Done(key)
	}
}

// serveAll ensures every Service that lacks addresses; it reports whether
// every status write worked.
func (b *Balancer) serveAll(ctx context.Context) bool {
	svcs, err := b.services.List(labels.Everything())
	if err != nil {
		return false
	}
	ok := true
	for _, svc := range svcs {
		if !lacksAddress(svc) {
			continue
		}
		st, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
		if err != nil || len(st.Ingress) <= len(svc.Status.LoadBalancer.Ingress) {
			continue // nothing more for it now; the service controller retries
		}
		if err := b.writeStatus(ctx, svc, st); err != nil {
			b.log.Error(err, "Cannot write the status of a Service", "service", klog.KObj(svc))
			ok = false
			continue
		}
		b.log.V(2).Info("Served a Service from the backlog", "service", klog.KObj(svc), "ingress", st.Ingress)
	}
	return ok
}

// lacksAddress reports whether svc is a LoadBalancer IronLB serves that
// has no address, or fewer than its families (PreferDualStack).
func lacksAddress(svc *v1.Service) bool {
	if !planner.Managed(svc) || svc.Spec.Type != v1.ServiceTypeLoadBalancer || svc.DeletionTimestamp != nil {
		return false
	}
	have := len(svc.Status.LoadBalancer.Ingress)
	if have == 0 {
		return true
	}
	return svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == v1.IPFamilyPolicyPreferDualStack && have < len(svc.Spec.IPFamilies)
}

// writeStatus patches status.loadBalancer, as the service controller does.
func (b *Balancer) writeStatus(ctx context.Context, svc *v1.Service, st *v1.LoadBalancerStatus) error {
	if b.client == nil {
		return nil
	}
	patch, err := json.Marshal(map[string]any{"status": map[string]any{"loadBalancer": st}})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = b.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}
