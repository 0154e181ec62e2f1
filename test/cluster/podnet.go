package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// phasePodNetwork is the pod network, as a routed bare-metal network
// would have it: each node bridges its pods (Debian's CNI bridge plugin,
// host-local addresses from the Node's spec.podCIDR, which
// kube-controller-manager allocated), and every other node and the router
// route that range to the node.
func (c *Cluster) phasePodNetwork(ctx context.Context) error {
	cs, err := c.Clientset()
	if err != nil {
		return err
	}
	for i, m := range c.Nodes {
		cidr, err := waitPodCIDR(ctx, cs, m.Spec.Name)
		if err != nil {
			return err
		}
		conf, err := cniConfig(cidr)
		if err != nil {
			return err
		}
		dir := m.HostPath("/etc/cni/net.d")
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, "10-ironlb-rig.conflist"), conf, 0o644); err != nil {
			return err
		}
		for j, h := range c.net.nodes {
			if j != i {
				if err := h.AddRoute(cidr, NodeIP(i+1)); err != nil {
					return err
				}
			}
		}
		if err := c.net.router.Host.AddRoute(cidr, NodeIP(i+1)); err != nil {
			return err
		}
	}
	return nil
}

// waitPodCIDR waits until node has a pod range.
func waitPodCIDR(ctx context.Context, cs kubernetes.Interface, node string) (netip.Prefix, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if err == nil && n.Spec.PodCIDR != "" {
			return netip.ParsePrefix(n.Spec.PodCIDR)
		}
		select {
		case <-ctx.Done():
			return netip.Prefix{}, fmt.Errorf("node %s has no pod range (spec.podCIDR): %v", node, err)
		case <-time.After(time.Second):
		}
	}
}

// cniConfig is a node's CNI configuration: a bridge cni0 that is its pods'
// gateway, with hairpin mode (a pod reaching itself through a Service),
// no masquerading (pod addresses are routed), and hostPort support.
func cniConfig(podCIDR netip.Prefix) ([]byte, error) {
	conf := map[string]any{
		"cniVersion": "1.0.0",
		"name":       "ironlb-rig",
		"plugins": []map[string]any{
			{
				"type":        "bridge",
				"bridge":      "cni0",
				"isGateway":   true,
				"ipMasq":      false,
				"hairpinMode": true,
				"ipam": map[string]any{
					"type":   "host-local",
					"ranges": [][]map[string]string{{{"subnet": podCIDR.String()}}},
					"routes": []map[string]string{{"dst": "0.0.0.0/0"}},
				},
			},
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}},
		},
	}
	return json.MarshalIndent(conf, "", "  ")
}
