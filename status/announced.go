package status

import "strings"

// Announcement is what the Announced condition says of one VIP.
type Announcement struct {
	Layer2     []string
	BGP        []string
	SharingKey string
}

// ParseAnnounced reads the message of the Announced condition:
// "192.0.2.200=node-a, 198.51.100.7=bgp:node-a+node-b,
// 192.0.2.9=node-a;bgp:node-a+node-b@web", "-" for no node.
func ParseAnnounced(msg string) map[string]Announcement {
	out := map[string]Announcement{}
	for _, part := range strings.Split(msg, ",") {
		addr, rest, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		var a Announcement
		rest, a.SharingKey, _ = strings.Cut(rest, "@")
		for _, p := range strings.Split(rest, ";") {
			if nodes, ok := strings.CutPrefix(p, "bgp:"); ok {
				a.BGP = append(a.BGP, strings.Split(nodes, "+")...)
			} else if p != "-" && p != "" {
				a.Layer2 = append(a.Layer2, strings.Split(p, "+")...)
			}
		}
		out[addr] = a
	}
	return out
}
