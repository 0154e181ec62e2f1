package status

import (
	"testing"

	"github.com/ironlb/ironlb/loadbalancer/lbclass"
)

// TestDefaultLoadBalancerClass keeps the plugin's default class the CCM's
// (the plugin does not import the CCM's packages).
func TestDefaultLoadBalancerClass(t *testing.T) {
	if DefaultLoadBalancerClass != lbclass.DefaultName {
		t.Errorf("DefaultLoadBalancerClass = %q, the CCM serves %q", DefaultLoadBalancerClass, lbclass.DefaultName)
	}
}
