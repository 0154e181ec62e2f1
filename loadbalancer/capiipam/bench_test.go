package capiipam_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/loadbalancer/capiipam"
)

// BenchmarkClaims measures, on a real API server, the time from creating
// 100 IPAddressClaims to all 100 IPAddresses present, and prints it as
// BENCH capi_claims_100 <seconds> s (make bench runs it once).
func BenchmarkClaims(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	e := newEnv(b, ctx)
	e.start(b, ctx)
	e.pool(b, ctx, "bench", &v1alpha1.ClusterAPI{Prefix: 16}, nil, "198.51.100.0/24", "203.0.113.0/24")
	var total time.Duration
	rounds := 0
	for i := 0; b.Loop(); i++ {
		ns := fmt.Sprintf("bench-%d", i)
		e.namespace(b, ctx, ns, nil)
		start := time.Now()
		for j := range 100 {
			e.claim(b, ctx, ns, fmt.Sprintf("m%d", j), "bench", nil)
		}
		eventually(b, ctx, "100 IPAddresses", func() (bool, error) {
			list, err := e.admin.Resource(capiipam.AddressResource).Namespace(ns).List(ctx, metav1.ListOptions{})
			return err == nil && len(list.Items) == 100, err
		})
		total += time.Since(start)
		rounds++
		if rounds == 4 {
			break // the pools hold 512 addresses
		}
	}
	fmt.Printf("BENCH capi_claims_100 %.2f s\n", total.Seconds()/float64(rounds))
}
