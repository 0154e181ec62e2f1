package capiipam

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/ironlb/ironlb/api/v1alpha1"
	"github.com/ironlb/ironlb/ipam"
)

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in, want string // want "": an error
	}{
		{"192.0.2.7", "192.0.2.7"},
		{"2001:db8::7", "2001:db8::7"},
		{"2001:DB8::7", ""},
		{"192.0.2.007", ""},
		{"::ffff:192.0.2.7", ""},
		{"fe80::1%eth0", ""},
		{"192.0.2.7/24", ""},
		{"", ""},
	} {
		t.Run(tc.in, func(t *testing.T) {
			a, err := parseAddress(tc.in)
			got := ""
			if err == nil {
				got = a.String()
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("parseAddress(%q) (-want +got):\n%s (err %v)", tc.in, diff, err)
			}
		})
	}
}

func TestFamilyOf(t *testing.T) {
	ranges := func(entries ...string) ipam.Pool {
		r, err := ipam.ParseRanges(entries)
		if err != nil {
			t.Fatal(err)
		}
		return ipam.Pool{Ranges: r}
	}
	for _, tc := range []struct {
		name    string
		pool    ipam.Pool
		spec    v1alpha1.ClusterAPI
		want    ipam.Family
		wantErr bool
	}{
		{"IPv4 first when both", ranges("2001:db8::/120", "192.0.2.0/24"), v1alpha1.ClusterAPI{Prefix: 24, Gateway: "192.0.2.1"}, ipam.IPv4, false},
		{"IPv6 only", ranges("2001:db8::/120"), v1alpha1.ClusterAPI{Prefix: 64, Gateway: "2001:db8::1"}, ipam.IPv6, false},
		{"prefix too long for IPv4", ranges("192.0.2.0/24"), v1alpha1.ClusterAPI{Prefix: 64}, 0, true},
		{"gateway of the other family", ranges("192.0.2.0/24"), v1alpha1.ClusterAPI{Prefix: 24, Gateway: "2001:db8::1"}, 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := familyOf(tc.pool, &tc.spec)
			if (err != nil) != tc.wantErr {
				t.Fatalf("familyOf error = %v, want error %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("familyOf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRefusalOf(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{fmt.Errorf("x: %w", ipam.ErrExhausted), ReasonPoolExhausted},
		{fmt.Errorf("x: %w", ipam.ErrConflict), ReasonAddressConflict},
		{fmt.Errorf("x: %w", ipam.ErrNoPool), ReasonAllocationFailed},
		{errors.New("other"), ReasonAllocationFailed},
	} {
		t.Run(tc.err.Error()+string(tc.want), func(t *testing.T) {
			if diff := cmp.Diff(tc.want, refusalOf(tc.err, "p").reason); diff != "" {
				t.Errorf("refusalOf(%v) (-want +got):\n%s", tc.err, diff)
			}
		})
	}
}
