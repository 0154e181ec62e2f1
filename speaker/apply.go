package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

func (a *Agent) applySnapshot(id uint64, s *speakerv1.Snapshot) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	if err := a.acceptTermLocked(id, s.GetTerm(), s.GetLeader()); err != nil {
		a.log.Info("Refusing a snapshot of an older CCM leader", "leader", s.GetLeader(), "term", s.GetTerm(), "following", a.leader, "followingTerm", a.term)
		return err
	}
	if a.stream != id {
		a.log.Info("CCM took over the speaker", "leader", s.GetLeader(), "term", s.GetTerm(), "version", s.GetVersion())
	}
	a.stream = id
	want := map[netip.Addr]*speakerv1.Announcement{}
	for _, an := range s.GetAnnouncements() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		want[addr] = an
	}
	for addr := range a.vips {
		if _, ok := want[addr]; !ok {
			a.withdrawLocked(addr)
		}
	}
	for addr, an := range want {
		a.announceLocked(addr, an)
	}
	a.bgpCfg = s.GetBgp()
	a.applyBGPLocked()
	a.applied = s.GetVersion()
	a.notifyLocked()
	return nil
}

func (a *Agent) applyUpdate(id uint64, u *speakerv1.Update) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return nil
	}
	if u.GetTerm() != 0 && u.GetTerm() < a.term {
		return fmt.Errorf("%w: update of term %d, but this speaker follows term %d of leader %q", errFenced, u.GetTerm(), a.term, a.leader)
	}
	if a.stream != id {
		return errors.New("another CCM has taken over this speaker; send a snapshot first")
	}
	if u.GetVersion() != a.applied+1 {
		return fmt.Errorf("update version %d does not follow applied version %d", u.GetVersion(), a.applied)
	}
	for _, w := range u.GetWithdraw() {
		addr, err := netip.ParseAddr(w)
		if err != nil {
			a.log.Error(err, "Ignoring withdrawal of a bad address", "address", w)
			continue
		}
		a.withdrawLocked(addr)
	}
	for _, an := range u.GetAnnounce() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		a.announceLocked(addr, an)
	}
	if u.GetBgp() != nil {
		a.bgpCfg = u.GetBgp()
	}
	a.applyBGPLocked()
	a.applied = u.GetVersion()
	a.notifyLocked()
	return nil
}

// announceLocked makes addr announced exactly on the interfaces an names.
// An address the speaker must not announce (an IPv4-mapped spelling, one
// of this node's own addresses) is recorded as FAILED with the reason.
func (a *Agent) announceLocked(addr netip.Addr, an *speakerv1.Announcement) {
	ifcs := slices.Clone(an.GetInterfaces())
	if len(ifcs) == 0 {
		ifcs = []string{a.defaultIfc}
	}
	slices.Sort(ifcs)
	ifcs = slices.Compact(ifcs)
	v := a.vips[addr]
	if v == nil {
		v = &vip{}
		a.vips[addr] = v
		a.log.Info("Announcing VIP", "address", addr, "service", an.GetService(), "interfaces", ifcs)
	}
	v.service = an.GetService()
	v.interfaces = ifcs
	v.bgpOnly = an.GetBgpOnly()
	v.bgp = an.GetBgp()
	v.err = nil
	v.refused = false
	if err := errors.Join(a.refuse(addr), a.refuseOutside(addr, v.bgp)); err != nil {
		a.withdrawFromLocked(addr, v, nil)
		v.announced = nil
		v.err = err
		v.refused = true
		a.log.Error(err, "Refusing to announce VIP", "address", addr, "service", v.service)
		return
	}
	if v.bgpOnly {
		// Advertised over BGP only (applyBGPLocked): no ARP/NDP.
		a.withdrawFromLocked(addr, v, nil)
		v.announced = nil
		return
	}
	a.withdrawFromLocked(addr, v, ifcs)
	var announced []string
	var errs []error
	for _, name := range ifcs {
		ann, err := a.announcerLocked(name)
		if err == nil {
			err = ann.Announce(addr)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("interface %s: %w", name, err))
			continue
		}
		announced = append(announced, name)
	}
	v.announced = announced
	if len(errs) > 0 {
		v.err = errors.Join(errs...)
		a.log.Error(v.err, "Cannot announce VIP", "address", addr, "service", v.service)
	}
}

// refuse says why addr must not be announced by this node, nil if it may.
func (a *Agent) refuse(addr netip.Addr) error {
	switch {
	case addr.Is4In6():
		return fmt.Errorf("%s is an IPv4-mapped IPv6 address; a VIP must be written as IPv4 (%s)", addr, addr.Unmap())
	case addr.Zone() != "":
		return fmt.Errorf("%s has a zone; a VIP cannot", addr)
	case addr.IsUnspecified(), addr.IsLoopback(), addr.IsMulticast(), addr.IsLinkLocalUnicast():
		return fmt.Errorf("%s is not a unicast address a VIP can be", addr)
	}
	if ifc, ok := a.heldLocked()[addr]; ok {
		return fmt.Errorf("%s is an address of this node (interface %s); announcing it would take the node's own address over", addr, ifc)
	}
	return nil
}

// heldLocked returns the node's own addresses, listed again after Run saw
// the interfaces change.
func (a *Agent) heldLocked() map[netip.Addr]string {
	if a.held == nil {
		held, err := a.local()
		if err != nil {
			a.log.Error(err, "Cannot list this node's addresses; VIPs are announced without checking them")
			held = map[netip.Addr]string{}
		}
		a.held = held
	}
	return a.held
}

// withdrawFromLocked stops announcing addr on the interfaces it is
// announced on but keep does not list.
func (a *Agent) withdrawFromLocked(addr netip.Addr, v *vip, keep []string) {
	for _, name := range v.announced {
		if slices.Contains(keep, name) {
			continue
		}
		if ann := a.announcers[name]; ann != nil {
			if err := ann.Withdraw(addr); err != nil {
				a.log.Error(err, "Withdrawing VIP", "address", addr, "interface", name)
			}
		}
	}
}

func (a *Agent) withdrawLocked(addr netip.Addr) {
	v := a.vips[addr]
	if v == nil {
		return
	}
	a.withdrawFromLocked(addr, v, nil)
	delete(a.vips, addr)
	a.log.Info("Withdrew VIP", "address", addr, "service", v.service)
}
