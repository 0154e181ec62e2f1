package cpvip

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// LocalInterface is where the VIP is made a local address of the node that
// serves it: the loopback interface. The kernel then delivers the VIP's
// packets to the local kube-apiserver (it listens on every address), and
// the node's primary interface and its addresses are never touched.
const LocalInterface = "lo"

// AddLocal makes vip a local address of this node (a /32 or /128 on
// LocalInterface, without duplicate address detection, since the election
// or BGP decides who holds it). Adding an address that is already there is
// not an error.
func AddLocal(vip netip.Addr) error {
	link, addr, err := localAddr(vip)
	if err != nil {
		return err
	}
	if err := netlink.AddrAdd(link, addr); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("adding %s to %s: %w", vip, LocalInterface, err)
	}
	return nil
}

// AddLocalFor makes vip a local address of this node that the kernel removes
// by itself after lifetime (rounded up to whole seconds) unless it is added
// again before: the layer-2 holder refreshes it every Interval. A holder
// that dies without releasing (killed, out of memory) so leaves no address
// behind for long, and with it no kernel answering ARP/NDP for the VIP
// beside the successor: the kernel answers for every local address, on
// every interface, unless the node sets arp_ignore.
func AddLocalFor(vip netip.Addr, lifetime time.Duration) error {
	link, addr, err := localAddr(vip)
	if err != nil {
		return err
	}
	secs := int((lifetime + time.Second - 1) / time.Second)
	addr.ValidLft, addr.PreferedLft = secs, secs
	if err := netlink.AddrReplace(link, addr); err != nil {
		return fmt.Errorf("adding %s to %s for %s: %w", vip, LocalInterface, lifetime, err)
	}
	return nil
}

// DelLocal removes vip from this node's local addresses. Removing an address
// that is not there is not an error.
func DelLocal(vip netip.Addr) error {
	link, addr, err := localAddr(vip)
	if err != nil {
		return err
	}
	if err := netlink.AddrDel(link, addr); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s from %s: %w", vip, LocalInterface, err)
	}
	return nil
}

// HasLocal says whether vip is a local address on LocalInterface now.
func HasLocal(vip netip.Addr) (bool, error) {
	link, _, err := localAddr(vip)
	if err != nil {
		return false, err
	}
	family := netlink.FAMILY_V4
	if vip.Is6() {
		family = netlink.FAMILY_V6
	}
	addrs, err := netlink.AddrList(link, family)
	if err != nil {
		return false, fmt.Errorf("listing the addresses of %s: %w", LocalInterface, err)
	}
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap() == vip {
			return true, nil
		}
	}
	return false, nil
}

func localAddr(vip netip.Addr) (netlink.Link, *netlink.Addr, error) {
	vip = vip.Unmap()
	if !vip.IsValid() || vip.IsUnspecified() || vip.IsLoopback() || vip.IsMulticast() || vip.IsLinkLocalUnicast() {
		return nil, nil, fmt.Errorf("%s cannot be a control-plane VIP", vip)
	}
	link, err := netlink.LinkByName(LocalInterface)
	if err != nil {
		return nil, nil, fmt.Errorf("finding %s: %w", LocalInterface, err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: vip.AsSlice(), Mask: net.CIDRMask(vip.BitLen(), vip.BitLen())}}
	if vip.Is6() {
		addr.Flags = unix.IFA_F_NODAD
	}
	return link, addr, nil
}
