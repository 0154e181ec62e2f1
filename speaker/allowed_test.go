package speaker

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestAllowedPrefixes: with --allowed-cidrs, a VIP outside them is refused
// (FAILED, with why) and neither answered for nor advertised, and so is a
// VIP inside them whose BGP aggregate reaches outside; VIPs inside are
// announced as usual.
func TestAllowedPrefixes(t *testing.T) {
	allowed, err := ParsePrefixes([]string{"192.0.2.0/28", " 2001:db8:1::/64"})
	if err != nil {
		t.Fatal(err)
	}
	fb := &fakeBGP{}
	_, fa, c := newTestAgent(t, WithAllowedPrefixes(allowed), WithBGP(fb))
	s, _ := open(t, c)
	adv := func(l uint32) []*speakerv1.BGPAdvertisement {
		return []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1", PrefixLength: l}}
	}
	snap := &speakerv1.Snapshot{Version: 1, Leader: "test", Bgp: bgpConfig, Announcements: []*speakerv1.Announcement{
		{Address: "192.0.2.7", Bgp: adv(0)},
		{Address: "192.0.2.8", Bgp: adv(28)},
		{Address: "192.0.2.9", Bgp: adv(24)},
		{Address: "198.51.100.7"},
		{Address: "2001:db8:1::7"},
		{Address: "2001:db8:2::7"},
	}}
	r := send(t, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}})
	got := map[string]*speakerv1.VIPStatus{}
	for _, v := range r.GetVips() {
		got[v.GetAddress()] = v
	}
	for addr, want := range map[string]string{
		"192.0.2.9":     "advertised to 192.0.2.1 as 192.0.2.0/24, which reaches outside",
		"198.51.100.7":  "outside this node's --allowed-cidrs",
		"2001:db8:2::7": "outside this node's --allowed-cidrs",
	} {
		if v := got[addr]; v.GetState() != speakerv1.VIPStatus_FAILED || !strings.Contains(v.GetError(), want) {
			t.Errorf("%s = %v, want FAILED mentioning %q", addr, v, want)
		}
	}
	if diff := cmp.Diff([]string{"192.0.2.7", "192.0.2.8", "2001:db8:1::7"}, fa.list()); diff != "" {
		t.Errorf("announcer answers for (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]bool{"192.0.2.7/32 to 192.0.2.1": true, "192.0.2.0/28 to 192.0.2.1": true}, exportKeys(fb)); diff != "" {
		t.Errorf("BGP exports (-want +got):\n%s", diff)
	}
}

func exportKeys(fb *fakeBGP) map[string]bool {
	out := map[string]bool{}
	for k := range exportsOf(fb.desired()) {
		out[k] = true
	}
	return out
}

// TestParsePrefixes: CIDRs with host bits set are refused with the fix.
func TestParsePrefixes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"192.0.2.0/24", ""},
		{"2001:db8::/32", ""},
		{"192.0.2.1/24", "did you mean 192.0.2.0/24"},
		{"192.0.2.0", "no '/'"},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParsePrefixes([]string{tc.in})
			switch {
			case tc.want == "" && (err != nil || got[0] != netip.MustParsePrefix(tc.in)):
				t.Errorf("got %v, %v", got, err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("error %v, want one mentioning %q", err, tc.want)
			}
		})
	}
}
