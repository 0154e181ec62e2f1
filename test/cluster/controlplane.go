package cluster

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/ironlb/ironlb/cpvip"
	"github.com/ironlb/ironlb/test/cluster/machine"
)

// controlPlaneManifestPath is where the control-plane VIP's static pod
// lies on a control-plane node; the kubelet runs what is in the folder.
const controlPlaneManifestPath = cpvip.ManifestPath

// Endpoint is the control-plane endpoint's address (port 6443): the
// control-plane VIP when the cluster has one, else node-1's address.
func (c *Cluster) Endpoint() netip.Addr {
	if c.opts.VIP || c.opts.ControlPlanes > 1 {
		return ControlPlaneVIP
	}
	return NodeIP(1)
}

// ControlPlaneNodes are the machines that run the control plane: node-1
// to node-ControlPlanes.
func (c *Cluster) ControlPlaneNodes() []*machine.Machine {
	n := max(c.opts.ControlPlanes, 1)
	return c.Nodes[:min(n, len(c.Nodes))]
}

// phaseControlPlaneVIP prepares every control-plane node for the
// control-plane VIP before kubeadm runs there, as IronLB's docs (docs/control-plane-vip.md) tell a
// user: the speaker image into the node's containerd, and the static pod
// that kubectl ironlb control-plane manifest prints into
// /etc/kubernetes/manifests. The kubelet kubeadm starts runs it beside
// kubeadm's own static pods; it takes the VIP once the local API server
// is ready (sa.key, which keys its election messages, is written by
// kubeadm init's certs phase, and by kubeadm join --control-plane from
// the kubeadm-certs Secret, before the kubelet starts).
func (c *Cluster) phaseControlPlaneVIP(ctx context.Context) error {
	if !c.opts.VIP {
		return nil
	}
	manifest, err := controlPlaneManifest(ControlPlaneVIP, c.net.nodes[0].Interface, c.opts.RepoRoot)
	if err != nil {
		return err
	}
	if err := LoadImage(ctx, filepath.Join(c.opts.IronLBImages, "ironlb-speaker"), c.ControlPlaneNodes()...); err != nil {
		return err
	}
	for _, m := range c.ControlPlaneNodes() {
		path := m.HostPath(controlPlaneManifestPath)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(path, manifest, 0o600); err != nil {
			return fmt.Errorf("the control-plane VIP's static pod on %s: %w", m.Spec.Name, err)
		}
	}
	return nil
}

// controlPlaneManifest is the control-plane speaker's static pod, made by
// the product's own generator: the bytes kubectl ironlb control-plane
// manifest --vip <vip> --interface <ifname> prints. Its default image must
// be the speaker image deploy/ runs, which the rig imports.
func controlPlaneManifest(vip netip.Addr, ifname, repoRoot string) ([]byte, error) {
	version, err := AppVersion(repoRoot)
	if err != nil {
		return nil, err
	}
	if want := "ghcr.io/ironlb/ironlb-speaker:" + version; cpvip.DefaultImage() != want {
		return nil, fmt.Errorf("the control-plane static pod's image %s is not %s, which the rig imports", cpvip.DefaultImage(), want)
	}
	return cpvip.StaticPod(cpvip.ManifestOptions{VIP: vip.String(), Interface: ifname})
}
