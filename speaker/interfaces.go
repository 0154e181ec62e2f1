package speaker

// Interface handling: which interfaces the node's addresses and the VIPs
// are on, their health as reported to the CCM, and reopening the
// announcer of an interface that was re-created. Run (run.go) drives it.

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

// LocalAddresses returns the addresses this node's interfaces hold that a
// VIP must never be, mapped to the interface holding each.
type LocalAddresses func() (map[netip.Addr]string, error)

// NodeAddresses lists the addresses of the node's interfaces that are up,
// not loopback and answer ARP/NDP themselves. Interfaces flagged NOARP are
// left out: kube-proxy in IPVS mode binds every LoadBalancer IP to the
// dummy interface kube-ipvs0 (NOARP, down), and setups that put VIPs on lo
// are not the node's own addresses either.
func NodeAddresses() (map[netip.Addr]string, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("listing interfaces: %w", err)
	}
	out := map[netip.Addr]string{}
	for _, l := range links {
		at := l.Attrs()
		if at.Flags&net.FlagUp == 0 || at.Flags&net.FlagLoopback != 0 || at.RawFlags&unix.IFF_NOARP != 0 {
			continue
		}
		addrs, err := netlink.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("listing addresses of %s: %w", at.Name, err)
		}
		for _, ad := range addrs {
			if a, ok := netip.AddrFromSlice(ad.IP); ok {
				out[a.Unmap()] = at.Name
			}
		}
	}
	return out, nil
}

// fingerprint summarizes the node's interfaces (names, indexes, flags and
// addresses): when it changes, announcers and failed VIPs are looked at
// again.
func fingerprint() string {
	ifs, err := net.Interfaces()
	if err != nil {
		return "error: " + err.Error()
	}
	var b strings.Builder
	for _, ifi := range ifs {
		fmt.Fprintf(&b, "%s/%d/%v", ifi.Name, ifi.Index, ifi.Flags)
		if addrs, err := ifi.Addrs(); err == nil {
			for _, ad := range addrs {
				b.WriteString(" " + ad.String())
			}
		}
		b.WriteString(";")
	}
	return b.String()
}

// reopen closes the announcers whose interface is gone or was
// re-created, and announces their VIPs again on the new interface. It
// reports whether it closed any. The caller holds a.applyMu, not a.mu.
func (a *Agent) reopen() bool {
	a.mu.Lock()
	anns := maps.Clone(a.announcers)
	a.mu.Unlock()
	var gone []string
	for name, ann := range anns {
		ifi, err := a.interfaces(name)
		if err == nil && ifi.Index == ann.index {
			continue
		}
		if err == nil {
			a.log.Info("Interface was re-created; reopening its announcer", "interface", name, "oldIndex", ann.index, "newIndex", ifi.Index)
		} else {
			a.log.Info("Interface is gone; its VIPs fail until it returns", "interface", name, "err", err.Error())
		}
		if cerr := ann.Close(); cerr != nil {
			a.log.Error(cerr, "Closing announcer", "interface", name)
		}
		gone = append(gone, name)
	}
	if len(gone) == 0 {
		return false
	}
	a.mu.Lock()
	var ops []vipOp
	for _, name := range gone {
		delete(a.announcers, name)
	}
	for addr, v := range a.vips {
		kept := slices.DeleteFunc(slices.Clone(v.announced), func(n string) bool { return slices.Contains(gone, n) })
		if len(kept) != len(v.announced) {
			v.announced = kept // logged by planAnnounceLocked
			ops = append(ops, a.planAnnounceLocked(addr, v.announcement(addr)))
		}
	}
	a.mu.Unlock()
	a.perform(ops)
	a.mu.Lock()
	a.recordLocked(ops)
	a.mu.Unlock()
	return true
}

// returned reports whether an interface that could not be opened exists
// now. It looks them up (netlink) outside a.mu; the caller holds
// a.applyMu, under which alone a.openErr changes (opening announcers).
func (a *Agent) returned() bool {
	a.mu.Lock()
	failed := slices.Collect(maps.Keys(a.openErr))
	a.mu.Unlock()
	for _, name := range failed {
		if _, err := a.interfaces(name); err == nil {
			return true
		}
	}
	return false
}

func equalStatuses(x, y []*speakerv1.InterfaceStatus) bool {
	return slices.EqualFunc(x, y, func(a, b *speakerv1.InterfaceStatus) bool { return proto.Equal(a, b) })
}

// interfacesLocked reports the health of the default interface and of
// every interface a VIP should be announced on.
func (a *Agent) interfacesLocked() []*speakerv1.InterfaceStatus {
	names := a.interfaceNamesLocked()
	for name := range a.openErr {
		if !names[name] {
			delete(a.openErr, name) // no longer wanted
		}
	}
	var out []*speakerv1.InterfaceStatus
	for _, name := range slices.Sorted(maps.Keys(names)) {
		st := &speakerv1.InterfaceStatus{Name: name, Default: name == a.defaultIfc}
		if name == "" {
			st.Error = "no interface holds the node IP; set --interface"
			out = append(out, st)
			continue
		}
		k, ok := a.kernelIfcs[name]
		if !ok { // an interface first named since the last pass
			k = a.lookUpInterface(name)
			a.kernelIfcs[name] = k
		}
		if k.err != nil {
			st.Error = k.err.Error()
			out = append(out, st)
			continue
		}
		st.Up, st.HardwareAddress, st.Addresses = k.up, k.hw, k.addrs
		if ann := a.announcers[name]; ann != nil {
			if err := ann.Err(); err != nil {
				st.Error = err.Error()
			}
		} else if err := a.openErr[name]; err != nil {
			st.Error = err.Error()
		}
		if !st.Up && st.Error == "" {
			st.Error = "interface is down"
		}
		out = append(out, st)
	}
	return out
}

// InterfaceFor returns the name of the interface holding ip, the interface
// a speaker announces on by default.
func InterfaceFor(ip netip.Addr) (string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return "", fmt.Errorf("listing interfaces: %w", err)
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if pn, ok := ad.(*net.IPNet); ok {
				if a, ok := netip.AddrFromSlice(pn.IP); ok && a.Unmap() == ip.Unmap() {
					return ifi.Name, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no interface holds the node IP %s", ip)
}

// kernelIfc is what the kernel says of one interface the speaker
// announces on, as the last maintenance pass read it.
type kernelIfc struct {
	up    bool
	hw    string
	addrs []string
	err   error // it could not be read
}

// lookUpInterface reads name's state from the kernel (netlink: it waits
// for the kernel's rtnl lock, which the whole machine shares).
func (a *Agent) lookUpInterface(name string) kernelIfc {
	ifi, err := a.interfaces(name)
	if err != nil {
		return kernelIfc{err: err}
	}
	k := kernelIfc{up: ifi.Flags&net.FlagUp != 0, hw: ifi.HardwareAddr.String()}
	if addrs, err := ifi.Addrs(); err == nil {
		for _, ad := range addrs {
			k.addrs = append(k.addrs, ad.String())
		}
	}
	return k
}

// readNewInterfaces reads, outside a.mu, the state of the interfaces
// named since the last maintenance pass, so that the reports that follow
// an apply find it in a.kernelIfcs rather than read it under a.mu
// (interfacesLocked, which still does for a report made in between). The
// caller holds a.applyMu, not a.mu; a.kernelIfcs is replaced only under
// a.applyMu (refreshInterfaces), and an entry already there is kept.
func (a *Agent) readNewInterfaces() {
	a.mu.Lock()
	var names []string
	for name := range a.interfaceNamesLocked() {
		if _, ok := a.kernelIfcs[name]; !ok && name != "" {
			names = append(names, name)
		}
	}
	a.mu.Unlock()
	if len(names) == 0 {
		return
	}
	read := make(map[string]kernelIfc, len(names))
	for _, name := range names {
		read[name] = a.lookUpInterface(name)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, k := range read {
		if _, ok := a.kernelIfcs[name]; !ok {
			a.kernelIfcs[name] = k
		}
	}
}

// interfaceNamesLocked are the interfaces the speaker announces on: the
// default one and those its VIPs name (counted as VIPs come and go, not
// looked up in every VIP per report); a.mu is held.
func (a *Agent) interfaceNamesLocked() map[string]bool {
	names := map[string]bool{a.defaultIfc: true}
	for name := range a.ifcRefs {
		names[name] = true
	}
	return names
}

// countInterfacesLocked adds d to the count of VIPs naming each of names;
// a.mu is held.
func (a *Agent) countInterfacesLocked(names []string, d int) {
	for _, name := range names {
		if a.ifcRefs[name] += d; a.ifcRefs[name] <= 0 {
			delete(a.ifcRefs, name)
		}
	}
}

// refreshInterfaces reads the state of the interfaces the speaker
// announces on, outside a.mu: a report (an apply's answer, a change of
// the speaker's own) then reads none, and neither a report nor a
// heartbeat's answer waits behind the kernel. Called by each maintenance
// pass, which is how a change of an interface is noticed anyway.
func (a *Agent) refreshInterfaces() {
	a.mu.Lock()
	names := a.interfaceNamesLocked()
	a.mu.Unlock()
	read := make(map[string]kernelIfc, len(names))
	for name := range names {
		if name != "" {
			read[name] = a.lookUpInterface(name)
		}
	}
	a.mu.Lock()
	a.kernelIfcs = read
	a.mu.Unlock()
}
