package capiipam

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"
)

// writeStatus sets the claim's Ready condition and status.addressRef
// (empty: none), writing only when they changed.
func (c *Controller) writeStatus(ctx context.Context, u *unstructured.Unstructured, status metav1.ConditionStatus, reason Reason, msg, addressRef string) error {
	claim, err := decode[ipamv1.IPAddressClaim](u)
	if err != nil {
		return err
	}
	st := claim.Status
	st.Conditions = append([]metav1.Condition(nil), st.Conditions...)
	changed := meta.SetStatusCondition(&st.Conditions, metav1.Condition{
		Type: ipamv1.IPAddressClaimReadyCondition, Status: status, Reason: string(reason),
		Message: msg, ObservedGeneration: claim.Generation,
	})
	// A claim keeps its addressRef once it has one: a refusal of an
	// answered claim (a conflict) does not hide which IPAddress it has.
	if addressRef != "" && st.AddressRef.Name != addressRef {
		st.AddressRef.Name = addressRef
		changed = true
	}
	if !changed {
		return nil
	}
	obj, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&st)
	if err != nil {
		return err
	}
	u = u.DeepCopy()
	u.Object["status"] = obj
	_, err = c.dyn.Resource(ClaimResource).Namespace(u.GetNamespace()).UpdateStatus(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return ignoreConflict(fmt.Errorf("writing the status of IPAddressClaim %s/%s: %w", u.GetNamespace(), u.GetName(), err))
	}
	return nil
}
