package speakers

import (
	"net/netip"
	"testing"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// TestYieldedVIPSentAgain: a VIP a speaker reports YIELDED (it thought
// itself cut off when another host claimed it) is sent again when the CCM
// still places it on that node, once, and not when it was moved away.
func TestYieldedVIPSentAgain(t *testing.T) {
	for _, tc := range []struct {
		name       string
		desired    bool
		wasYielded bool
		wantResend bool
	}{
		{name: "still placed here: sent again", desired: true, wantResend: true},
		{name: "moved away: not sent", desired: false},
		{name: "already known as yielded: not sent again", desired: true, wasYielded: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := netip.MustParseAddr("192.0.2.9")
			s := &session{desired: map[string]*speakerv1.Announcement{}, dirty: map[string]bool{}, wake: make(chan struct{}, 1)}
			if tc.desired {
				s.desired[a.String()] = &speakerv1.Announcement{Address: a.String()}
			}
			if tc.wasYielded {
				s.state.Yielded = []netip.Addr{a}
			}
			var lines []logLine
			sum := &summary{conflicts: map[string]string{}, claimed: map[string]string{a.String(): "02:00:5e:00:00:aa"}, yielded: []netip.Addr{a}}
			s.recordClaims(sum, &lines)
			woken := len(s.wake) == 1
			if s.dirty[a.String()] != tc.wantResend || woken != tc.wantResend {
				t.Errorf("dirty %v, sender woken %v; want both %v", s.dirty[a.String()], woken, tc.wantResend)
			}
		})
	}
}
