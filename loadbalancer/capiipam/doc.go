// Package capiipam makes IronLB a Cluster API IPAM provider: it answers
// the IPAddressClaims (ipam.cluster.x-k8s.io/v1beta2) whose spec.poolRef
// names an IronLB IPPool (ironlb.dev, kind IPPool) that opts in with
// spec.clusterAPI, from IronLB's own allocator, so that machines and
// Services never hold one address at once.
//
// It follows Cluster API's IPAM provider contract
// (docs/book/src/developer/providers/contracts/ipam.md of
// sigs.k8s.io/cluster-api v1.14.2) and the reference in-cluster provider:
//   - the claim gets the finalizer ipam.cluster.x-k8s.io/ReleaseAddress,
//     its IPAddress (same name and namespace) the finalizer
//     ipam.cluster.x-k8s.io/ProtectAddress, an owner reference to the
//     claim (controller, blockOwnerDeletion) and one to the IPPool
//     (not controller, blockOwnerDeletion);
//   - the claim's status.addressRef names the IPAddress, its Ready
//     condition says whether it has one and, if not, why (Reason);
//   - a claim annotated cluster.x-k8s.io/paused, or whose Cluster
//     (spec.clusterName, else the cluster.x-k8s.io/cluster-name label) is
//     paused or not found, is left alone; a claim being deleted whose
//     Cluster is not found is still released (the Cluster is often gone
//     first when a cluster is deleted);
//   - a deleted claim's address returns to the allocator only once its
//     IPAddress is gone, then the claim's finalizer is removed.
//
// Unlike the in-cluster provider it writes a Ready=False condition and a
// Warning Event when a claim cannot be answered (pool missing, not opted
// in, refusing the namespace, exhausted, address conflict), and retries
// when pools change and every RetryInterval.
//
// Restore: Restore, run by the Balancer after the Services' allocations
// and before any call is answered, rebuilds every claim's allocation from
// the IPAddress objects; a Service that holds the same address keeps it
// and the claim gets Ready=False AddressConflict (nothing is deleted).
package capiipam
