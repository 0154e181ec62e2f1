package capiipam

import (
	"context"
	"errors"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"

	"github.com/ironlb/ironlb/ipam"
)

// sync brings one claim (namespace/name) to its answer.
func (c *Controller) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil // not a claim's key: nothing to do, never retried
	}
	claim, u, err := get[ipamv1.IPAddressClaim](c.claims, key)
	if err != nil {
		return err
	}
	if claim == nil {
		return c.forget(ctx, ns, name)
	}
	if !ours(claim.Spec.PoolRef) {
		return nil
	}
	if why, err := c.paused(claim); err != nil || why != "" {
		if why != "" {
			c.transition(claim, "paused", v1.EventTypeNormal, EventPaused, "IronLB leaves this claim alone: "+why)
		}
		return err
	}
	if claim.DeletionTimestamp != nil {
		return c.release(ctx, claim, u)
	}
	if !slices.Contains(claim.Finalizers, ReleaseAddressFinalizer) {
		u = u.DeepCopy()
		u.SetFinalizers(append(u.GetFinalizers(), ReleaseAddressFinalizer))
		if u, err = c.dyn.Resource(ClaimResource).Namespace(ns).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
			return ignoreConflict(fmt.Errorf("adding finalizer %s to IPAddressClaim %s: %w", ReleaseAddressFinalizer, key, err))
		}
		if claim, err = decode[ipamv1.IPAddressClaim](u); err != nil {
			return err
		}
	}
	existing, _, err := get[ipamv1.IPAddress](c.addresses, key)
	if err != nil {
		return err
	}
	if existing != nil && !belongs(existing, claim) {
		return c.refuse(ctx, claim, u, &refusal{ReasonAllocationFailed, fmt.Sprintf(
			"IPAddress %s exists and is not this claim's (its claimRef, poolRef or controller differ); IronLB leaves it alone", key)})
	}
	ans, err := c.allocate(claim, existing)
	var r *refusal
	if errors.As(err, &r) {
		return c.refuse(ctx, claim, u, r)
	}
	if err != nil {
		return err
	}
	if existing == nil {
		if err := c.createAddress(ctx, claim, ans); err != nil {
			return err
		}
		if ans.pool != nil {
			c.pools.Touch(ans.pool.Name)
		}
	} else if err := c.protect(ctx, key); err != nil {
		return err
	}
	msg := fmt.Sprintf("IPAddress %s holds %s/%d from IPPool %s", name, ans.addr, ans.prefix, claim.Spec.PoolRef.Name)
	if err := c.writeStatus(ctx, u, metav1.ConditionTrue, ReasonReady, msg, name); err != nil {
		return err
	}
	c.transition(claim, string(ReasonReady), v1.EventTypeNormal, string(ReasonReady), msg)
	return nil
}

// refuse reports r on the claim (condition, and an Event when it
// changed) and retries the claim after RetryInterval: pool changes retry
// it sooner. Work stays bounded: one attempt per claim per interval.
func (c *Controller) refuse(ctx context.Context, claim *ipamv1.IPAddressClaim, u *unstructured.Unstructured, r *refusal) error {
	refusalsTotal.WithLabelValues(string(r.reason)).Inc()
	c.queue.AddAfter(claim.Namespace+"/"+claim.Name, c.opts.RetryInterval)
	if err := c.writeStatus(ctx, u, metav1.ConditionFalse, r.reason, r.message, ""); err != nil {
		return err
	}
	c.transition(claim, string(r.reason), v1.EventTypeWarning, string(r.reason), r.message)
	return nil
}

// transition records an Event when the claim's state changed.
func (c *Controller) transition(claim *ipamv1.IPAddressClaim, state, eventType, reason, msg string) {
	key := claim.Namespace + "/" + claim.Name
	c.mu.Lock()
	changed := c.state[key] != state+"\x00"+msg
	c.state[key] = state + "\x00" + msg
	c.mu.Unlock()
	if !changed {
		return
	}
	c.log.V(2).Info("IPAddressClaim", "claim", klog.KRef(claim.Namespace, claim.Name), "state", state, "message", msg)
	if c.recorder != nil {
		c.recorder.Event(claim, eventType, reason, msg)
	}
}

// subjectOf is the claim as the pools' serviceAllocation sees it: its
// namespace (and that namespace's labels) and its own labels.
func (c *Controller) subjectOf(claim *ipamv1.IPAddressClaim) ipam.Subject {
	s := ipam.Subject{Namespace: claim.Namespace, Labels: claim.Labels}
	if c.namespaces == nil {
		s.NamespaceErr = errors.New("namespaces are not watched")
		return s
	}
	ns, err := c.namespaces.Get(claim.Namespace)
	if err != nil {
		s.NamespaceErr = fmt.Errorf("namespace %s: %w", claim.Namespace, err)
		return s
	}
	s.NamespaceLabels = ns.Labels
	if s.NamespaceLabels == nil {
		s.NamespaceLabels = labels.Set{}
	}
	return s
}

// createAddress creates the claim's IPAddress: same name and namespace,
// owned by the claim (controller) and the pool, protected by
// ProtectAddressFinalizer.
func (c *Controller) createAddress(ctx context.Context, claim *ipamv1.IPAddressClaim, ans answer) error {
	addr := &ipamv1.IPAddress{
		TypeMeta: metav1.TypeMeta{APIVersion: ipamv1.GroupVersion.String(), Kind: "IPAddress"},
		ObjectMeta: metav1.ObjectMeta{
			Name: claim.Name, Namespace: claim.Namespace,
			Finalizers: []string{ProtectAddressFinalizer},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: claimGVK.GroupVersion().String(), Kind: claimGVK.Kind, Name: claim.Name, UID: claim.UID,
				Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Spec: ipamv1.IPAddressSpec{
			ClaimRef: ipamv1.IPAddressClaimReference{Name: claim.Name},
			PoolRef:  claim.Spec.PoolRef,
			Address:  ans.addr.String(),
			Prefix:   ptr.To(ans.prefix),
			Gateway:  ans.gateway,
		},
	}
	if ans.pool != nil {
		addr.OwnerReferences = append(addr.OwnerReferences, metav1.OwnerReference{
			APIVersion: poolGVK.GroupVersion().String(), Kind: poolGVK.Kind, Name: ans.pool.Name, UID: ans.pool.UID,
			Controller: ptr.To(false), BlockOwnerDeletion: ptr.To(true),
		})
	}
	if v, ok := claim.Labels[ClusterNameLabel]; ok {
		addr.Labels = map[string]string{ClusterNameLabel: v}
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(addr)
	if err != nil {
		return err
	}
	_, err = c.dyn.Resource(AddressResource).Namespace(claim.Namespace).Create(ctx, &unstructured.Unstructured{Object: obj}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The cache is behind: the IPAddress's event brings the claim back.
		return nil
	}
	if err != nil {
		return fmt.Errorf("creating IPAddress %s/%s (%s): %w", claim.Namespace, claim.Name, ans.addr, err)
	}
	return nil
}

// protect puts ProtectAddressFinalizer back on the claim's IPAddress
// when someone removed it while the claim exists.
func (c *Controller) protect(ctx context.Context, key string) error {
	obj, exists, err := c.addresses.GetStore().GetByKey(key)
	if err != nil || !exists {
		return err
	}
	u := obj.(*unstructured.Unstructured)
	if slices.Contains(u.GetFinalizers(), ProtectAddressFinalizer) || u.GetDeletionTimestamp() != nil {
		return nil
	}
	u = u.DeepCopy()
	u.SetFinalizers(append(u.GetFinalizers(), ProtectAddressFinalizer))
	_, err = c.dyn.Resource(AddressResource).Namespace(u.GetNamespace()).Update(ctx, u, metav1.UpdateOptions{})
	return ignoreConflict(err)
}

// ignoreConflict drops a conflict or not-found error: the informer brings
// the newer object, and with it the claim back to the queue.
func ignoreConflict(err error) error {
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		return nil
	}
	return err
}
