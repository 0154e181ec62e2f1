package metallb

import (
	"testing"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

// TestLoadBalancerClass keeps the class the side-by-side notes name the
// CCM's default (this package does not import the CCM's packages).
func TestLoadBalancerClass(t *testing.T) {
	if LoadBalancerClass != lbclass.DefaultName {
		t.Errorf("LoadBalancerClass = %q, the CCM serves %q", LoadBalancerClass, lbclass.DefaultName)
	}
}
