package cluster_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/ironlb/ironlb/test/cluster"
)

// restartCCMLeader deletes the pod of IronLB's CCM that holds the
// leader lease and waits until the Deployment is whole again, a CCM pod
// holds the lease and every CCM pod's /healthz answers ok.
func restartCCMLeader(t *testing.T, ctx context.Context, c *cluster.Cluster, cs kubernetes.Interface) {
	t.Helper()
	lease, err := cs.CoordinationV1().Leases("ironlb-system").Get(ctx, "ironlb-ccm", metav1.GetOptions{})
	if err != nil || lease.Spec.HolderIdentity == nil {
		t.Fatalf("the CCM's leader lease: %v %+v", err, lease)
	}
	holder := *lease.Spec.HolderIdentity
	pods, err := cs.CoreV1().Pods("ironlb-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-ccm"})
	if err != nil {
		t.Fatal(err)
	}
	var leader *corev1.Pod
	for i, p := range pods.Items {
		// A host-network pod's hostname is its node's: the identity is
		// <node>_<uuid>.
		if strings.HasPrefix(holder, p.Spec.NodeName+"_") {
			leader = &pods.Items[i]
		}
	}
	if leader == nil {
		t.Fatalf("no CCM pod holds the lease (%s)", holder)
	}
	if err := cs.CoreV1().Pods("ironlb-system").Delete(ctx, leader.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	err = eventually(ctx, 2*time.Minute, func() error {
		pods, err := cs.CoreV1().Pods("ironlb-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=ironlb-ccm"})
		if err != nil {
			return err
		}
		ready := 0
		for _, p := range pods.Items {
			if p.Name == leader.Name {
				return fmt.Errorf("pod %s still there", p.Name)
			}
			if !podIsReady(p) {
				return fmt.Errorf("pod %s not ready", p.Name)
			}
			if out, err := c.Client.Run("curl", "-sS", "-k", "-m", "2", fmt.Sprintf("https://%s:10258/healthz", p.Status.HostIP)); err != nil || out != "ok" {
				return fmt.Errorf("pod %s /healthz: %q %v", p.Name, out, err)
			}
			ready++
		}
		if ready != 2 {
			return fmt.Errorf("%d CCM pods ready, want 2", ready)
		}
		l, err := cs.CoordinationV1().Leases("ironlb-system").Get(ctx, "ironlb-ccm", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == holder || l.Spec.RenewTime == nil || time.Since(l.Spec.RenewTime.Time) > 10*time.Second {
			return fmt.Errorf("lease held by %v, renewed %v: no new leader yet", l.Spec.HolderIdentity, l.Spec.RenewTime)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the CCM after deleting its leader %s: %v", leader.Name, err)
	}
}

func podIsReady(p corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
