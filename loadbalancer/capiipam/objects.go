package capiipam

import (
	"fmt"
	"net/netip"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
	clusterv1 "sigs.k8s.io/cluster-api/api/core/v1beta2"
	ipamv1 "sigs.k8s.io/cluster-api/api/ipam/v1beta2"
)

// decode converts an informer's object into T.
func decode[T any](obj any) (*T, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object %T", obj)
	}
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &out); err != nil {
		return nil, fmt.Errorf("decoding %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return &out, nil
}

// get returns the object of informer under key, decoded; nil when absent.
func get[T any](informer cache.SharedIndexInformer, key string) (*T, *unstructured.Unstructured, error) {
	obj, exists, err := informer.GetStore().GetByKey(key)
	if err != nil || !exists {
		return nil, nil, err
	}
	t, err := decode[T](obj)
	if err != nil {
		return nil, nil, err
	}
	return t, obj.(*unstructured.Unstructured), nil
}

// indexByPool indexes claims by the IronLB IPPool they name.
func indexByPool(obj any) ([]string, error) {
	claim, err := decode[ipamv1.IPAddressClaim](obj)
	if err != nil || !ours(claim.Spec.PoolRef) {
		return nil, nil
	}
	return []string{claim.Spec.PoolRef.Name}, nil
}

// indexByCluster indexes claims by their Cluster, namespace/name.
func indexByCluster(obj any) ([]string, error) {
	claim, err := decode[ipamv1.IPAddressClaim](obj)
	if err != nil || !ours(claim.Spec.PoolRef) {
		return nil, nil
	}
	if name := clusterName(claim); name != "" {
		return []string{claim.Namespace + "/" + name}, nil
	}
	return nil, nil
}

// clusterName is the claim's Cluster: spec.clusterName, else the
// (deprecated) cluster-name label.
func clusterName(claim *ipamv1.IPAddressClaim) string {
	if claim.Spec.ClusterName != "" {
		return claim.Spec.ClusterName
	}
	return claim.Labels[clusterv1.ClusterNameLabel]
}

// parseAddress parses an IPAddress's spec.address strictly: canonical
// form, no zone, no IPv4-mapped IPv6 address.
func parseAddress(s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return netip.Addr{}, fmt.Errorf("spec.address %q: %w", s, err)
	case a.Zone() != "" || a.Is4In6() || a.String() != s:
		return netip.Addr{}, fmt.Errorf("spec.address %q is not a canonical IP address without zone", s)
	}
	return a, nil
}

// belongs reports whether addr is the IPAddress IronLB made for claim:
// it names the claim and an IronLB IPPool, and the claim controls it.
func belongs(addr *ipamv1.IPAddress, claim *ipamv1.IPAddressClaim) bool {
	if addr.Spec.ClaimRef.Name != claim.Name || !ours(addr.Spec.PoolRef) {
		return false
	}
	for _, r := range addr.OwnerReferences {
		if r.Controller != nil && *r.Controller {
			return r.UID == claim.UID && r.Kind == claimGVK.Kind
		}
	}
	return false
}
