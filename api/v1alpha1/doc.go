// Package v1alpha1 holds IronLB's API, group ironlb.dev, version v1alpha1.
//
// +kubebuilder:object:generate=true
// +groupName=ironlb.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API's group and version.
var GroupVersion = schema.GroupVersion{Group: "ironlb.dev", Version: "v1alpha1"}

// IPPoolResource is the IPPool resource, for dynamic clients.
var IPPoolResource = GroupVersion.WithResource("ippools")

// BGPPeerResource is the BGPPeer resource, for dynamic clients.
var BGPPeerResource = GroupVersion.WithResource("bgppeers")

// AddToScheme adds the API's types to a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &IPPool{}, &IPPoolList{}, &BGPPeer{}, &BGPPeerList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
