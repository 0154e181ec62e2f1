package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/test/rig"
	"github.com/ironlb/ironlb/test/scale"
)

// TestThousandServicesSurviveRestart creates 1,000 Services (half IPv4, half
// IPv6), SIGKILLs the CCM while they are being served and starts a new one:
// no Service may change its address, no address may be held twice, and the
// rest must get theirs.
func TestThousandServicesSurviveRestart(t *testing.T) {
	skipShort(t)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	c := newCluster(t, ctx)
	c.applyPool("bulk", "addresses: [192.0.2.0/24, 198.51.100.0/24, '2001:db8:1000::/112']")

	const n = 1000
	created := make(chan error, 1)
	go func() {
		created <- scale.CreateServices(ctx, c.cp.Client, "default", "bulk", n)
	}()

	// Kill the CCM once a third of the Services have addresses.
	var before map[string]string
	err := rig.Eventually(3*time.Minute, func() error {
		got, err := scale.Addresses(ctx, c.cp.Client, "default")
		if err != nil {
			return err
		}
		if len(got) < n/3 {
			return fmt.Errorf("%d of %d Services have addresses", len(got), n)
		}
		before = got
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ccm.Kill(); err != nil {
		t.Fatal(err)
	}
	// What the status held at the moment of the kill, plus anything the
	// dying CCM wrote in flight.
	before, err = scale.Addresses(ctx, c.cp.Client, "default")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed the CCM with %d of %d Services served", len(before), n)
	if err := <-created; err != nil {
		t.Fatal(err)
	}

	restarted := rig.StartCCMForTest(t, rig.CCMOptions{Name: "ccm-restarted", Kubeconfig: c.kubeconfig, LeaderElect: true})
	var after map[string]string
	err = rig.Eventually(4*time.Minute, func() error {
		after, err = scale.Addresses(ctx, c.cp.Client, "default")
		if err != nil {
			return err
		}
		if len(after) < n {
			return fmt.Errorf("%d of %d Services have addresses", len(after), n)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%v\nrestarted CCM log:\n%s", err, restarted.Tail(30))
	}
	for name, ip := range before {
		if after[name] != ip {
			t.Errorf("Service %s changed its address from %s to %s across the restart", name, ip, after[name])
		}
	}
	holders := map[string]string{}
	for name, ip := range after {
		if other, ok := holders[ip]; ok {
			t.Errorf("address %s held by %s and %s", ip, other, name)
		}
		holders[ip] = name
	}
	if !restarted.LogContains(`"Restored allocations from Service status"`) {
		t.Errorf("restarted CCM did not log its restore")
	}
	svc, err := c.cp.Client.CoreV1().Services("default").Get(ctx, "bulk-0001", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.IPFamilies[0] != corev1.IPv6Protocol || !inPrefix(t, after["bulk-0001"], "2001:db8:1000::/112") {
		t.Errorf("bulk-0001 is %v with %s; want IPv6 from the pool", svc.Spec.IPFamilies, after["bulk-0001"])
	}
}
