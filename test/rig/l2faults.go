package rig

import (
	"fmt"
	"net/netip"
	"strings"
	"sync"

	"github.com/ironlb/ironlb/test/netrig"
)

// cutTable is the nftables table CutCCM adds in a node's namespace.
const cutTable = "ironlbcut"

// CutCCM cuts the path between the CCM and n's speaker, and nothing else:
// in n's namespace, nftables rules drop every TCP segment to or from the
// control host's addresses (IPv4 and IPv6), so the control stream and the
// CCM's redials go unanswered while n's link, its ARP/NDP and the client's
// traffic stay up: a node cut off from the CCM but still on the LAN.
// restore removes the rules (it may be called more than once).
func (r *L2) CutCCM(n *L2Node) (restore func() error, err error) {
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", cutTable)
	for _, hook := range []struct{ chain, hook, dir string }{{"in", "input", "saddr"}, {"out", "output", "daddr"}} {
		fmt.Fprintf(&b, "  chain %s {\n    type filter hook %s priority -10; policy accept;\n", hook.chain, hook.hook)
		for _, p := range r.Ctrl.Addrs {
			fam := "ip"
			if p.Addr().Is6() {
				fam = "ip6"
			}
			fmt.Fprintf(&b, "    %s %s %s meta l4proto tcp drop\n", fam, hook.dir, p.Addr())
		}
		b.WriteString("  }\n")
	}
	b.WriteString("}\n")
	cmd := n.Host.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(b.String())
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("cutting %s off from the CCM (nft in %s): %w: %s", n.Name, n.Host.Name, err, out)
	}
	var once sync.Once
	var rerr error
	return func() error {
		once.Do(func() {
			if _, err := n.Host.Run("nft", "delete", "table", "inet", cutTable); err != nil {
				rerr = fmt.Errorf("reconnecting %s to the CCM: %w", n.Name, err)
			}
		})
		return rerr
	}, nil
}

// ForeignHost is a plain host on the rig's LAN that is no node: a server
// or the gateway, whose kernel holds its addresses (answers ARP and NDP for
// them, as any host does).
type ForeignHost struct {
	*netrig.Host
}

// AddForeignHost adds a host named name (1-16 lowercase letters or
// digits) to the LAN with addrs on its interface. It goes with the LAN;
// Remove takes it off the LAN earlier.
func (r *L2) AddForeignHost(name string, addrs ...netip.Prefix) (*ForeignHost, error) {
	h, err := r.LAN.AddHost(name, addrs...)
	if err != nil {
		return nil, fmt.Errorf("adding foreign host %s: %w", name, err)
	}
	return &ForeignHost{Host: h}, nil
}

// AddAddr gives the host one more address (with nodad for IPv6: the host
// starts using it at once, as one that does not care whether it is free).
func (f *ForeignHost) AddAddr(p netip.Prefix) error {
	args := []string{"ip", "addr", "add", p.String(), "dev", f.Interface}
	if p.Addr().Is6() {
		args = append(args, "nodad")
	}
	if _, err := f.Run(args...); err != nil {
		return fmt.Errorf("adding %s to foreign host %s: %w", p, f.Role, err)
	}
	return nil
}

// RemoveAddr takes an address off the host: it stops answering for it.
func (f *ForeignHost) RemoveAddr(p netip.Prefix) error {
	if _, err := f.Run("ip", "addr", "del", p.String(), "dev", f.Interface); err != nil {
		return fmt.Errorf("removing %s from foreign host %s: %w", p, f.Role, err)
	}
	return nil
}

// Announce sends one gratuitous ARP (IPv4) or unsolicited Neighbor
// Advertisement (IPv6) for addr from the host, as a host that starts
// using an address does.
func (f *ForeignHost) Announce(addr netip.Addr) error { return SendGratuitous(f.Host, addr) }

// Remove takes the host off the LAN (its link down, its addresses
// flushed); its namespace goes with the LAN.
func (f *ForeignHost) Remove() error {
	if _, err := f.Run("ip", "addr", "flush", "dev", f.Interface); err != nil {
		return err
	}
	return f.SetLink(false)
}
