package speaker

import (
	"fmt"
	"net/netip"
	"testing"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// BenchmarkBGPUpdate is what a node pays for one update that moves one
// BGP VIP (announces one, withdraws another) while it advertises vips
// others, from the CCM's send to its report: the apply, the BGP side (a
// recording fake), the report of VIP changes, over a real gRPC stream. An
// instruction about one VIP should cost about the same at 15 and at 1,500.
func BenchmarkBGPUpdate(b *testing.B) {
	for _, vips := range []int{15, 1500} {
		b.Run(fmt.Sprintf("vips=%d", vips), func(b *testing.B) {
			fb := &fakeBGP{}
			_, _, c := newTestAgent(b, WithBGP(fb))
			s, _ := open(b, c)
			addr := func(i int) string {
				return netip.AddrFrom4([4]byte{198, 51, byte(100 + i>>8), byte(i)}).String()
			}
			bgpVIP := func(i int) *speakerv1.Announcement {
				return &speakerv1.Announcement{Address: addr(i), BgpOnly: true, Bgp: []*speakerv1.BGPAdvertisement{{Peer: "192.0.2.1"}}}
			}
			snap := &speakerv1.Snapshot{Version: 1, Leader: "bench", Bgp: bgpConfig, VipDeltas: true}
			for i := range vips {
				snap.Announcements = append(snap.Announcements, bgpVIP(i))
			}
			send(b, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Snapshot{Snapshot: snap}})
			b.ResetTimer()
			for i := range b.N {
				v := uint64(i + 2)
				u := &speakerv1.Update{Version: v, Announce: []*speakerv1.Announcement{bgpVIP(vips + i)}, Withdraw: []string{addr(i)}}
				if r := send(b, s, &speakerv1.Instruction{Kind: &speakerv1.Instruction_Update{Update: u}}); r.GetAppliedVersion() != v {
					b.Fatalf("applied %d, want %d", r.GetAppliedVersion(), v)
				}
			}
		})
	}
}
