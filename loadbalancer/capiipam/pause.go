package capiipam

import (
	"fmt"

	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"
)

// paused says why the claim must be left alone, "" when it need not:
// the claim is annotated paused, or its Cluster is paused (spec.paused or
// the annotation) or not found. As the in-cluster provider does, a claim
// being deleted whose Cluster is not found is not paused: during a
// Cluster's deletion the Cluster often goes before its claims. Without
// the Cluster CRD, a claim naming a Cluster has none to be found.
func (c *Controller) paused(claim *ipamv1.IPAddressClaim) (string, error) {
	if _, ok := claim.Annotations[PausedAnnotation]; ok {
		return "the claim is annotated " + PausedAnnotation, nil
	}
	name := clusterName(claim)
	if name == "" {
		return "", nil
	}
	var cluster *clusterv1.Cluster
	if c.clusters != nil {
		var err error
		// Only the claim's own namespace: a tenant's claim never reads
		// another namespace's Cluster.
		if cluster, _, err = get[clusterv1.Cluster](c.clusters, claim.Namespace+"/"+name); err != nil {
			return "", err
		}
	}
	switch {
	case cluster == nil && claim.DeletionTimestamp != nil:
		return "", nil
	case cluster == nil && c.clusters == nil:
		return fmt.Sprintf("it names Cluster %s, and the Cluster CRD (cluster.x-k8s.io/v1beta2) is not installed", name), nil
	case cluster == nil:
		return fmt.Sprintf("its Cluster %s is not found", name), nil
	case cluster.Spec.Paused != nil && *cluster.Spec.Paused:
		return fmt.Sprintf("its Cluster %s is paused (spec.paused)", name), nil
	}
	if _, ok := cluster.Annotations[PausedAnnotation]; ok {
		return fmt.Sprintf("its Cluster %s is annotated %s", name, PausedAnnotation), nil
	}
	return "", nil
}
