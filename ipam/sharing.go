package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// compatibleMember reports why req, a member of h, cannot keep sharing it.
// A member that changes its ports or policy must stay compatible with
// every other member; one that changes nothing only with the members that
// joined before it. So the first come keep an address, and a clash (which
// only Restore lets in) fails the latecomer or the member that caused it.
func (h *holding) compatibleMember(addr netip.Addr, req Request) *TakenError {
	i := slices.IndexFunc(h.members, func(m member) bool { return m.owner == req.Owner })
	if i < 0 || h.members[i].changedBy(req) {
		return h.compatible(addr, req, req.Owner)
	}
	earlier := &holding{family: h.family, key: h.key, policy: h.policy, members: h.members[:i+1]}
	return earlier.compatible(addr, req, req.Owner)
}

// changedBy reports whether req changes the member's ports, policy,
// selector or the namespaces it shares with.
func (m member) changedBy(req Request) bool {
	if m.policy != req.Sharing.TrafficPolicy || len(m.ports) != len(req.Sharing.Ports) ||
		m.selector != req.Sharing.Selector || !slices.Equal(m.namespaces, req.Sharing.Namespaces) || m.namespace != req.Subject.Namespace {
		return true
	}
	for _, p := range req.Sharing.Ports {
		if !slices.Contains(m.ports, p) {
			return true
		}
	}
	return false
}

// SharingConflict is a clash between an owner and the sharers of one of
// its addresses that joined before it.
type SharingConflict struct {
	Addr netip.Addr
	// Reason is ReasonTrafficPolicy or ReasonPort.
	Reason TakenReason
	// Message says it for the owner without naming the other sharers;
	// Detail names them, for the administrator's log.
	Message, Detail string
}

// SharingConflicts explains, for each address the owner shares, why it
// could not share it with the sharers that joined before it if it asked
// now (ports used twice, different traffic policies). Restore keeps such
// addresses rather than re-addressing a Service; Ensure fails for the
// owner until the user fixes the clash, while the earlier sharers keep
// working.
func (a *Allocator) SharingConflicts(owner string) []SharingConflict {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		return nil
	}
	var out []SharingConflict
	for _, addr := range o.addrs {
		if c, ok := a.holdings[keyOf(addr)].clash(owner); ok {
			c.Addr = addr
			out = append(out, c)
		}
	}
	return out
}

// ConflictingAddresses counts the shared addresses whose sharers clash.
func (a *Allocator) ConflictingAddresses() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, h := range a.holdings {
		if _, ok := h.clash(""); len(h.members) > 1 && ok {
			n++
		}
	}
	return n
}

// clash says why member owner (or, for "", any member) clashes with a
// sharer of h that joined before it: a port both use, or another traffic
// policy; false if none does.
func (h *holding) clash(owner string) (SharingConflict, bool) {
	for i, m := range h.members {
		if owner != "" && m.owner != owner {
			continue
		}
		for _, o := range h.members[:i] {
			if m.policy != o.policy {
				return SharingConflict{
					Reason:  ReasonTrafficPolicy,
					Message: fmt.Sprintf("this Service uses externalTrafficPolicy %s, a sharer that came before it %s", m.policy, o.policy),
					Detail:  fmt.Sprintf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, o.name, o.policy),
				}, true
			}
			for _, p := range m.ports {
				if slices.Contains(o.ports, p) {
					return SharingConflict{
						Reason:  ReasonPort,
						Message: fmt.Sprintf("this Service and a sharer that came before it both use %s/%d", p.Protocol, p.Port),
						Detail:  fmt.Sprintf("%s and %s both use %s/%d", m.name, o.name, p.Protocol, p.Port),
					}, true
				}
			}
		}
	}
	return SharingConflict{}, false
}

// allows reports whether namespaces (a Sharing's) let ns share.
func allows(namespaces []string, ns string) bool {
	return slices.Contains(namespaces, "*") || slices.Contains(namespaces, ns)
}
