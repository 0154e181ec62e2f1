package capiipam

import (
	"context"
	"fmt"
	"slices"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"
)

// release ends a deleted claim: its IPAddress first (finalizer removed,
// deleted), then, once the API server no longer has it, the address in
// the allocator, and last the claim's finalizer. The address is free for
// others only when no IPAddress names it any more.
func (c *Controller) release(ctx context.Context, claim *ipamv1.IPAddressClaim, u *unstructured.Unstructured) error {
	if !slices.Contains(claim.Finalizers, ReleaseAddressFinalizer) {
		return nil
	}
	addresses := c.dyn.Resource(AddressResource).Namespace(claim.Namespace)
	cur, err := addresses.Get(ctx, claim.Name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
	case err != nil:
		return fmt.Errorf("reading IPAddress %s/%s: %w", claim.Namespace, claim.Name, err)
	default:
		addr, err := decode[ipamv1.IPAddress](cur)
		if err != nil {
			return err
		}
		if belongs(addr, claim) {
			if fs := cur.GetFinalizers(); slices.Contains(fs, ProtectAddressFinalizer) {
				cur.SetFinalizers(slices.DeleteFunc(slices.Clone(fs), func(f string) bool { return f == ProtectAddressFinalizer }))
				if cur, err = addresses.Update(ctx, cur, metav1.UpdateOptions{}); err != nil {
					return ignoreConflict(fmt.Errorf("removing finalizer %s from IPAddress %s/%s: %w", ProtectAddressFinalizer, claim.Namespace, claim.Name, err))
				}
			}
			if cur.GetDeletionTimestamp() == nil {
				uid := cur.GetUID()
				err := addresses.Delete(ctx, claim.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
				if err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("deleting IPAddress %s/%s: %w", claim.Namespace, claim.Name, err)
				}
			}
			// Its deletion event brings the claim back; an IPAddress
			// another finalizer holds keeps its address meanwhile.
			if _, err := addresses.Get(ctx, claim.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return nil
			}
		}
		// Else it is someone else's object: left alone, and it holds
		// nothing of this claim's.
	}
	c.free(claim.Namespace, claim.Name)
	c.recordf(claim, v1.EventTypeNormal, EventAddressReleased, "Released the address of IPAddress %s", claim.Name)
	u = u.DeepCopy()
	u.SetFinalizers(slices.DeleteFunc(slices.Clone(u.GetFinalizers()), func(f string) bool { return f == ReleaseAddressFinalizer }))
	if _, err := c.dyn.Resource(ClaimResource).Namespace(claim.Namespace).Update(ctx, u, metav1.UpdateOptions{}); err != nil {
		return ignoreConflict(fmt.Errorf("removing finalizer %s from IPAddressClaim %s/%s: %w", ReleaseAddressFinalizer, claim.Namespace, claim.Name, err))
	}
	return nil
}

// forget handles a claim that is gone without release (its finalizer
// removed by hand): its address is freed once its IPAddress is gone too
// (the garbage collector deletes it, its owner being gone).
func (c *Controller) forget(ctx context.Context, ns, name string) error {
	if _, exists, err := c.addresses.GetStore().GetByKey(ns + "/" + name); err != nil || exists {
		return err
	}
	c.free(ns, name)
	return nil
}

// free returns the claim's address to the allocator.
func (c *Controller) free(ns, name string) {
	owner := ownerOf(ns, name)
	if al, ok := c.alloc.Lookup(owner); ok {
		c.alloc.Release(owner)
		c.pools.Touch(al.Pools...)
		c.log.Info("Released the address of an IPAddressClaim", "claim", ns+"/"+name, "address", al.Addresses)
	}
	c.alloc.Unclaim(owner, nil)
	c.mu.Lock()
	delete(c.state, ns+"/"+name)
	c.mu.Unlock()
}

func (c *Controller) recordf(claim *ipamv1.IPAddressClaim, eventType, reason, format string, args ...any) {
	if c.recorder != nil {
		c.recorder.Eventf(claim, eventType, reason, format, args...)
	}
}
