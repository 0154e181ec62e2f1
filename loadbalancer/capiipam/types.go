package capiipam

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"
	"strings"

	"github.com/ironlb/ironlb/api/v1alpha1"
)

// Finalizers, named as the in-cluster provider names them.
const (
	// ReleaseAddressFinalizer on a claim keeps it until its address is
	// released.
	ReleaseAddressFinalizer = "ipam.cluster.x-k8s.io/ReleaseAddress"
	// ProtectAddressFinalizer on an IPAddress keeps it while its claim
	// exists.
	ProtectAddressFinalizer = "ipam.cluster.x-k8s.io/ProtectAddress"
)

// Cluster API's labels and annotations this package reads.
const (
	PausedAnnotation = "cluster.x-k8s.io/paused"
	ClusterNameLabel = "cluster.x-k8s.io/cluster-name"
)

// Reason is the reason of a claim's Ready condition, also that of the
// Event recorded when the condition changes.
type Reason string

// Reasons of the Ready condition. The failure reasons of Cluster API's
// ipam/v1beta2 are used where they fit.
const (
	// ReasonReady: the claim has its IPAddress.
	ReasonReady Reason = "Ready"
	// ReasonPoolNotFound: spec.poolRef names no IPPool.
	ReasonPoolNotFound Reason = "PoolNotFound"
	// ReasonPoolNotEnabled: the IPPool has no spec.clusterAPI.
	ReasonPoolNotEnabled Reason = "PoolNotEnabled"
	// ReasonPoolNotReady: the IPPool is invalid (ipamv1 PoolNotReady).
	ReasonPoolNotReady Reason = ipamv1.IPAddressClaimReadyPoolNotReadyReason
	// ReasonNamespaceNotAllowed: the pool's serviceAllocation refuses the
	// claim's namespace (or labels).
	ReasonNamespaceNotAllowed Reason = "NamespaceNotAllowed"
	// ReasonPoolExhausted: no free address (ipamv1 PoolExhausted).
	ReasonPoolExhausted Reason = ipamv1.IPAddressClaimReadyPoolExhaustedReason
	// ReasonAddressConflict: the claim's IPAddress names an address a
	// Service (or another owner) holds; restore gave it to them.
	ReasonAddressConflict Reason = "AddressConflict"
	// ReasonAllocationFailed: any other failure (ipamv1 AllocationFailed).
	ReasonAllocationFailed Reason = ipamv1.IPAddressClaimReadyAllocationFailedReason
)

// Event reasons besides the Ready reasons.
const (
	EventAddressReleased = "AddressReleased"
	EventPaused          = "Paused"
)

// Resources this package reads and writes.
var (
	ClaimResource   = ipamv1.GroupVersion.WithResource("ipaddressclaims")
	AddressResource = ipamv1.GroupVersion.WithResource("ipaddresses")
	ClusterResource = schema.GroupVersionResource{Group: "cluster.x-k8s.io", Version: "v1beta2", Resource: "clusters"}
	claimGVK        = ipamv1.GroupVersion.WithKind("IPAddressClaim")
	poolGVK         = v1alpha1.GroupVersion.WithKind("IPPool")
)

// ours reports whether ref names an IronLB IPPool.
func ours(ref ipamv1.IPPoolReference) bool {
	return ref.APIGroup == poolGVK.Group && ref.Kind == poolGVK.Kind && ref.Name != ""
}

// ownerOf is the allocator's owner of the claim namespace/name. A claim
// keeps its finalizer until its address is released, so a new claim of
// the same name never meets the old one's allocation.
func ownerOf(namespace, name string) string { return claimOwnerPrefix + namespace + "/" + name }

// claimOwnerPrefix starts the allocator owner of every claim.
const claimOwnerPrefix = "ipaddressclaim/"

// IsClaimOwner reports whether an allocator owner (ipam.OwnerRef.Owner)
// is an IPAddressClaim's.
func IsClaimOwner(owner string) bool { return strings.HasPrefix(owner, claimOwnerPrefix) }

// nameOf is the claim's name in the allocator's messages; its space keeps
// it apart from Services ("namespace/name").
func nameOf(namespace, name string) string { return "IPAddressClaim " + namespace + "/" + name }
