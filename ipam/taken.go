package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// TakenReason says why an address that others hold cannot be given to a
// request, without naming them.
type TakenReason string

// Reasons of a TakenError. Only holders that agreed to share with the
// requester (one sharing key, and each side's namespace allowed by the
// other) let it learn more than ReasonInUse: the requester cannot tell an
// address held without a key from one held under another key, or by a
// Service of a namespace that does not share with its own.
const (
	// ReasonInUse: the address is held and not shared with the requester
	// (no common sharing key, or sharing across namespaces not agreed).
	ReasonInUse TakenReason = "InUse"
	// ReasonReserved: the address is reserved outside the allocator (a
	// Node's address).
	ReasonReserved TakenReason = "Reserved"
	// ReasonControlPlaneVIP: the address is the cluster's control-plane
	// VIP, the kube-apiserver's own address (ReserveControlPlane).
	ReasonControlPlaneVIP TakenReason = "ControlPlaneVIP"
	// ReasonOtherLoadBalancer: a Service IronLB does not serve (of
	// another loadBalancerClass) lists the address in its status: another
	// load balancer handed it out (ReserveForeign).
	ReasonOtherLoadBalancer TakenReason = "OtherLoadBalancer"
	// ReasonStatusClaim: only the status of another owner still lists it
	// (it lost the address at a restore); it is free once that status
	// changes.
	ReasonStatusClaim TakenReason = "ListedInAnotherStatus"
	// ReasonTrafficPolicy: the sharers use another externalTrafficPolicy.
	ReasonTrafficPolicy TakenReason = "TrafficPolicyDiffers"
	// ReasonSelector: with externalTrafficPolicy Local, the sharers select
	// other pods.
	ReasonSelector TakenReason = "SelectorDiffers"
	// ReasonPort: a sharer already uses one of the requester's ports.
	ReasonPort TakenReason = "PortInUse"
)

// TakenError says that a request cannot have an address others hold. Its
// Error text is for the requester and names none of the holders, their
// namespaces or sharing key: it becomes an Event in the requester's
// namespace, which another tenant may read. Holders, SharingKey and Detail
// are for the administrator's log.
type TakenError struct {
	Addr   netip.Addr
	Reason TakenReason
	// Holders are the names of the holders other than the requester
	// ("namespace/name", "Node node-a"), sorted.
	Holders []string
	// SharingKey is the key the holders share under ("" for none).
	SharingKey string
	// Detail explains Reason naming the holders.
	Detail string
	// public explains Reason to the requester.
	public string
}

// Error returns the explanation for the requester.
func (e *TakenError) Error() string { return e.public }

// TakenErrors returns the TakenErrors in err's tree, for logging their
// details.
func TakenErrors(err error) []*TakenError {
	var out []*TakenError
	var walk func(error)
	walk = func(err error) {
		if te, ok := err.(*TakenError); ok {
			out = append(out, te)
			return
		}
		switch x := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range x.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(x.Unwrap())
		}
	}
	walk(err)
	return out
}

// taken builds the TakenError for req and h.
func (h *holding) taken(addr netip.Addr, req Request, reason TakenReason, public, detail string) *TakenError {
	var others []string
	for _, m := range h.members {
		if m.owner != req.Owner {
			others = append(others, m.name)
		}
	}
	slices.Sort(others)
	return &TakenError{Addr: addr, Reason: reason, Holders: others, SharingKey: h.key, Detail: detail, public: public}
}

// compatible returns why req cannot share h (at addr), ignoring member
// self; nil when it can.
func (h *holding) compatible(addr netip.Addr, req Request, self string) *TakenError {
	if len(h.members) == 1 && h.members[0].owner == staleOwner {
		return h.taken(addr, req, ReasonStatusClaim,
			"another Service's status still lists it (that Service lost it when IronLB restarted); it is free once that status changes",
			h.members[0].name+" still lists it")
	}
	var others []string
	for _, m := range h.members {
		if m.owner != self {
			others = append(others, m.name)
		}
	}
	held := strings.Join(others, ", ")
	// Whether the holders share with req at all: nothing more is said
	// unless they do.
	for _, m := range h.members {
		if m.owner == self {
			continue
		}
		switch {
		case m.reserved == ReasonControlPlaneVIP:
			return h.taken(addr, req, ReasonControlPlaneVIP,
				"it is reserved: it is the cluster's control-plane VIP (the kube-apiserver's address), which IronLB never gives to a Service",
				fmt.Sprintf("it is the %s", m.name))
		case m.reserved == ReasonOtherLoadBalancer:
			return h.taken(addr, req, ReasonOtherLoadBalancer,
				"it is in use by another load balancer: a Service of a loadBalancerClass IronLB does not serve lists it in its status",
				fmt.Sprintf("%s lists it", m.name))
		case m.reserved != "":
			return h.taken(addr, req, ReasonReserved, "it is reserved: a Node of the cluster has this address",
				fmt.Sprintf("%s has it", m.name))
		case req.Sharing.Key == "":
			return h.taken(addr, req, ReasonInUse, "it is in use, and this Service has no sharing key",
				fmt.Sprintf("it is held by %s and %s has no sharing key", held, req.Name))
		case h.key != req.Sharing.Key:
			return h.taken(addr, req, ReasonInUse, inUse(req),
				fmt.Sprintf("it is held by %s under sharing key %q, not %q", held, h.key, req.Sharing.Key))
		case m.namespace != req.Subject.Namespace && (!allows(m.namespaces, req.Subject.Namespace) || !allows(req.Sharing.Namespaces, m.namespace)):
			return h.taken(addr, req, ReasonInUse, inUse(req),
				fmt.Sprintf("%s is in namespace %s and %s in namespace %s: sharing across namespaces needs both to allow the other's", m.name, m.namespace, req.Name, req.Subject.Namespace))
		}
	}
	// They do: req may learn their terms, not their names.
	for _, m := range h.members {
		if m.owner == self {
			continue
		}
		if m.policy != req.Sharing.TrafficPolicy {
			return h.taken(addr, req, ReasonTrafficPolicy,
				fmt.Sprintf("its sharers use externalTrafficPolicy %s, this Service uses %s", m.policy, req.Sharing.TrafficPolicy),
				fmt.Sprintf("%s uses externalTrafficPolicy %s, %s uses %s", m.name, m.policy, req.Name, req.Sharing.TrafficPolicy))
		}
		if m.policy == "Local" && m.selector != req.Sharing.Selector {
			return h.taken(addr, req, ReasonSelector,
				"a sharer selects other pods than this Service: with externalTrafficPolicy Local, sharers must select the same pods",
				fmt.Sprintf("%s selects other pods (%q) than %s (%q): with externalTrafficPolicy Local, sharers must select the same pods", m.name, m.selector, req.Name, req.Sharing.Selector))
		}
		for _, p := range req.Sharing.Ports {
			if slices.Contains(m.ports, p) {
				return h.taken(addr, req, ReasonPort,
					fmt.Sprintf("a sharer already uses %s/%d", p.Protocol, p.Port),
					fmt.Sprintf("%s already uses %s/%d", m.name, p.Protocol, p.Port))
			}
		}
	}
	return nil
}

// inUse is the explanation of ReasonInUse for a request with a key.
func inUse(req Request) string {
	return fmt.Sprintf("it is in use and not shared with this Service (its sharing key %q is not the holders', "+
		"or they are in another namespace and sharing across namespaces needs both to allow the other's)", req.Sharing.Key)
}
