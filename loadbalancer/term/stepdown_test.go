package term

import (
	"context"
	"errors"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// TestStepDown: a leader that steps down sends nothing more (Valid fails
// with ErrSteppedDown) and hands its Lease back (no holder, a one-second
// duration), reading it again when a renewal changed it meanwhile; a
// Lease another process holds by then is left alone.
func TestStepDown(t *testing.T) {
	for _, tc := range []struct {
		name       string
		takenBy    string // holder written after Acquire; "" for none
		conflicts  int    // releases refused as conflicts (a renewal came first)
		wantHolder string // "" for none
	}{
		{name: "still holding: released", wantHolder: ""},
		{name: "taken meanwhile: left alone", takenBy: "b_2", wantHolder: "b_2"},
		{name: "renewed meanwhile: read again and released", conflicts: 2, wantHolder: ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			holder, dur := "a_1", int32(8)
			acquired := metav1.NewMicroTime(time.Now().Add(-time.Minute))
			client := fake.NewClientset(&coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Namespace: "ironlb-system", Name: "ironlb-ccm"},
				Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &dur, AcquireTime: &acquired, RenewTime: &acquired},
			})
			lease := Lease{Namespace: "ironlb-system", Name: "ironlb-ccm", Duration: 8 * time.Second, RetryPeriod: time.Hour}
			term, termCtx, err := Acquire(ctx, client, lease, "a")
			if err != nil {
				t.Fatal(err)
			}
			leases := client.CoordinationV1().Leases("ironlb-system")
			if tc.takenBy != "" {
				l, _ := leases.Get(ctx, "ironlb-ccm", metav1.GetOptions{})
				l.Spec.HolderIdentity = &tc.takenBy
				if _, err := leases.Update(ctx, l, metav1.UpdateOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			refused := 0
			client.PrependReactor("update", "leases", func(k8stesting.Action) (bool, runtime.Object, error) {
				if refused < tc.conflicts {
					refused++
					return true, nil, apierrors.NewConflict(coordinationv1.Resource("leases"), "ironlb-ccm", errors.New("the object has been modified"))
				}
				return false, nil, nil
			})
			if err := term.StepDown(ctx, client, lease); err != nil {
				t.Fatalf("StepDown: %v", err)
			}
			if err := term.Valid(); !errors.Is(err, ErrSteppedDown) {
				t.Errorf("Valid() after StepDown = %v, want ErrSteppedDown", err)
			}
			if !errors.Is(context.Cause(termCtx), ErrLost) {
				t.Errorf("the term's context ends with %v, want ErrLost", context.Cause(termCtx))
			}
			l, err := leases.Get(ctx, "ironlb-ccm", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if l.Spec.HolderIdentity != nil {
				got = *l.Spec.HolderIdentity
			}
			if got != tc.wantHolder {
				t.Errorf("holder after StepDown %q, want %q", got, tc.wantHolder)
			}
			if tc.wantHolder == "" && (l.Spec.LeaseDurationSeconds == nil || *l.Spec.LeaseDurationSeconds != 1) {
				t.Errorf("released Lease's duration %v, want 1 s", l.Spec.LeaseDurationSeconds)
			}
		})
	}
}
