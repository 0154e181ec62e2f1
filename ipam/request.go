package ipam

import "net/netip"

// Subject describes who asks for addresses, for pools' selectors.
type Subject struct {
	Namespace       string
	NamespaceLabels map[string]string
	// NamespaceErr, when set, says why NamespaceLabels are unknown (the
	// namespace could not be looked up). Pools that select by namespace
	// refuse such a subject with an error wrapping ErrUnknownNamespace:
	// they fail closed.
	NamespaceErr error
	Labels       map[string]string
}

// Pool is a set of addresses and the rules for handing them out.
type Pool struct {
	Name string
	// Ranges come from ParseRanges: sorted and merged.
	Ranges []Range
	// AutoAssign lets requests that name no pool draw from this one.
	AutoAssign bool
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 or .255.
	AvoidBuggyIPs bool
	// Priority orders auto-assign pools: higher first, then by name.
	Priority int32
	// Refuses says why subject may not use the pool, nil when it may; a nil
	// Refuses allows everyone. A refusal wrapping ErrUnknownNamespace means
	// the pool cannot tell: no new address is then picked from any pool
	// for the request, so that it does not silently land in another pool.
	Refuses func(Subject) error
	// Leased marks a pool whose addresses the LAN's DHCP server hands out
	// (IronLB leases them): the allocator never picks one on its own, not
	// for this pool nor for another pool that overlaps it; it gives one
	// only to a request that lists it in Request.Leased.
	Leased bool
}

// Port is a protocol and port a Service listens on, for sharing checks.
type Port struct {
	Protocol string
	Port     int32
}

// Sharing says with whom an owner may share an address: owners with the same
// non-empty Key, the same TrafficPolicy and no Port in common; owners of
// other namespaces (Subject.Namespace) only when each allows the other's
// namespace in Namespaces; with the traffic policy Local, only owners with
// the same Selector.
type Sharing struct {
	Key           string
	TrafficPolicy string
	Ports         []Port
	// Namespaces are the namespaces besides its own whose owners may share
	// with this one ("*": any); none: its own only.
	Namespaces []string
	// Selector identifies the pods the owner sends traffic to (a
	// Service's selector in canonical form): owners with the traffic
	// policy Local must select the same pods, or the nodes that may
	// announce the address would be those where both have pods.
	Selector string
	// Aliases are more keys the owner shares under, for Restore only: the
	// spellings of a Service's sharing annotations when they disagree, so
	// that a Service whose annotations stopped parsing keeps its address.
	Aliases []string
}

// Request asks for the addresses of one owner (a Service).
type Request struct {
	// Owner identifies the owner for good (a Service UID): Ensure is
	// idempotent per Owner.
	Owner string
	// Name is shown in messages ("namespace/name").
	Name    string
	Subject Subject
	// Pool, when set, is the only pool to draw from.
	Pool string
	// Addresses are specific addresses wanted, at most one per family.
	Addresses []netip.Addr
	// Families are the families wanted, in order (a Service's ipFamilies).
	Families []Family
	// RequireAll fails the request unless every family gets an address
	// (SingleStack, RequireDualStack); otherwise (PreferDualStack) one is
	// enough.
	RequireAll bool
	Sharing    Sharing
	// Leased are the addresses a DHCP server leased for this owner (or
	// its sharing group): the only addresses of Leased pools it may get.
	Leased []netip.Addr
}

// Allocation is what an owner holds.
type Allocation struct {
	// Addresses in the order of the request's families.
	Addresses []netip.Addr
	// Pools holds, per address, the pool it lies in now ("" if none).
	Pools []string
	// Warnings explain families of a PreferDualStack request that got no
	// address.
	Warnings []string
	// Taken details, for the administrator's log, the warnings that are
	// about addresses others hold (the warnings name none of them).
	Taken []*TakenError
}

// Holding describes who holds an address.
type Holding struct {
	// Owners are the owners' names ("namespace/name"), sorted.
	Owners []string
	// SharingKey is the key they share under, "" for an exclusive address.
	SharingKey string
}
