package loadbalancer

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
	"github.com/ironlb/ironlb/loadbalancer/dhcplease"
)

// TestLeaseLostWithdraws: a lost lease's address is taken from the Service
// that holds it, and from nothing that only shares its name.
func TestLeaseLostWithdraws(t *testing.T) {
	addr := netip.MustParseAddr("192.0.2.5")
	for _, tc := range []struct {
		name         string
		holder       ipam.OwnerRef
		wantWithdraw bool
	}{
		{name: "the Service", holder: ipam.OwnerRef{Owner: "uid-1", Name: "web/front"}, wantWithdraw: true},
		{name: "a deleted Service of the same name", holder: ipam.OwnerRef{Owner: "uid-0", Name: "web/front"}},
		{name: "a Cluster API claim", holder: ipam.OwnerRef{Owner: "ipaddressclaim/web/front", Name: "IPAddressClaim web/front"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &v1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "web", Name: "front", UID: "uid-1"}}
			b, alloc, pools, rec := informedBalancer(t, svc)
			pools.set(t, alloc, "lan", v1alpha1.IPPoolSpec{Addresses: []v1alpha1.AddressRange{"192.0.2.0/29"}})
			if _, err := alloc.Ensure(ipam.Request{Owner: tc.holder.Owner, Name: tc.holder.Name, Pool: "lan", Families: []ipam.Family{ipam.IPv4},
				Addresses: []netip.Addr{addr}, Subject: ipam.Subject{Namespace: "web"}}); err != nil {
				t.Fatal(err)
			}

			b.leaseLost(dhcplease.Lease{Addr: addr, Pool: "lan"}, errors.New("the server refused the renewal"))

			_, held := alloc.Lookup(tc.holder.Owner)
			if held == tc.wantWithdraw {
				t.Errorf("the holder keeps the address: %v, want %v", held, !tc.wantWithdraw)
			}
			var lost []string
			for _, e := range drain(rec) {
				if strings.Contains(e, ReasonDHCPLeaseLost) {
					lost = append(lost, e)
				}
			}
			if got := len(lost) > 0; got != tc.wantWithdraw {
				t.Errorf("DHCPLeaseLost Events %q; want one: %v", lost, tc.wantWithdraw)
			}
			if got := b.leaseQueue.Len() > 0; got != tc.wantWithdraw {
				t.Errorf("queued to lease again: %v, want %v", got, tc.wantWithdraw)
			}
		})
	}
}
