package loadbalancer

import (
	"context"
	"encoding/json"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
)

// dualStackKey is the one key of the dual-stack queue.
const dualStackKey = "complete"

// completeDualStack gives PreferDualStack Services the family they lack as
// soon as a pool can serve it. The service controller syncs a Service only
// when the Service changes, so after every pool change IronLB ensures such
// Services itself and writes their status, on condition that the Service
// is still at the version read (a conflict is retried on the newer one).
func (b *Balancer) completeDualStack(ctx context.Context) {
	for {
		key, quit := b.dualStack.Get()
		if quit {
			return
		}
		switch b.completeAll(ctx) {
		case staleCache:
			b.dualStack.AddAfter(key, conflictRetry)
		case writeFailed:
			b.dualStack.AddAfter(key, b.retry)
		}
		b.dualStack.Done(key)
	}
}

// conflictRetry is how soon a status write refused for a stale resource
// version is tried again: the informer catches up within milliseconds.
const conflictRetry = 100 * time.Millisecond

// completion is how a pass over the dual-stack Services went.
type completion int

const (
	completed   completion = iota // every Service that could be completed was
	staleCache                    // a write met a newer version: try again soon
	writeFailed                   // a write failed: try again after the retry period
)

// completeAll ensures every PreferDualStack Service that has fewer
// addresses than families and writes the status of those it completed.
func (b *Balancer) completeAll(ctx context.Context) completion {
	svcs, err := b.services.List(labels.Everything())
	if err != nil {
		return writeFailed
	}
	result := completed
	for _, svc := range svcs {
		if !b.class.Serves(svc) || !lacksFamily(svc) {
			continue
		}
		st, err := b.EnsureLoadBalancer(ctx, "", svc, nil)
		if err != nil || len(st.Ingress) <= len(svc.Status.LoadBalancer.Ingress) {
			continue // still nothing for the other family
		}
		switch err := b.writeStatus(ctx, svc, st); {
		case apierrors.IsConflict(err):
			// The cache lags a write (often IronLB's own Announced
			// condition): try again on the newer version.
			result = max(result, staleCache)
			continue
		case err != nil:
			b.log.Error(err, "Cannot write the status of a dual-stack Service", "service", klog.KObj(svc))
			result = writeFailed
			continue
		}
		b.log.Info("Completed a PreferDualStack Service with its second family", "service", klog.KObj(svc), "ingress", st.Ingress)
	}
	return result
}

// lacksFamily reports whether svc (one IronLB serves) is a PreferDualStack LoadBalancer with
// fewer addresses than families.
func lacksFamily(svc *v1.Service) bool {
	return svc.Spec.Type == v1.ServiceTypeLoadBalancer && svc.DeletionTimestamp == nil &&
		svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == v1.IPFamilyPolicyPreferDualStack &&
		len(svc.Status.LoadBalancer.Ingress) > 0 && len(svc.Status.LoadBalancer.Ingress) < len(svc.Spec.IPFamilies)
}

// writeStatus patches status.loadBalancer, as the service controller does,
// on condition that the Service is still at svc's resource version.
func (b *Balancer) writeStatus(ctx context.Context, svc *v1.Service, st *v1.LoadBalancerStatus) error {
	if b.client == nil {
		return nil
	}
	var lb any = st
	if len(st.Ingress) == 0 {
		lb = map[string]any{"ingress": nil} // a merge patch removes it only so
	}
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"resourceVersion": svc.ResourceVersion},
		"status":   map[string]any{"loadBalancer": lb},
	})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = b.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}
