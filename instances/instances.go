// Package instances implements cloudprovider.InstancesV2 for bare-metal
// nodes. With kubelets started with --cloud-provider=external, every new Node
// carries the node.cloudprovider.kubernetes.io/uninitialized taint until a
// cloud provider initializes it; on bare metal there is no cloud to ask, so
// the metadata comes from what the kubelet and the administrator already put
// on the Node: the provided node IP annotation, the hostname and well-known
// labels.
package instances

import (
	"context"
	"fmt"
	"net"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/record"
	cloudprovider "k8s.io/cloud-provider"
	cloudproviderapi "k8s.io/cloud-provider/api"
	nodeutil "k8s.io/component-helpers/node/util"
	"k8s.io/klog/v2"
)

const (
	// ProviderIDPrefix starts every provider ID IronLB sets.
	ProviderIDPrefix = "ironlb://"

	// AnnotationGone marks a Node whose machine has been decommissioned. It
	// is the only way InstanceExists answers false; see InstanceExists.
	AnnotationGone = "ironlb.dev/instance-gone"

	// ReasonInvalidNodeIP is the reason of the Warning Event on a Node whose
	// provided node IP cannot be used.
	ReasonInvalidNodeIP = "InvalidNodeIP"
)

// Defaults are metadata for nodes that lack the matching well-known label.
type Defaults struct {
	InstanceType string
	Zone         string
	Region       string
}

// Instances initializes bare-metal nodes.
type Instances struct {
	recorder record.EventRecorder
	defaults Defaults
}

var _ cloudprovider.InstancesV2 = (*Instances)(nil)

// New returns Instances that report problems as Events through recorder.
func New(recorder record.EventRecorder, defaults Defaults) *Instances {
	return &Instances{recorder: recorder, defaults: defaults}
}

// InstanceExists reports whether the machine behind node still exists.
//
// Policy: on bare metal nothing can prove that a machine is gone, and a false
// answer makes the cloud-node-lifecycle controller delete the Node object as
// soon as it is NotReady, which would also drop its pods' bindings and
// labels. A powered-off or partitioned server is not a deleted one, so the
// answer is true unless an administrator (or an inventory tool) has annotated
// the Node with ironlb.dev/instance-gone=true: only then is the Node removed,
// and only once it is NotReady.
func (i *Instances) InstanceExists(ctx context.Context, node *v1.Node) (bool, error) {
	return node.Annotations[AnnotationGone] != "true", nil
}

// InstanceShutdown reports whether the node is shut down. IronLB has no
// out-of-band view of machine power yet, so the answer is always false.
func (i *Instances) InstanceShutdown(ctx context.Context, node *v1.Node) (bool, error) {
	return false, nil
}

// InstanceMetadata returns the provider ID, addresses, instance type and
// topology of node. An existing provider ID (one the kubelet set with
// --provider-id) is kept. A provided node IP that cannot be used is an error:
// the node keeps its uninitialized taint and gets a Warning Event.
func (i *Instances) InstanceMetadata(ctx context.Context, node *v1.Node) (*cloudprovider.InstanceMetadata, error) {
	addrs, err := Addresses(node)
	if err != nil {
		klog.FromContext(ctx).Error(err, "Cannot initialize node", "node", klog.KObj(node))
		if i.recorder != nil {
			i.recorder.Eventf(node, v1.EventTypeWarning, ReasonInvalidNodeIP,
				"IronLB cannot initialize this node: %v; fix the kubelet's --node-ip", err)
		}
		return nil, err
	}
	providerID := node.Spec.ProviderID
	if providerID == "" {
		providerID = ProviderIDPrefix + node.Name
	}
	return &cloudprovider.InstanceMetadata{
		ProviderID:    providerID,
		NodeAddresses: addrs,
		InstanceType:  labelOr(node, v1.LabelInstanceTypeStable, i.defaults.InstanceType),
		Zone:          labelOr(node, v1.LabelTopologyZone, i.defaults.Zone),
		Region:        labelOr(node, v1.LabelTopologyRegion, i.defaults.Region),
	}, nil
}

// Addresses returns node's addresses: one InternalIP per address in the
// kubelet's alpha.kubernetes.io/provided-node-ip annotation (one, or a
// dual-stack pair), or the InternalIPs already in its status when there is no
// annotation; its ExternalIPs; and its hostname.
func Addresses(node *v1.Node) ([]v1.NodeAddress, error) {
	var addrs []v1.NodeAddress
	if provided, ok := node.Annotations[cloudproviderapi.AnnotationAlphaProvidedIPAddr]; ok {
		ips, err := nodeutil.ParseNodeIPAnnotation(provided)
		if err != nil {
			return nil, fmt.Errorf("annotation %s=%q: %w", cloudproviderapi.AnnotationAlphaProvidedIPAddr, provided, err)
		}
		for _, ip := range ips {
			if err := usable(ip); err != nil {
				return nil, fmt.Errorf("annotation %s=%q: %w", cloudproviderapi.AnnotationAlphaProvidedIPAddr, provided, err)
			}
			addrs = append(addrs, v1.NodeAddress{Type: v1.NodeInternalIP, Address: ip.String()})
		}
	} else {
		addrs = append(addrs, ofType(node, v1.NodeInternalIP)...)
	}
	addrs = append(addrs, ofType(node, v1.NodeExternalIP)...)
	hostnames := ofType(node, v1.NodeHostName)
	if len(hostnames) == 0 {
		name := node.Labels[v1.LabelHostname]
		if name == "" {
			name = node.Name
		}
		hostnames = []v1.NodeAddress{{Type: v1.NodeHostName, Address: name}}
	}
	return append(addrs, hostnames...), nil
}

// usable rejects addresses that parse but cannot identify a node.
func usable(ip net.IP) error {
	switch {
	case ip.IsUnspecified():
		return fmt.Errorf("%s is the unspecified address", ip)
	case ip.IsLoopback():
		return fmt.Errorf("%s is a loopback address", ip)
	case ip.IsMulticast():
		return fmt.Errorf("%s is a multicast address", ip)
	}
	return nil
}

func ofType(node *v1.Node, typ v1.NodeAddressType) []v1.NodeAddress {
	var out []v1.NodeAddress
	for _, a := range node.Status.Addresses {
		if a.Type == typ && strings.TrimSpace(a.Address) != "" {
			out = append(out, a)
		}
	}
	return out
}

func labelOr(node *v1.Node, key, fallback string) string {
	if v := node.Labels[key]; v != "" {
		return v
	}
	return fallback
}
