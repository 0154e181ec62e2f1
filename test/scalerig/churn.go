package scalerig

import (
	"context"
	"fmt"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/test/scale"
)

// Churn makes perSecond Service changes a second for d, in turn a create
// (layer 2 and BGP alternating), an update of the newest churn Service
// (its port and an annotation) and a delete of the oldest, and reports the
// CCM's and the API server's CPU over that window (percent of one core).
// Then it deletes what is left and waits until every VIP is where it
// should be again.
func (r *Rig) Churn(ctx context.Context, perSecond int, d time.Duration) error {
	svcs := r.CP.Client.CoreV1().Services(Namespace)
	var live []string
	made := 0
	op := func(j int) error {
		switch {
		case j%3 == 0 || len(live) == 0:
			// Even made: 2·made, layer 2; odd made: 2·made+1, BGP and
			// never Local (that needs made ≡ 0 mod 10): churn needs no
			// EndpointSlices.
			idx := 2*made + made%2
			made++
			svc := scale.Service(Namespace, "churn", idx)
			shape(svc)
			if _, err := svcs.Create(ctx, svc, metav1.CreateOptions{}); err != nil {
				return fmt.Errorf("creating %s: %w", svc.Name, err)
			}
			live = append(live, svc.Name)
		case j%3 == 1:
			name := live[len(live)-1]
			patch := fmt.Sprintf(`{"metadata":{"annotations":{"scale.ironlb.dev/change":%q}},"spec":{"ports":[{"port":%d,"targetPort":8080,"protocol":"TCP"}]}}`,
				strconv.Itoa(j), 81+j%100)
			if _, err := svcs.Patch(ctx, name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("changing %s: %w", name, err)
			}
		default:
			if err := svcs.Delete(ctx, live[0], metav1.DeleteOptions{}); err != nil {
				return fmt.Errorf("deleting %s: %w", live[0], err)
			}
			live = live[1:]
		}
		return nil
	}
	err := r.measureCPU(ctx, "churn", d, func() error {
		tick := time.NewTicker(time.Second / time.Duration(perSecond))
		defer tick.Stop()
		for j := range perSecond * int(d/time.Second) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-tick.C:
			}
			if err := op(j); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, name := range live {
		if err := svcs.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			return fmt.Errorf("deleting %s: %w", name, err)
		}
	}
	err = poll(ctx, 2*time.Minute, func() error {
		list, err := svcs.List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, s := range list.Items {
			if s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Name) > 6 && s.Name[:6] == "churn-" {
				return fmt.Errorf("%s still exists", s.Name)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if _, _, err := r.waitAnnounced(ctx, 2*time.Minute); err != nil {
		return fmt.Errorf("after the churn: %w", err)
	}
	return nil
}
