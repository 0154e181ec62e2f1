package ipam

import (
	"fmt"
	"slices"
	"strings"
)

// compatibleMember reports why req, a member of h, cannot keep sharing it.
// A member that changes its ports or policy must stay compatible with
// every other member; one that changes nothing only with the members that
// joined before it. So the first come keep an address, and a clash (which
// only Restore lets in) fails the latecomer or the member that caused it.
func (h *holding) compatibleMember(req Request) error {
	i := slices.IndexFunc(h.members, func(m member) bool { return m.owner == req.Owner })
	if i < 0 || h.members[i].changedBy(req) {
		return h.compatible(req, req.Owner)
	}
	earlier := &holding{family: h.family, key: h.key, policy: h.policy, members: h.members[:i+1]}
	return earlier.compatible(req, req.Owner)
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

// compatible reports why req cannot share h, ignoring member self.
func (h *holding) compatible(req Request, self string) error {
	if len(h.members) == 1 && h.members[0].owner == staleOwner {
		return fmt.Errorf("%s still lists it", h.members[0].name)
	}
	var others []string
	for _, m := range h.members {
		if m.owner != self {
			others = append(others, m.name)
		}
	}
	switch {
	case req.Sharing.Key == "":
		return fmt.Errorf("it is held by %s and %s has no sharing key", strings.Join(others, ", "), req.Name)
	case h.key != req.Sharing.Key:
		return fmt.Errorf("it is held by %s under sharing key %q, not %q", strings.Join(others, ", "), h.key, req.Sharing.Key)
	}
	for _, m := range h.members {
		if m.owner == self {
			continue
		}
		if m.policy != req.Sharing.TrafficPolicy {
			return fmt.Errorf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, req.Name, req.Sharing.TrafficPolicy)
		}
		if m.namespace != req.Subject.Namespace && (!allows(m.namespaces, req.Subject.Namespace) || !allows(req.Sharing.Namespaces, m.namespace)) {
			return fmt.Errorf("%s is in namespace %s and %s in namespace %s: sharing across namespaces needs both to allow the other's", m.name, m.namespace, req.Name, req.Subject.Namespace)
		}
		if m.policy == "Local" && m.selector != req.Sharing.Selector {
			return fmt.Errorf("%s selects other pods (%q) than %s (%q): with externalTrafficPolicy Local, sharers must select the same pods", m.name, m.selector, req.Name, req.Sharing.Selector)
		}
		for _, p := range req.Sharing.Ports {
			if slices.Contains(m.ports, p) {
				return fmt.Errorf("%s already uses %s/%d", m.name, p.Protocol, p.Port)
			}
		}
	}
	return nil
}

// SharingConflicts explains, for each address the owner shares, why it
// could not share it with the sharers that joined before it if it asked
// now (ports used twice, different traffic policies). Restore keeps such
// addresses rather than re-addressing a Service; Ensure fails for the
// owner until the user fixes the clash, while the earlier sharers keep
// working.
func (a *Allocator) SharingConflicts(owner string) []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	o := a.owners[owner]
	if o == nil {
		return nil
	}
	var out []string
	for _, addr := range o.addrs {
		if msg := a.holdings[keyOf(addr)].clash(owner); msg != "" {
			out = append(out, fmt.Sprintf("%s: %s", addr, msg))
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
		if len(h.members) > 1 && h.clash("") != "" {
			n++
		}
	}
	return n
}

// clash says why member owner (or, for "", any member) clashes with a
// sharer of h that joined before it: a port both use, or another traffic
// policy; "" if none does.
func (h *holding) clash(owner string) string {
	for i, m := range h.members {
		if owner != "" && m.owner != owner {
			continue
		}
		for _, o := range h.members[:i] {
			if m.policy != o.policy {
				return fmt.Sprintf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, o.name, o.policy)
			}
			for _, p := range m.ports {
				if slices.Contains(o.ports, p) {
					return fmt.Sprintf("%s and %s both use %s/%d", m.name, o.name, p.Protocol, p.Port)
				}
			}
		}
	}
	return ""
}

// allows reports whether namespaces (a Sharing's) let ns share.
func allows(namespaces []string, ns string) bool {
	return slices.Contains(namespaces, "*") || slices.Contains(namespaces, ns)
}
