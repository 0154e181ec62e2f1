package speaker

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	speakerv1 "github.com/ironlb/ironlb/api/speaker/v1"
)

func (a *Agent) applySnapshot(id uint64, s *speakerv1.Snapshot) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.loadHeld() // for refuse, before a.mu
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	if err := a.acceptTermLocked(id, s.GetTerm(), s.GetLeader()); err != nil {
		a.mu.Unlock()
		a.log.Info("Refusing a snapshot of an older CCM leader", "leader", s.GetLeader(), "term", s.GetTerm(), "following", a.leader, "followingTerm", a.term)
		return err
	}
	if a.stream != id {
		a.log.Info("CCM took over the speaker", "leader", s.GetLeader(), "term", s.GetTerm(), "version", s.GetVersion())
	}
	a.stream = id
	if st := a.streams[id]; st != nil && s.GetVipDeltas() {
		st.deltas = true
	}
	a.heard = a.now()
	a.hbInterval = time.Duration(s.GetHeartbeatIntervalMs()) * time.Millisecond
	a.kick() // the cut-off deadline moved
	want := map[netip.Addr]*speakerv1.Announcement{}
	for _, an := range s.GetAnnouncements() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		want[addr] = an
	}
	var ops []vipOp
	for addr := range a.vips {
		if _, ok := want[addr]; !ok {
			ops = append(ops, a.planWithdrawLocked(addr))
		}
	}
	for addr, an := range want {
		ops = append(ops, a.planAnnounceLocked(addr, an))
	}
	a.bgpCfg = s.GetBgp()
	d, derr := a.desiredBGPLocked()
	a.mu.Unlock()

	a.perform(ops)
	a.readNewInterfaces() // for the answer's report
	berr := a.applyBGP(d, derr)

	a.mu.Lock()
	defer a.mu.Unlock()
	a.recordLocked(ops)
	a.recordBGPLocked(d, berr)
	a.applied = s.GetVersion()
	a.notifyLocked()
	return nil
}

func (a *Agent) applyUpdate(id uint64, u *speakerv1.Update) error {
	a.applyMu.Lock()
	defer a.applyMu.Unlock()
	a.loadHeld() // for refuse, before a.mu
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	if u.GetTerm() != 0 && u.GetTerm() < a.term {
		a.mu.Unlock()
		return fmt.Errorf("%w: update of term %d, but this speaker follows term %d of leader %q", errFenced, u.GetTerm(), a.term, a.leader)
	}
	if a.stream != id {
		a.mu.Unlock()
		return errors.New("another CCM has taken over this speaker; send a snapshot first")
	}
	if u.GetVersion() != a.applied+1 {
		a.mu.Unlock()
		return fmt.Errorf("update version %d does not follow applied version %d", u.GetVersion(), a.applied)
	}
	var ops []vipOp
	// bgpTouched: the update changes what the node advertises over BGP
	// (its set-up, or a VIP advertised before or after). Else the BGP
	// side is left alone: building its desired state is O(VIPs), and a
	// layer-2 change must cost a BGP node nothing of the kind.
	bgpTouched := u.GetBgp() != nil || a.bgpErr != nil
	for _, w := range u.GetWithdraw() {
		addr, err := netip.ParseAddr(w)
		if err != nil {
			a.log.Error(err, "Ignoring withdrawal of a bad address", "address", w)
			continue
		}
		if v := a.vips[addr]; v != nil {
			bgpTouched = bgpTouched || len(v.bgp) > 0
			ops = append(ops, a.planWithdrawLocked(addr))
		}
	}
	for _, an := range u.GetAnnounce() {
		addr, err := netip.ParseAddr(an.GetAddress())
		if err != nil {
			a.log.Error(err, "Ignoring announcement with a bad address", "address", an.GetAddress(), "service", an.GetService())
			continue
		}
		if v := a.vips[addr]; len(an.GetBgp()) > 0 || v != nil && len(v.bgp) > 0 {
			bgpTouched = true
		}
		ops = append(ops, a.planAnnounceLocked(addr, an))
	}
	if u.GetBgp() != nil {
		a.bgpCfg = u.GetBgp()
	}
	var (
		d    bgpDesired
		derr error
	)
	if bgpTouched {
		d, derr = a.desiredBGPLocked()
	}
	a.mu.Unlock()

	a.perform(ops)
	a.readNewInterfaces() // for the answer's report
	var berr error
	if bgpTouched {
		berr = a.applyBGP(d, derr)
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	a.recordLocked(ops)
	if bgpTouched {
		a.recordBGPLocked(d, berr)
	}
	a.applied = u.GetVersion()
	a.notifyLocked()
	return nil
}

// planAnnounceLocked records an as what addr should be and plans making it
// announced exactly on the interfaces an names: after a probe when an asks
// for one and the VIP is not answered for now (or another host claimed it
// since), not at all while it is in CONFLICT (the timers goroutine probes
// it again), again after a yield. An address the speaker must not
// announce (an IPv4-mapped spelling, one of this node's own addresses) is
// recorded as FAILED with the reason.
func (a *Agent) planAnnounceLocked(addr netip.Addr, an *speakerv1.Announcement) vipOp {
	ifcs := slices.Clone(an.GetInterfaces())
	if len(ifcs) == 0 {
		ifcs = []string{a.defaultIfc}
	}
	slices.Sort(ifcs)
	ifcs = slices.Compact(ifcs)
	a.vipChangedLocked(addr)
	v := a.vips[addr]
	if v == nil {
		v = &vip{}
		a.vips[addr] = v
		a.log.Info("Announcing VIP", "address", addr, "service", an.GetService(), "interfaces", ifcs)
	}
	v.service = an.GetService()
	a.countInterfacesLocked(v.interfaces, -1)
	a.countInterfacesLocked(ifcs, 1)
	v.interfaces = ifcs
	v.bgpOnly = an.GetBgpOnly()
	v.bgp = an.GetBgp()
	v.err = nil
	v.refused = false
	op := vipOp{addr: addr, v: v, service: v.service, answered: v.answering()}
	if err := errors.Join(a.refuse(addr), a.refuseOutside(addr, v.bgp)); err != nil {
		op.withdraw = slices.Clone(v.announced)
		v.err = err
		v.refused = true
		v.state, v.claim = stateAnnouncing, nil
		a.exports.set(addr, nil)
		a.log.Error(err, "Refusing to announce VIP", "address", addr, "service", v.service)
		return op
	}
	a.exports.set(addr, v.bgp)
	if v.bgpOnly {
		// Advertised over BGP only (applyBGP): no ARP/NDP.
		op.withdraw = slices.Clone(v.announced)
		v.state, v.claim = stateAnnouncing, nil
		return op
	}
	if v.state == stateConflict {
		return op // not answered; probed again at v.probeAt
	}
	for _, name := range v.announced {
		if slices.Contains(ifcs, name) {
			op.keep = append(op.keep, name)
		} else {
			op.withdraw = append(op.withdraw, name)
		}
	}
	op.announce = true
	op.ifcs = ifcs
	// A yielded VIP the CCM still wants is announced again at once.
	op.probe = an.GetProbe() && v.state != stateYielded && (!op.answered || v.claim != nil)
	return op
}

// planWithdrawLocked forgets addr and plans its withdrawal.
func (a *Agent) planWithdrawLocked(addr netip.Addr) vipOp {
	v := a.vips[addr]
	if v == nil {
		return vipOp{addr: addr}
	}
	delete(a.vips, addr)
	a.vipChangedLocked(addr)
	delete(a.toYield, addr)
	a.exports.remove(addr)
	a.countInterfacesLocked(v.interfaces, -1)
	a.log.Info("Withdrew VIP", "address", addr, "service", v.service)
	return vipOp{addr: addr, service: v.service, withdraw: slices.Clone(v.announced)}
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

// loadHeld lists the node's own addresses (netlink) outside a.mu when
// they are to be listed again (a.held nil: at start, and after Run saw the
// interfaces change), so that planAnnounceLocked does not list them under
// a.mu. The caller holds a.applyMu, under which alone a.held is reset
// (maintain).
func (a *Agent) loadHeld() {
	a.mu.Lock()
	need := a.held == nil
	a.mu.Unlock()
	if !need {
		return
	}
	held, err := a.local()
	if err != nil {
		a.log.Error(err, "Cannot list this node's addresses; VIPs are announced without checking them")
		held = map[netip.Addr]string{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.held == nil {
		a.held = held
	}
}

// heldLocked returns the node's own addresses, listed again after Run saw
// the interfaces change (listed by loadHeld before a.mu was taken, except
// when a.local gave none).
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
