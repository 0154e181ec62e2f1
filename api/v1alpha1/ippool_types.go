package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// IPPool is a set of addresses IronLB may give to Services of type
// LoadBalancer.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ipp,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Priority",type=integer,JSONPath=`.spec.priority`
// +kubebuilder:printcolumn:name="Used",type=integer,JSONPath=`.status.used`
// +kubebuilder:printcolumn:name="Free IPv4",type=string,JSONPath=`.status.ipv4.free`
// +kubebuilder:printcolumn:name="Free IPv6",type=string,JSONPath=`.status.ipv6.free`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   IPPoolSpec   `json:"spec"`
	Status IPPoolStatus `json:"status,omitempty"`
}

// IPPoolSpec says which addresses a pool holds and who may use them.
//
// +kubebuilder:validation:XValidation:rule="!has(self.bgp) || !has(self.bgp.advertisements) || self.bgp.advertisements.all(adv, !has(adv.aggregationLength) || self.addresses.all(a, !isCIDR(a) || cidr(a).ip().family() != 4 || cidr(a).prefixLength() <= adv.aggregationLength))",message="bgp.advertisements: aggregationLength is shorter than one of the pool's IPv4 CIDRs: the aggregate would cover addresses outside the pool"
// +kubebuilder:validation:XValidation:rule="!has(self.bgp) || !has(self.bgp.advertisements) || self.bgp.advertisements.all(adv, !has(adv.aggregationLengthV6) || self.addresses.all(a, !isCIDR(a) || cidr(a).ip().family() != 6 || cidr(a).prefixLength() <= adv.aggregationLengthV6))",message="bgp.advertisements: aggregationLengthV6 is shorter than one of the pool's IPv6 CIDRs: the aggregate would cover addresses outside the pool"
// +kubebuilder:validation:XValidation:rule="!has(self.dhcp) || (has(self.autoAssign) && !self.autoAssign)",message="dhcp: a pool of addresses leased from DHCP must set autoAssign: false; Services name it (the ironlb.dev/pool annotation)"
// +kubebuilder:validation:XValidation:rule="!has(self.dhcp) || self.addresses.all(a, !a.contains(':'))",message="dhcp: DHCP leases IPv4 addresses only; addresses must be IPv4"
// +kubebuilder:validation:XValidation:rule="!has(self.dhcp) || !has(self.clusterAPI)",message="dhcp and clusterAPI exclude each other: machine addresses come from IronLB's own pools"
type IPPoolSpec struct {
	// Addresses are CIDRs and ranges, IPv4 and IPv6 mixed. Pools may
	// overlap (they are then marked Conflicting); an address in several
	// pools goes only to a Service that the serviceAllocation of every one
	// of them allows, so a pool open to all never opens the addresses of a
	// restricted pool it overlaps.
	//
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	// +listType=set
	Addresses []AddressRange `json:"addresses"`

	// AutoAssign lets Services that name no pool get addresses from this one.
	// When false, only Services that name the pool or ask for one of its
	// addresses get them.
	//
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// old clients and routers mishandle.
	//
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// Priority orders auto-assign pools: a Service gets its address from the
	// pool with the highest priority that it may use and that has a free
	// address; ties go by name.
	//
	// +kubebuilder:default=0
	// +optional
	Priority int32 `json:"priority,omitempty"`

	// ServiceAllocation limits which Services may use the pool. Empty means
	// every Service. It also holds for the pool's addresses that other
	// pools contain: such an address goes only to a Service that every
	// pool containing it allows. A Service refused gets an Event naming the
	// rule that refuses it, not the namespaces or namespaceSelector listed.
	//
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`

	// Layer2 says which nodes announce the pool's addresses on their LAN
	// (ARP for IPv4, NDP for IPv6), and on which interfaces. Empty means
	// every eligible node, on the interface holding its node IP.
	//
	// +optional
	Layer2 *Layer2 `json:"layer2,omitempty"`

	// BGP, when present, advertises the pool's addresses to BGPPeers. A
	// pool with neither layer2 nor bgp is announced over layer 2; with
	// both, over both.
	//
	// +optional
	BGP *BGP `json:"bgp,omitempty"`

	// ClusterAPI, when present, lets Cluster API IPAddressClaims (group
	// ipam.cluster.x-k8s.io) whose spec.poolRef names this pool (apiGroup
	// ironlb.dev, kind IPPool) take machine addresses from it, with the
	// same accounting as Service addresses: no address is ever held by a
	// machine and a Service at once. serviceAllocation applies to a
	// claim's namespace as to a Service's. Absent: claims naming the pool
	// are refused (Ready=False, reason PoolNotEnabled).
	//
	// +optional
	ClusterAPI *ClusterAPI `json:"clusterAPI,omitempty"`

	// DHCP, when present, makes the pool's addresses come from the LAN's
	// DHCP server rather than from IronLB: for each Service that names the
	// pool, IronLB leases an address from the server (on the speakers'
	// side of the LAN, with a client identifier stable for the Service),
	// renews the lease while the Service exists and releases it when the
	// Service is deleted. Addresses then lists what the server may hand
	// out (its range for VIPs): a lease outside it is refused, and no
	// other pool hands out addresses inside it. Such a pool must not
	// auto-assign, and is IPv4 only.
	//
	// +optional
	DHCP *DHCP `json:"dhcp,omitempty"`
}

// DHCP says where IronLB asks the LAN's DHCP server for a pool's
// addresses.
type DHCP struct {
	// Interface is the node interface the speakers send DHCP requests on.
	// Empty means the interface that holds the node's InternalIP.
	//
	// +optional
	Interface InterfaceName `json:"interface,omitempty"`
}

// Layer2 configures layer-2 announcement. For each address exactly one
// eligible node answers ARP/NDP at a time; it moves to another node when
// that node or its speaker fails.
//
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'])",message="nodeSelector.matchExpressions: operator must be one of In, NotIn, Exists, DoesNotExist"
// +kubebuilder:validation:XValidation:rule="!has(self.nodeSelector) || !has(self.nodeSelector.matchExpressions) || self.nodeSelector.matchExpressions.all(e, (e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0))",message="nodeSelector.matchExpressions: In and NotIn need values, Exists and DoesNotExist take none"
type Layer2 struct {
	// NodeSelector limits the nodes that may announce the pool's
	// addresses. Empty means every node.
	//
	// +optional
	NodeSelector *metav1.LabelSelector `json:"nodeSelector,omitempty"`

	// Interfaces are the node interfaces to announce on. Empty means the
	// interface that holds the node's InternalIP.
	//
	// +kubebuilder:validation:MaxItems=16
	// +listType=set
	// +optional
	Interfaces []InterfaceName `json:"interfaces,omitempty"`
}

// InterfaceName is a Linux network interface name.
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=15
// +kubebuilder:validation:Pattern=`^[^\s/:%]+$`
// +kubebuilder:validation:XValidation:rule="self != '.' && self != '..'",message="an interface name cannot be . or .."
type InterfaceName string

// ServiceAllocation selects the Services that may use a pool. A Service must
// match everything given. When the CCM cannot look up a Service's
// namespace, a pool with namespaces or a namespaceSelector refuses it.
// An address that lies in several pools goes only to a Service that every
// one of them allows. Editing these, or adding a pool that overlaps, never
// takes an address away: a Service that holds one a pool containing it no
// longer allows keeps it, gets a Warning Event AddressNoLongerAllowed and
// is counted in ironlb_services_outside_pool_policy{pool}. A refused
// Service's Event names the rule that refuses it, not the namespaces or
// namespaceSelector the pool lists.
type ServiceAllocation struct {
	// Namespaces are the only namespaces whose Services may use the pool,
	// matched on the namespace's kubernetes.io/metadata.name label, which
	// the API server sets and tenants cannot change. Empty means any
	// namespace. Unlike serviceSelector, whose labels tenants set on their
	// own Services, this is a boundary between tenants.
	//
	// +kubebuilder:validation:MaxItems=128
	// +listType=set
	// +optional
	Namespaces []NamespaceName `json:"namespaces,omitempty"`

	// NamespaceSelector matches the labels of the Service's namespace.
	//
	// +optional
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`

	// ServiceSelector matches the Service's labels. Tenants set those
	// themselves: use namespaces to keep tenants apart.
	//
	// +optional
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
}

// NamespaceName is a namespace's name (a DNS-1123 label).
//
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
type NamespaceName string

// IPPoolStatus is what the CCM observed of a pool.
type IPPoolStatus struct {
	// ObservedGeneration is the generation the status describes.
	//
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Used counts addresses of the pool held by Services, both families.
	//
	// +optional
	Used int64 `json:"used"`

	// IPv4 counts the pool's IPv4 addresses.
	//
	// +optional
	IPv4 *AddressCounts `json:"ipv4,omitempty"`

	// IPv6 counts the pool's IPv6 addresses.
	//
	// +optional
	IPv6 *AddressCounts `json:"ipv6,omitempty"`

	// Conditions: Ready (the pool hands out addresses) and Conflicting (it
	// overlaps another pool, or holds a Node's InternalIP or the
	// control-plane VIP; no address is ever handed out twice, and a Node's
	// address or the control-plane VIP never).
	//
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// AddressCounts are a pool's address counts for one family. Counts are
// decimal strings because IPv6 pools exceed 64 bits.
type AddressCounts struct {
	// Total counts the addresses that can be handed out.
	Total string `json:"total"`
	// Used counts those held by Services.
	Used int64 `json:"used"`
	// Free is Total minus Used.
	Free string `json:"free"`
}

// ClusterAPI says how a pool answers Cluster API IPAddressClaims. A claim
// has no family: it gets an IPv4 address when the pool has IPv4 addresses,
// else an IPv6 one.
type ClusterAPI struct {
	// Prefix is the prefix length of the machines' network, written to
	// each IPAddress's spec.prefix (e.g. 24). Required: a pool's ranges do
	// not say how large the machines' subnet is. At most 32 when the pool
	// has IPv4 addresses.
	//
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=128
	Prefix int32 `json:"prefix"`

	// Gateway is the machines' default gateway, written to each
	// IPAddress's spec.gateway; of the family claims get (IPv4 when the
	// pool has IPv4 addresses). Never handed out to a claim or a Service.
	//
	// +kubebuilder:validation:MaxLength=39
	// +kubebuilder:validation:XValidation:rule="isIP(self) && ip.isCanonical(self)",message="gateway must be an IP address in canonical form"
	// +optional
	Gateway string `json:"gateway,omitempty"`
}

// Condition types and reasons of IPPool.
const (
	ConditionReady       = "Ready"
	ConditionConflicting = "Conflicting"

	ReasonValid           = "Valid"
	ReasonInvalid         = "Invalid"
	ReasonOverlap         = "Overlap"
	ReasonNodeAddress     = "NodeAddress"
	ReasonControlPlaneVIP = "ControlPlaneVIP"
	ReasonNoOverlap       = "NoOverlap"
	ReasonInvalidSelector = "InvalidSelector"
)

// IPPoolList is a list of IPPools.
//
// +kubebuilder:object:root=true
type IPPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPPool `json:"items"`
}
