package speakers

import (
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestMergeVIPChanges: a report of VIP changes that came too fast is
// merged with the next as the two would be taken in one after the other:
// the later status of an address wins, an address gone and then named again
// is back, one named and then gone is gone, and changes over a complete
// list give a complete list.
func TestMergeVIPChanges(t *testing.T) {
	st := func(addr string, s speakerv1.VIPStatus_State) *speakerv1.VIPStatus {
		return &speakerv1.VIPStatus{Address: addr, State: s}
	}
	const ann, failed = speakerv1.VIPStatus_ANNOUNCING, speakerv1.VIPStatus_FAILED
	for _, tc := range []struct {
		name       string
		pending, r *speakerv1.Report
		want       *speakerv1.Report
	}{
		{
			name:    "changes over changes",
			pending: &speakerv1.Report{Full: true, VipsDelta: true, AppliedVersion: 3, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", ann), st("192.0.2.2", ann)}, VipsGone: []string{"192.0.2.3", "192.0.2.4"}},
			r:       &speakerv1.Report{Full: true, VipsDelta: true, AppliedVersion: 2, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", failed), st("192.0.2.3", ann)}, VipsGone: []string{"192.0.2.2"}},
			want:    &speakerv1.Report{Full: true, VipsDelta: true, AppliedVersion: 3, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", failed), st("192.0.2.3", ann)}, VipsGone: []string{"192.0.2.4", "192.0.2.2"}},
		},
		{
			name:    "changes over a complete list",
			pending: &speakerv1.Report{Full: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", ann), st("192.0.2.2", ann)}},
			r:       &speakerv1.Report{Full: true, VipsDelta: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.5", ann)}, VipsGone: []string{"192.0.2.1"}},
			want:    &speakerv1.Report{Full: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.2", ann), st("192.0.2.5", ann)}},
		},
		{
			name:    "the same address spelled differently",
			pending: &speakerv1.Report{Full: true, VipsDelta: true, Vips: []*speakerv1.VIPStatus{st("2001:DB8::1", ann)}},
			r:       &speakerv1.Report{Full: true, VipsDelta: true, VipsGone: []string{"2001:db8::1"}},
			want:    &speakerv1.Report{Full: true, VipsDelta: true, VipsGone: []string{"2001:db8::1"}},
		},
		{
			name:    "a complete list over changes",
			pending: &speakerv1.Report{Full: true, VipsDelta: true, VipsGone: []string{"192.0.2.1"}},
			r:       &speakerv1.Report{Full: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.2", ann)}},
			want:    &speakerv1.Report{Full: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.2", ann)}},
		},
		{
			name:    "a heartbeat's answer over changes",
			pending: &speakerv1.Report{Full: true, VipsDelta: true, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", ann)}},
			r:       &speakerv1.Report{AppliedVersion: 7, HeartbeatSeq: 9},
			want:    &speakerv1.Report{Full: true, VipsDelta: true, AppliedVersion: 7, Vips: []*speakerv1.VIPStatus{st("192.0.2.1", ann)}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, merge(tc.pending, tc.r), protocmp.Transform()); diff != "" {
				t.Errorf("merged (-want +got):\n%s", diff)
			}
		})
	}
}

// TestPatchSorted: a patched list is sorted, shares nothing with its base
// when it changed, and is its base when it did not.
func TestPatchSorted(t *testing.T) {
	addrs := func(ss ...string) []netip.Addr {
		var out []netip.Addr
		for _, s := range ss {
			out = append(out, netip.MustParseAddr(s))
		}
		return out
	}
	base := addrs("192.0.2.1", "192.0.2.3", "192.0.2.5")
	for _, tc := range []struct {
		name        string
		remove, add []netip.Addr
		want        []netip.Addr
		same        bool
	}{
		{"nothing", nil, nil, base, true},
		{"named, unchanged", addrs("192.0.2.3", "192.0.2.4"), addrs("192.0.2.3"), base, true},
		{"added first, middle, last", addrs("192.0.2.0", "192.0.2.4", "192.0.2.9"), addrs("192.0.2.0", "192.0.2.4", "192.0.2.9"), addrs("192.0.2.0", "192.0.2.1", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.9"), false},
		{"removed", addrs("192.0.2.1", "192.0.2.5"), nil, addrs("192.0.2.3"), false},
		{"both", addrs("192.0.2.2", "192.0.2.3"), addrs("192.0.2.2"), addrs("192.0.2.1", "192.0.2.2", "192.0.2.5"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := patchSorted(base, tc.remove, tc.add)
			if diff := cmp.Diff(tc.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("patched (-want +got):\n%s", diff)
			}
			if same := len(got) > 0 && &got[0] == &base[0]; same != tc.same {
				t.Errorf("the result is its base: %v, want %v", same, tc.same)
			}
		})
	}
}
