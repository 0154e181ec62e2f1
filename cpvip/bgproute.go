package cpvip

import (
	"fmt"
	"net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// InterfaceToward returns the interface the kernel routes peer through:
// BGP mode's default --interface, whose address is the node IP the
// sessions come from.
func InterfaceToward(peer netip.Addr) (string, error) {
	routes, err := netlink.RouteGet(net.IP(peer.Unmap().AsSlice()))
	if err != nil {
		return "", fmt.Errorf("finding the route to %s: %w", peer, err)
	}
	if len(routes) == 0 || routes[0].LinkIndex == 0 {
		return "", fmt.Errorf("no route to %s", peer)
	}
	link, err := netlink.LinkByIndex(routes[0].LinkIndex)
	if err != nil {
		return "", fmt.Errorf("the interface of the route to %s: %w", peer, err)
	}
	if link.Attrs().Name == LocalInterface {
		return "", fmt.Errorf("%s is an address of this node, not a router", peer)
	}
	return link.Attrs().Name, nil
}
