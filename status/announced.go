package status

import (
	"net/netip"

	"github.com/ironlb/ironlb/loadbalancer/announced"
)

// Announcement is what the Announced condition says of one VIP.
type Announcement struct {
	Layer2     []string
	BGP        []string
	SharingKey string
}

// ParseAnnounced reads the message of the Announced condition of a Service
// whose status holds own: "192.0.2.200=node-a, 198.51.100.7=bgp:node-a+node-b,
// 192.0.2.9=node-a;bgp:node-a+node-b@shop/web", "-" for no node
// (announced.Decode, as the CCM reads it). Entries that break the grammar,
// and entries for addresses not in own, are left out.
func ParseAnnounced(msg string, own []netip.Addr) map[netip.Addr]Announcement {
	out := map[netip.Addr]Announcement{}
	entries, _ := announced.Decode(msg, own)
	for _, e := range entries {
		out[e.Address] = Announcement{Layer2: e.Layer2, BGP: e.BGP, SharingKey: e.SharedAs}
	}
	return out
}
